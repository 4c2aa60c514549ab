"""What the train step is fed: streamed host batches, or indices into a split kept on the devices.

A batch at official width is ~100 MB; read from npz files by the host it takes longer than an
accelerator's step. Whole training splits fit in accelerator memory (THUMOS14 1.2 GB, ActivityNet1.2
3.9 GB in float32), so the device-resident feed places the split on every device once and the
jitted step gathers its batch by index: per step the host only sends B indices. Both feeds serve
the same order, padding and `DataPosition` (the indices come from the same `TrainLoader`), so a run
gives the same numbers and resumes the same way with either. Splits that do not fit (HACS, 62 GB)
stream, read by `config.data.readers` threads.

Both feeds: `next(feed)` returns the step's inputs as global jax.Arrays, `feed.shardings` their
shardings (for `jax.jit`), `feed.assemble(inputs)` (traced inside the step) the batch the loss
reads, and `position`, `steps_per_epoch` and `close()` as `TrainLoader`.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from backtal_jax.core import sharding
from backtal_jax.core.labels import IGNORE_LABEL
from backtal_jax.data import pipeline

MODES = ('auto', 'always', 'never')


class _Delegating:
  """Position, epoch length and closing of the underlying TrainLoader."""
  loader: pipeline.TrainLoader

  @property
  def position(self) -> pipeline.DataPosition:
    return self.loader.position

  @property
  def steps_per_epoch(self) -> int:
    return self.loader.steps_per_epoch

  def close(self) -> None:
    self.loader.close()

  def __iter__(self):
    return self


class StreamingFeed(_Delegating):
  """Host batches read from the source each step, placed on the devices split along the batch."""

  def __init__(self, loader: pipeline.TrainLoader, mesh: jax.sharding.Mesh):
    self.loader = loader
    self.shardings = sharding.batch_sharding(mesh)

  def __next__(self) -> dict:
    return sharding.to_global_batch(next(self.loader), self.shardings)

  @staticmethod
  def assemble(inputs: dict) -> dict:
    return inputs


def split_bytes(num_examples: int, spec: pipeline.BatchSpec) -> int:
  """Device memory of a whole split as the resident feed stores it (float32 features)."""
  per_example = 4 * (spec.num_segments * spec.feature_dim + spec.num_classes + spec.num_segments)
  return num_examples * per_example


def place_split(source: pipeline.Source, spec: pipeline.BatchSpec,
                mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Every example of `source`, read once and replicated on every device (each process reads the
  whole split: any device may need any video)."""
  batch, _ = pipeline.read_batch(source, np.arange(len(source)), spec)
  replicated = sharding.replicated_sharding(mesh)
  return {key: jax.make_array_from_process_local_data(replicated, batch[key], batch[key].shape)
          for key in ('features', 'video_labels', 'click_labels')}


def gather_batch(table: dict[str, jax.Array], index_B: jax.Array) -> dict[str, jax.Array]:
  """The batch `pipeline.read_batch` builds for these indices (-1: padding), gathered on the
  devices: padding rows are zero features, zero labels and no clicks, with mask 0."""
  valid_B = index_B >= 0
  safe_B = jnp.maximum(index_B, 0)
  batch_spec = jax.typeof(index_B).sharding.spec

  def rows(x):
    gathered = x.at[safe_B].get(out_sharding=jax.sharding.PartitionSpec(*batch_spec))
    return valid_B.reshape((-1,) + (1,) * (x.ndim - 1)), gathered

  valid, features_BxTxF = rows(table['features'])
  batch = {'features': jnp.where(valid, features_BxTxF, 0)}
  valid, labels_BxC = rows(table['video_labels'])
  batch['video_labels'] = jnp.where(valid, labels_BxC, 0)
  valid, clicks_BxT = rows(table['click_labels'])
  batch['click_labels'] = jnp.where(valid, clicks_BxT, IGNORE_LABEL)
  batch['mask'] = valid_B.astype(jnp.float32)
  batch['index'] = index_B
  # The barrier keeps the gather out of the model's fusions, so that the step computes exactly as
  # on a streamed batch (fused, XLA:CPU reorders sums and moves results by an ulp).
  return jax.lax.optimization_barrier(batch)


def only_indices(indices: np.ndarray) -> dict[str, np.ndarray]:
  """What the host sends per step in the resident feed."""
  return {'index': indices.astype(np.int32)}


class ResidentFeed(_Delegating):
  """The split on the devices; each step sends its B indices and gathers inside the step."""

  def __init__(self, source: pipeline.Source, loader_args: dict, spec: pipeline.BatchSpec,
               mesh: jax.sharding.Mesh):
    self.table = place_split(source, spec, mesh)
    self.loader = pipeline.TrainLoader(source, spec=spec, read=only_indices, prefetch=0,
                                       **loader_args)
    self._index_sharding = sharding.batch_sharding(mesh)
    replicated = sharding.replicated_sharding(mesh)
    self.shardings = {'index': self._index_sharding,
                      'table': {key: replicated for key in self.table}}

  def __next__(self) -> dict:
    index = sharding.to_global_batch(next(self.loader), self._index_sharding)['index']
    return {'index': index, 'table': self.table}

  @staticmethod
  def assemble(inputs: dict) -> dict:
    return gather_batch(inputs['table'], inputs['index'])


def is_resident(data_config: ml_collections.ConfigDict, num_examples: int,
                spec: pipeline.BatchSpec) -> bool:
  """config.data.resident: 'always', 'never', or 'auto' (when the split takes at most
  config.data.resident_max_gb of each device's memory)."""
  if data_config.resident not in MODES:
    raise ValueError(f'config.data.resident must be one of {MODES}, got {data_config.resident!r}')
  if data_config.resident == 'auto':
    return split_bytes(num_examples, spec) <= data_config.resident_max_gb * 1e9
  return data_config.resident == 'always'


def train_feed(source: pipeline.Source, config: ml_collections.ConfigDict,
               spec: pipeline.BatchSpec, start: pipeline.DataPosition, mesh: jax.sharding.Mesh):
  """The feed config.data asks for, from `start` on."""
  loader_args = dict(global_batch_size=config.train.batch_size, seed=config.data.shuffle_seed,
                     start=start, process_index=jax.process_index(),
                     process_count=jax.process_count())
  if is_resident(config.data, len(source), spec):
    return ResidentFeed(source, loader_args, spec, mesh)
  return StreamingFeed(pipeline.TrainLoader(source, spec=spec, prefetch=config.data.prefetch,
                                            readers=config.data.readers, **loader_args), mesh)
