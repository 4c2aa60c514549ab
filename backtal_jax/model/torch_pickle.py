"""PyTorch .pth files read without PyTorch: a pickle reader that rebuilds tensors and nothing else.

`torch.save` writes a pickle whose tensors point at raw storages, kept either in a zip archive
(PyTorch >= 1.6: `<name>/data.pkl` and one `<name>/data/<key>` entry per storage) or, in the
legacy format (PyTorch < 1.6, which the official BackTAL checkpoints were written with, and
`_use_new_zipfile_serialization=False`), as a few pickles followed by every storage's bytes. A plain
unpickler imports and calls whatever global a file names, so a downloaded checkpoint could run
code; this reader resolves only the globals a state dict needs and refuses every other one. Tensors
come back as numpy arrays.
"""

import collections
import dataclasses
import io
import pickle
import struct
from typing import Any
from typing import BinaryIO
import zipfile

import ml_dtypes
import numpy as np

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001

# torch storage class -> element dtype
_STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_, 'UntypedStorage': np.uint8,
}


class TorchFileError(ValueError):
  """A file that is not a PyTorch checkpoint of tensors, or that asks for code to be run."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
  dtype: np.dtype


@dataclasses.dataclass
class _Storage:
  """One storage: its element type and, once read, its elements."""
  dtype: np.dtype
  numel: int
  elements: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class _TensorRef:
  """A tensor as a view of a storage; turned into an array once every storage has been read."""
  storage: _Storage
  offset: int
  shape: tuple[int, ...]
  strides: tuple[int, ...]

  def to_array(self) -> np.ndarray:
    elements = self.storage.elements
    if not self.shape:
      return elements[self.offset].copy()
    last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.strides))
    if min(self.shape) > 0 and (self.offset < 0 or last >= elements.size):
      raise TorchFileError(f'a tensor of shape {self.shape} reaches past its storage of '
                           f'{elements.size} elements')
    view = np.lib.stride_tricks.as_strided(
        elements[self.offset:], shape=self.shape,
        strides=[s * elements.itemsize for s in self.strides], writeable=False)
    return np.array(view)


def _rebuild_tensor(storage, offset, shape, strides, *unused):
  """torch._utils._rebuild_tensor(_v2): requires_grad, hooks and metadata do not matter here."""
  del unused
  return _TensorRef(storage, int(offset), tuple(shape), tuple(strides))


def _rebuild_parameter(data, *unused):
  del unused
  return data


_ALLOWED_GLOBALS = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    **{('torch', name): _StorageType(np.dtype(dtype)) for name, dtype in _STORAGE_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
  """Resolves the allowed globals only; storages through `storage_for(key, type, numel)`."""

  def __init__(self, file: BinaryIO, storage_for):
    super().__init__(file, encoding='latin1')
    self._storage_for = storage_for

  def find_class(self, module: str, name: str):
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise TorchFileError(
          f'refused to load the global {module}.{name}: only tensors, their storages and '
          'OrderedDict may appear in a state dict (a file naming other globals can run code '
          'when loaded)') from None

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid or pid[0] not in ('storage', b'storage'):
      raise TorchFileError(f'unsupported persistent id {pid!r:.80}')
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(storage_type, _StorageType):
      raise TorchFileError(f'unsupported storage type {storage_type!r:.80}')
    storage = self._storage_for(str(key), storage_type.dtype, int(numel))
    view = pid[5] if len(pid) > 5 else None
    if view is not None:  # legacy view of a storage: (view key, offset, size)
      raise TorchFileError('storage views (PyTorch < 0.4 files) are not supported')
    return storage


def _materialise(value: Any) -> Any:
  if isinstance(value, _TensorRef):
    return value.to_array()
  if isinstance(value, dict):
    rebuilt = type(value)((k, _materialise(v)) for k, v in value.items())
    if hasattr(value, '__dict__'):
      rebuilt.__dict__.update(value.__dict__)
    return rebuilt
  if isinstance(value, (list, tuple)):
    return type(value)(_materialise(v) for v in value)
  return value


def _load_zip(file: BinaryIO) -> Any:
  with zipfile.ZipFile(file) as archive:
    pickles = [name for name in archive.namelist() if name.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise TorchFileError('a zip file, but not a PyTorch checkpoint (no <name>/data.pkl)')
    prefix = pickles[0][:-len('data.pkl')]
    names = set(archive.namelist())
    byteorder = 'little'
    if prefix + 'byteorder' in names:
      byteorder = archive.read(prefix + 'byteorder').decode().strip()
    storages: dict[str, _Storage] = {}

    def storage_for(key, dtype, numel):
      if key not in storages:
        entry = f'{prefix}data/{key}'
        if entry not in names:
          raise TorchFileError(f'storage {entry} is missing from the archive')
        elements = np.frombuffer(archive.read(entry), dtype.newbyteorder(
            '<' if byteorder == 'little' else '>'))
        if elements.size < numel:
          raise TorchFileError(f'storage {entry} holds {elements.size} elements, expected {numel}')
        storages[key] = _Storage(dtype, numel, elements.astype(dtype, copy=False))
      return storages[key]

    with archive.open(pickles[0]) as data_pkl:
      return _materialise(_Unpickler(io.BytesIO(data_pkl.read()), storage_for).load())


def _no_storages(*unused):
  del unused
  raise TorchFileError('a storage outside the data pickle')


def _load_legacy(file: BinaryIO) -> Any:
  header = [_Unpickler(file, _no_storages).load() for _ in range(3)]
  magic, protocol, sys_info = header
  if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL or not isinstance(sys_info, dict):
    raise TorchFileError('not a PyTorch checkpoint (neither a zip archive nor the legacy format)')
  order = '<' if sys_info.get('little_endian', True) else '>'
  storages: dict[str, _Storage] = {}

  def storage_for(key, dtype, numel):
    return storages.setdefault(key, _Storage(dtype, numel))

  result = _Unpickler(file, storage_for).load()
  for key in _Unpickler(file, _no_storages).load():
    storage = storages.get(str(key))
    if storage is None:
      raise TorchFileError(f'storage {key} is listed but no tensor uses it')
    (numel,) = struct.unpack(order + 'q', _read_exactly(file, 8))
    data = _read_exactly(file, numel * storage.dtype.itemsize)
    storage.elements = np.frombuffer(data, storage.dtype.newbyteorder(order)).astype(
        storage.dtype, copy=False)
  unread = [key for key, storage in storages.items() if storage.elements is None]
  if unread:
    raise TorchFileError(f'the data of storages {unread} is missing')
  return _materialise(result)


def _read_exactly(file: BinaryIO, size: int) -> bytes:
  data = file.read(size)
  if len(data) != size:
    raise TorchFileError(f'the file ends early: {size} bytes expected, {len(data)} left')
  return data


def load(path) -> Any:
  """What `torch.load(path, weights_only=True)` returns, with numpy arrays for tensors.

  Raises:
    TorchFileError if the file is not a PyTorch checkpoint, is truncated, or names any global
    besides tensors, storages and OrderedDict.
  """
  with open(path, 'rb') as file:
    try:
      if zipfile.is_zipfile(file):
        file.seek(0)
        return _load_zip(file)
      file.seek(0)
      return _load_legacy(file)
    except TorchFileError:
      raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError,
            IndexError, AttributeError) as e:
      raise TorchFileError(f'not a readable PyTorch checkpoint ({type(e).__name__}: {e})') from e
