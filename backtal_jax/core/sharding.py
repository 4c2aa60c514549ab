"""The device mesh, the placement of host batches on it, and the split of the optimiser's update.

One 'data' axis over every device: parameters are replicated, batches are split along their first
axis. Each process hands over only the rows it read, and
`jax.make_array_from_process_local_data` assembles the global array without any host ever holding
the whole batch. The optimiser's element-wise update is split over the devices (ZeRO's first
stage): each device keeps Adam's moments for its share of every parameter it can split
(`update_spec`) and updates that share; the new parameters are then gathered.
"""

from collections.abc import Sequence
import functools

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np


def make_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh with an explicit 'data' axis over `devices` (default: all, of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), ('data',), axis_types=(jax.sharding.AxisType.Explicit,),
                       devices=devices)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Batches: first axis split over 'data'."""
  return NamedSharding(mesh, P('data'))


def replicated_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Parameters and optimiser state: a full copy on every device."""
  return NamedSharding(mesh, P())


def update_spec(shape: Sequence[int], num_devices: int) -> P:
  """Where an array that the optimiser updates element by element is split: along its first axis
  that divides evenly over the devices (each device updates 1/N of it and keeps Adam's moments for
  that share only), replicated when no axis does, or on one device, which updates the whole."""
  if num_devices == 1:
    return P()
  for axis, size in enumerate(shape):
    if size % num_devices == 0:
      return P(*(None,) * axis, 'data')
  return P()


def update_sharding(shape: Sequence[int], mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, update_spec(shape, mesh.size))


def update_share(x: jax.Array, num_devices: int) -> jax.Array:
  """Each device's share of `x` by update_spec: a replicated `x` is sliced (no data moved), an
  unreduced one (the gradient of reduced weights) summed into the shares by one reduce-scatter.

  Written as psum_scatter because `jax.reshard` from unreduced to split lowers to an all-reduce
  and a slice on TPUs (JAX 0.10.2), which moves the whole gradient to every device.
  """
  spec = update_spec(x.shape, num_devices)
  typed = jax.typeof(x).sharding
  if not typed.spec.unreduced or 'data' not in spec:
    return jax.reshard(x, spec)
  split = functools.partial(jax.lax.psum_scatter, axis_name='data',
                            scatter_dimension=spec.index('data'), tiled=True)
  return jax.shard_map(split, mesh=typed.mesh, in_specs=P(unreduced={'data'}), out_specs=spec)(x)


def reduced_over_data(x: jax.Array) -> jax.Array:
  """`x` (replicated) typed as *reduced* over 'data': the same copy on every device, no data
  moved, but its gradient comes back *unreduced* (each device's partial sum), so that the step can
  sum it straight into each device's share (a reduce-scatter) instead of all-reducing it."""
  return jax.reshard(x, P(reduced={'data'}))


def divides_over(global_batch_size: int, num_devices: int) -> bool:
  """Every device gets the same number of rows: the global batch must divide evenly (the one rule
  for config.train.batch_size and config.eval.batch_size, which the pre-flight checks)."""
  return (isinstance(global_batch_size, int) and not isinstance(global_batch_size, bool) and
          global_batch_size > 0 and global_batch_size % num_devices == 0)


def check_global_batch_size(global_batch_size: int, num_devices: int | None = None) -> None:
  num_devices = jax.device_count() if num_devices is None else num_devices
  if not divides_over(global_batch_size, num_devices):
    raise ValueError(
        f'The global batch size ({global_batch_size}) must be a positive multiple of the number '
        f'of devices ({num_devices}): each device takes global_batch_size / num_devices videos. '
        f'Pick a batch size divisible by {num_devices}.')


def process_rows(sharding: NamedSharding, global_batch_size: int) -> slice:
  """The contiguous rows of a global batch that live on this process's devices.

  The pipeline reads rows [i * B / P, (i + 1) * B / P) on process i; this checks that the mesh
  agrees, so that a device order which interleaves processes fails loudly instead of mixing rows.
  """
  check_global_batch_size(global_batch_size, sharding.mesh.size)
  index_map = sharding.addressable_devices_indices_map((global_batch_size,))
  starts = sorted(index[0].indices(global_batch_size)[0] for index in index_map.values())
  stops = sorted(index[0].indices(global_batch_size)[1] for index in index_map.values())
  rows = slice(starts[0], stops[-1])
  per_process = global_batch_size // jax.process_count()
  expected = slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
  if rows != expected or starts[1:] != stops[:-1]:
    raise ValueError(
        f'Process {jax.process_index()} owns rows {starts}..{stops} of the global batch, not the '
        f'contiguous block {expected.start}:{expected.stop} the input pipeline reads; build the '
        'mesh with sharding.make_mesh().')
  return rows


def to_global_batch(local_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict:
  """This process's rows of a batch -> global jax.Arrays split along their first axis."""
  local_size = {x.shape[0] for x in local_batch.values()}
  if len(local_size) != 1:
    raise ValueError(f'Batch entries disagree on the batch size: {sorted(local_size)}')
  process_rows(sharding, local_size.pop() * jax.process_count())
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded array, in order (no cross-host transfer)."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  rows, seen = [], set()
  for shard in shards:
    start = shard.index[0].start or 0
    if start not in seen:
      seen.add(start)
      rows.append(np.asarray(shard.data))
  return np.concatenate(rows)
