"""The mesh and the host-batch -> global-array step, on four CPU devices."""

import jax
import numpy as np
import pytest

from backtal_jax.core import sharding
from tests import devices


def test_mesh_over_all_devices():
  mesh = sharding.make_mesh()
  assert mesh.shape == {'data': len(jax.devices())}
  assert mesh.axis_types == (jax.sharding.AxisType.Explicit,)
  assert sharding.replicated_sharding(mesh).is_fully_replicated


def test_each_device_gets_its_own_slice():
  mesh = sharding.make_mesh(devices.first_devices(4))
  rng = np.random.default_rng(0)
  batch = {
      'features': rng.normal(size=(8, 5, 6)).astype(np.float32),
      'click_labels': rng.integers(-100, 4, size=(8, 5)).astype(np.int32),
      'mask': np.array([1, 1, 1, 1, 1, 0, 0, 0], np.float32),
  }
  global_batch = sharding.to_global_batch(batch, sharding.batch_sharding(mesh))
  for name, array in global_batch.items():
    assert array.shape == batch[name].shape
    assert len(array.addressable_shards) == 4
    seen_rows = []
    for shard in array.addressable_shards:
      rows = shard.index[0]
      assert rows.stop - rows.start == 2
      np.testing.assert_array_equal(np.asarray(shard.data), batch[name][rows])
      seen_rows.append(rows.start)
    assert sorted(seen_rows) == [0, 2, 4, 6]
    assert len({shard.device for shard in array.addressable_shards}) == 4


def test_batch_size_must_divide_over_devices():
  mesh = sharding.make_mesh(devices.first_devices(4))
  with pytest.raises(ValueError, match=r'global batch size \(6\) must be a positive multiple of '
                     r'the number of devices \(4\)'):
    sharding.to_global_batch({'mask': np.ones(6, np.float32)}, sharding.batch_sharding(mesh))
  with pytest.raises(ValueError, match='multiple of the number of devices'):
    sharding.check_global_batch_size(0, 4)
  sharding.check_global_batch_size(16, 4)


def test_entries_must_agree_on_batch_size():
  mesh = sharding.make_mesh()
  with pytest.raises(ValueError, match='disagree'):
    sharding.to_global_batch({'a': np.ones(4), 'b': np.ones(8)}, sharding.batch_sharding(mesh))


def test_process_rows_single_process():
  mesh = sharding.make_mesh()
  assert sharding.process_rows(sharding.batch_sharding(mesh), 12) == slice(0, 12)
