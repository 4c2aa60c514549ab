"""The input pipeline: shuffled, padded, per-process host batches streamed from disk.

Choices, each for a reason:
- The order of an epoch is a pure function of (seed, epoch), and a `DataPosition` (epoch, step) is
  all a checkpoint needs to continue mid-epoch bit-identically.
- Every batch has the same shape. The last batch of an epoch is padded; `mask` is 1.0 on real rows
  and 0.0 on padding, so losses averaged over real rows equal the official averages (the official
  loader keeps the short last batch, drop_last=False).
- Process i of P reads rows [i * B / P, (i + 1) * B / P) of each global batch and nothing else;
  `sharding.to_global_batch` turns them into global arrays.
- Videos are read when their batch is built (a small prefetch thread keeps a few batches ahead),
  so memory is bounded by the prefetch depth, not by the dataset (HACS: 62 GB of features).
"""

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
import concurrent.futures
import dataclasses
import math
import queue
import threading
from typing import NamedTuple
from typing import Protocol

import ml_collections
import numpy as np

from backtal_jax.core import errors
from backtal_jax.core import sharding
from backtal_jax.core.labels import IGNORE_LABEL
from backtal_jax.data import features


class Source(Protocol):
  """Random access to one split's examples, in the official (sorted file name) order."""

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> dict:
    """An example dict as `features.to_example` builds it."""
    ...


class NpzSource:
  """A split read straight from the official .npz files."""

  def __init__(self, features_root, split: str, *, num_classes: int, feature_dim: int,
               num_segments: int, require_clicks: bool = False, require_metadata: bool = False):
    self.paths = features.list_split(features_root, split)
    self._read_args = dict(
        num_classes=num_classes, feature_dim=feature_dim, num_segments=num_segments,
        require_clicks=require_clicks, require_metadata=require_metadata)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict:
    return features.to_example(features.read_video(self.paths[index], **self._read_args))


class TfdsSource:
  """A split of the TFDS dataset built by `backtal_jax.data.tfds_builder`, read without TF."""

  def __init__(self, data_source: Sequence[dict]):
    self._data_source = data_source

  def __len__(self) -> int:
    return len(self._data_source)

  def __getitem__(self, index: int) -> dict:
    record = self._data_source[index]
    vid_name = record['vid_name']
    return {
        'vid_name': vid_name.decode() if isinstance(vid_name, bytes) else str(vid_name),
        'features': np.asarray(record['features'], np.float32),
        'video_labels': np.asarray(record['video_labels'], np.float32),
        'click_labels': np.asarray(record['click_labels'], np.int32),
        'frame_num': np.int64(record['frame_num']),
        'fps': np.float64(record['fps']),
        'duration': np.float64(record['duration']),
    }


def open_source(data_config: ml_collections.ConfigDict, split: str, *, num_classes: int,
                train: bool) -> Source:
  """The split named by `config.data`, from the npz files or the TFDS dataset."""
  if data_config.source == 'npz':
    if not data_config.features_root:
      raise errors.UserError(
          f'config.data.features_root is not set: point it at the directory that holds '
          f'{data_config.train_split}/*.npz and {data_config.test_split}/*.npz, the official I3D '
          'features published with BackTAL (github.com/VividLe/BackTAL, "Data Preparation"), e.g. '
          '--config.data.features_root=/data/THUMOS14; or run a :synthetic config variant.')
    return NpzSource(
        data_config.features_root, split, num_classes=num_classes,
        feature_dim=data_config.feature_dim, num_segments=data_config.num_segments,
        require_clicks=train, require_metadata=not train)
  if data_config.source == 'tfds':
    return TfdsSource(open_tfds(data_config.tfds_name, split, data_config.tfds_data_dir))
  raise errors.UserError(f"config.data.source must be 'npz' or 'tfds', got {data_config.source!r}")


def open_tfds(name: str, split: str, data_dir: str | None) -> Sequence[dict]:
  """The built TFDS split. tensorflow-datasets is an extra (it brings pyarrow, array_record and
  more), so it is imported here, by the runs that read it, and not by every run."""
  try:
    from backtal_jax.data import tfds_builder  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.UserError(
        f"config.data.source='tfds' reads the TFDS copy through tensorflow-datasets, which is not "
        f"installed ({e}): pip install 'backtal_jax[tfds]', or set config.data.source='npz'"
    ) from None
  return tfds_builder.data_source(name, split, data_dir=data_dir)


