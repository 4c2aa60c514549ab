"""Official .pth files read without PyTorch: files saved by real torch, read where torch is absent.

torch is needed only to write the files and to cross-check (`torch.load`); the reading runs in a
subprocess in which `import torch` fails.
"""

import os
import subprocess
import sys
import textwrap
import zipfile

import jax
import numpy as np
import pytest

from backtal_jax.model import official_weights
from backtal_jax.model import torch_pickle
from tests import reference

torch = pytest.importorskip('torch')

# (name, zip serialisation, layout of the saved object)
FILES = [
    ('official_legacy.pth', False, 'official'),  # the official code: PyTorch 1.5, legacy format
    ('official_zip.pth', True, 'official'),
    ('data_parallel_legacy.pth', False, 'data_parallel'),
    ('data_parallel_zip.pth', True, 'data_parallel'),
    ('bare_zip.pth', True, 'bare'),
]


def official_model_state_dict() -> dict:
  """A real nn.Module's state dict (OrderedDict with _metadata) holding the fixture's weights."""
  weights = reference.torch_state_dict(reference.load('model_thumos_small'))
  module = torch.nn.Module()
  for name, value in weights.items():
    owner = module
    *parents, leaf = name.split('.')
    for part in parents:
      if not hasattr(owner, part):
        owner.add_module(part, torch.nn.Module())
      owner = getattr(owner, part)
    owner.register_parameter(leaf, torch.nn.Parameter(torch.from_numpy(value)))
  return module.state_dict()


def save(path, zip_format: bool, layout: str) -> None:
  state_dict = official_model_state_dict()
  if layout == 'data_parallel':
    state_dict = type(state_dict)((f'module.{k}', v) for k, v in state_dict.items())
  saved = state_dict if layout == 'bare' else {'epoch': 37, 'state_dict': state_dict}
  torch.save(saved, path, _use_new_zipfile_serialization=zip_format)


READER = textwrap.dedent('''
    import sys
    sys.modules['torch'] = None  # `import torch` now raises ImportError
    from flax import traverse_util
    import numpy as np
    from backtal_jax import load_official_checkpoint
    from backtal_jax.model import torch_pickle
    try:
      import torch
      sys.exit('torch could be imported')
    except ImportError:
      pass
    for path in sys.argv[1:]:
      raw = torch_pickle.load(path)
      arrays = raw.get('state_dict', raw)
      np.savez(path + '.raw.npz', **arrays)
      params = load_official_checkpoint(path)
      flat = {'/'.join(k): v for k, v in traverse_util.flatten_dict(params).items()}
      np.savez(path + '.params.npz', **flat)
      print(path, type(arrays).__name__, raw.get('epoch'))
    ''')


@pytest.fixture(scope='module')
def read_without_torch(tmp_path_factory):
  """Every file of FILES, saved by torch, then read in one subprocess without torch."""
  folder = tmp_path_factory.mktemp('pth')
  paths = []
  for name, zip_format, layout in FILES:
    save(folder / name, zip_format, layout)
    paths.append(str(folder / name))
  result = subprocess.run([sys.executable, '-c', READER, *paths], capture_output=True, text=True,
                          check=False, timeout=120)
  assert result.returncode == 0, result.stderr
  return folder, result.stdout


@pytest.mark.parametrize('name,zip_format,layout', FILES)
def test_reads_what_torch_load_reads(read_without_torch, name, zip_format, layout):
  folder, stdout = read_without_torch
  path = folder / name
  assert zipfile.is_zipfile(path) == zip_format
  expected = torch.load(path, map_location='cpu', weights_only=True)
  expected_state_dict = expected if layout == 'bare' else expected['state_dict']
  assert f'{path} OrderedDict {None if layout == "bare" else 37}' in stdout
  with np.load(f'{path}.raw.npz') as raw:
    assert list(raw.files) == list(expected_state_dict)
    for key, tensor in expected_state_dict.items():
      np.testing.assert_array_equal(raw[key], tensor.numpy())
      assert raw[key].dtype == tensor.numpy().dtype
  reference_params = official_weights.params_from_torch(expected_state_dict)
  with np.load(f'{path}.params.npz') as params:
    flat = {tuple(k.split('/')): params[k] for k in params.files}
  expected_flat = {tuple(str(p.key) for p in path): leaf for path, leaf in
                   jax.tree_util.tree_flatten_with_path(reference_params)[0]}
  assert flat.keys() == expected_flat.keys()
  for key, value in expected_flat.items():
    np.testing.assert_array_equal(flat[key], value)


class RunsACommand:
  """Pickles as a call to os.system: loading it with a plain unpickler runs the command."""

  def __init__(self, command: str):
    self.command = command

  def __reduce__(self):
    return (os.system, (self.command,))


@pytest.mark.parametrize('zip_format', [True, False])
def test_a_non_tensor_global_is_refused(tmp_path, zip_format):
  marker = tmp_path / 'ran'
  path = tmp_path / 'trojan.pth'
  torch.save({'state_dict': official_model_state_dict(), 'hook': RunsACommand(f'touch {marker}')},
             path, _use_new_zipfile_serialization=zip_format)
  with pytest.raises(official_weights.CheckpointError) as error:
    official_weights.load_official_checkpoint(path)
  message = str(error.value)
  assert str(path) in message and f'{os.system.__module__}.system' in message
  assert not marker.exists()


def test_tensor_subclass_globals_are_refused(tmp_path):
  path = tmp_path / 'subclass.pth'
  tensor = torch.zeros(2)
  tensor.note = 'an attribute makes torch pickle the tensor through _rebuild_from_type_v2'
  torch.save({'x': tensor}, path)
  with pytest.raises(torch_pickle.TorchFileError, match='refused to load the global'):
    torch_pickle.load(path)


def test_views_and_dtypes_match_torch(tmp_path):
  base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
  tensors = {'transposed': base.t(), 'row': base[2], 'strided': base[:, ::2],
             'half': torch.linspace(-2, 2, 7).half(),
             'bfloat16': torch.linspace(-2, 2, 7).bfloat16(),
             'int': torch.arange(5, dtype=torch.int64), 'bool': torch.tensor([True, False]),
             'scalar': torch.tensor(2.5), 'empty': torch.zeros(0, 3)}
  for zip_format in (True, False):
    path = tmp_path / f'views_{zip_format}.pth'
    torch.save(tensors, path, _use_new_zipfile_serialization=zip_format)
    loaded = torch_pickle.load(path)
    for key, tensor in tensors.items():
      expected = tensor.float().numpy() if key == 'bfloat16' else tensor.numpy()
      actual = loaded[key].astype(np.float32) if key == 'bfloat16' else loaded[key]
      assert actual.shape == expected.shape, key
      np.testing.assert_array_equal(actual, expected, err_msg=key)


@pytest.mark.parametrize('content', [b'not a checkpoint', b'PK\x03\x04 truncated zip'])
def test_unreadable_files_are_one_error_naming_the_file(tmp_path, content):
  path = tmp_path / 'broken.pth'
  path.write_bytes(content)
  with pytest.raises(official_weights.CheckpointError, match='broken.pth'):
    official_weights.load_official_checkpoint(path)


def test_truncated_file_is_refused(tmp_path):
  path = tmp_path / 'cut.pth'
  save(path, False, 'official')
  path.write_bytes(path.read_bytes()[:-100])
  with pytest.raises(official_weights.CheckpointError, match='cut.pth: .*ends early'):
    official_weights.load_official_checkpoint(path)