@dataclasses.dataclass(frozen=True)
class BatchSpec:
  """The static per-example shapes of a batch."""

  num_segments: int  # T
  feature_dim: int  # F
  num_classes: int  # C


@dataclasses.dataclass(frozen=True)
class DataPosition:
  """Where training stands in the data: `step` batches of `epoch` are consumed."""

  epoch: int = 0
  step: int = 0

  def to_dict(self) -> dict[str, int]:
    return {'epoch': self.epoch, 'step': self.step}

  @classmethod
  def from_dict(cls, values) -> 'DataPosition':
    return cls(epoch=int(values['epoch']), step=int(values['step']))


class VideoMetadata(NamedTuple):
  """What evaluation needs on the host to turn snippet scores into seconds."""

  vid_name: str
  frame_num: int
  fps: float
  duration: float


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The shuffled order of one epoch: depends on (seed, epoch) only, so a resumed run repeats it."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Batches per epoch, the last one partial: no example is dropped."""
  return math.ceil(num_examples / global_batch_size)


def global_batch_indices(order: np.ndarray, step: int, global_batch_size: int) -> np.ndarray:
  """Dataset indices of one global batch, -1 where the last batch is padded."""
  indices = order[step * global_batch_size:(step + 1) * global_batch_size]
  return np.pad(indices, (0, global_batch_size - len(indices)), constant_values=-1)


def _check_batch_split(global_batch_size: int, process_count: int) -> None:
  if not sharding.divides_over(global_batch_size, process_count):
    raise ValueError(f'The global batch size ({global_batch_size}) must be a positive multiple of '
                     f'the number of processes ({process_count}).')


def process_indices(indices_B: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
  """This process's contiguous share of a global batch's indices."""
  _check_batch_split(len(indices_B), process_count)
  per_process = len(indices_B) // process_count
  return indices_B[process_index * per_process:(process_index + 1) * per_process]


def _checked(example: dict, index: int, spec: BatchSpec) -> dict:
  expected = {
      'features': (spec.num_segments, spec.feature_dim),
      'video_labels': (spec.num_classes,),
      'click_labels': (spec.num_segments,),
  }
  for key, shape in expected.items():
    if example[key].shape != shape:
      raise ValueError(f'Example {index} ({example["vid_name"]}): {key} has shape '
                       f'{example[key].shape}, expected {shape} (check config.data).')
  return example


def read_batch(source: Source, indices: np.ndarray, spec: BatchSpec,
               pool: concurrent.futures.Executor | None = None
               ) -> tuple[dict[str, np.ndarray], list[VideoMetadata | None]]:
  """Reads the videos at `indices` (-1: padding) into a batch and its host-side metadata; with a
  `pool`, the videos are read by its threads (file reads and decompression release the GIL)."""
  size = len(indices)
  batch = {
      'features': np.zeros((size, spec.num_segments, spec.feature_dim), np.float32),
      'video_labels': np.zeros((size, spec.num_classes), np.float32),
      'click_labels': np.full((size, spec.num_segments), IGNORE_LABEL, np.int32),
      'mask': (indices >= 0).astype(np.float32),
      'index': indices.astype(np.int32),
  }
  metadata = []

  def read(index):
    return source[int(index)] if index >= 0 else None

  for row, (index, example) in enumerate(zip(indices, (pool or _SERIAL).map(read, indices))):
    if example is None:
      metadata.append(None)
      continue
    example = _checked(example, int(index), spec)
    batch['features'][row] = example['features']
    batch['video_labels'][row] = example['video_labels']
    batch['click_labels'][row] = example['click_labels']
    metadata.append(VideoMetadata(example['vid_name'], int(example['frame_num']),
                                  float(example['fps']), float(example['duration'])))
  return batch, metadata


class _Serial:
  """`Executor.map` in the calling thread."""

  @staticmethod
  def map(fn, items):
    return map(fn, items)


_SERIAL = _Serial()


def _prefetched(items: Iterator, depth: int) -> Iterator:
  """Runs `items` in a background thread, at most `depth` ahead; errors surface in the caller."""
  if depth <= 0:
    yield from items
    return
  buffer = queue.Queue(maxsize=depth)
  stop = threading.Event()
  done = object()

  def put(entry) -> bool:
    """Waits for room in the buffer unless the consumer has gone; False if it has."""
    while not stop.is_set():
      try:
        buffer.put(entry, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for item in items:
        if not put((item, None)):
          return
      put((done, None))
    except Exception as e:  # pylint: disable=broad-except  (re-raised in the consumer)
      put((done, e))

  thread = threading.Thread(target=produce, daemon=True)
  thread.start()
  try:
    while True:
      item, error = buffer.get()
      if error is not None:
        raise error
      if item is done:
        return
      yield item
  finally:
    stop.set()
    thread.join()


class TrainLoader:
  """Endless training batches, epoch after epoch, from a `DataPosition` on.

  Yields this process's rows of each global batch as a dict of numpy arrays: `features` [B, T, F]
  float32, `video_labels` [B, C] float32, `click_labels` [B, T] int32, `mask` [B] float32,
  `index` [B] int32 (-1 on padding), where B = global_batch_size / process_count. `position` is
  the position of the next batch: save it with the state and pass it back as `start` to resume.
  `readers` threads read the videos of a batch; `read` replaces the reading altogether (it gets
  the batch's indices, e.g. to hand them to a step that gathers the batch on the devices).
  """

  def __init__(self, source: Source, *, global_batch_size: int, spec: BatchSpec, seed: int,
               start: DataPosition = DataPosition(), shuffle: bool = True, prefetch: int = 2,
               process_index: int = 0, process_count: int = 1, readers: int = 1,
               read: Callable[[np.ndarray], dict] | None = None):
    if len(source) == 0:
      raise ValueError('The training source is empty.')
    _check_batch_split(global_batch_size, process_count)
    self.source = source
    self.global_batch_size = global_batch_size
    self.spec = spec
    self.seed = seed
    self.shuffle = shuffle
    self.process_index = process_index
    self.process_count = process_count
    self.steps_per_epoch = steps_per_epoch(len(source), global_batch_size)
    if not 0 <= start.step < self.steps_per_epoch:
      raise ValueError(f'{start} is outside an epoch of {self.steps_per_epoch} steps.')
    self.position = start
    self._pool = concurrent.futures.ThreadPoolExecutor(readers) if readers > 1 else None
    self._read = read or (lambda indices: read_batch(source, indices, spec, self._pool)[0])
    self._batches = _prefetched(self._produce(start), prefetch)

  def order(self, epoch: int) -> np.ndarray:
    """Dataset indices of `epoch` in the order they are served."""
    if not self.shuffle:
      return np.arange(len(self.source))
    return epoch_order(len(self.source), self.seed, epoch)

  def _produce(self, start: DataPosition) -> Iterator[tuple[DataPosition, dict]]:
    epoch, step = start.epoch, start.step
    while True:
      order = self.order(epoch)
      for step in range(step, self.steps_per_epoch):
        indices = process_indices(global_batch_indices(order, step, self.global_batch_size),
                                  self.process_index, self.process_count)
        batch = self._read(indices)
        after = (DataPosition(epoch, step + 1) if step + 1 < self.steps_per_epoch
                 else DataPosition(epoch + 1, 0))
        yield after, batch
      epoch, step = epoch + 1, 0

  def __iter__(self) -> 'TrainLoader':
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    self.position, batch = next(self._batches)
    return batch

  def close(self) -> None:
    """Stops the prefetch thread and the readers."""
    self._batches.close()
    if self._pool:
      self._pool.shutdown()


def eval_batches(source: Source, *, global_batch_size: int, spec: BatchSpec, prefetch: int = 2,
                 process_index: int = 0, process_count: int = 1
                 ) -> Iterator[tuple[dict[str, np.ndarray], list[VideoMetadata | None]]]:
  """Every video once, in dataset order, as (batch, metadata); batches laid out as in training.

  `metadata[row]` is the VideoMetadata of the batch's row on this process, None on padding.
  """
  order = np.arange(len(source))
  num_steps = steps_per_epoch(len(source), global_batch_size)

  def produce():
    for step in range(num_steps):
      indices = process_indices(global_batch_indices(order, step, global_batch_size),
                                process_index, process_count)
      yield read_batch(source, indices, spec)

  yield from _prefetched(produce(), prefetch)
