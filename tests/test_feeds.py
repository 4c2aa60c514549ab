"""The device-resident feed serves exactly the streamed batches, and trains to the same numbers."""

import jax
import numpy as np
import pytest

from backtal_jax.core import sharding
from backtal_jax.data import feeds
from backtal_jax.data import pipeline
from backtal_jax.run import train
from backtal_jax.run import train_state
from configs import thumos
from tests import npz_files

SPEC = pipeline.BatchSpec(npz_files.NUM_SEGMENTS, npz_files.FEATURE_DIM, npz_files.NUM_CLASSES)


def small_config(resident: str, batch_size: int = 8):
  config = thumos.get_config()
  config.train.batch_size = batch_size
  config.data.resident = resident
  config.data.shuffle_seed = 3
  config.data.prefetch = 0
  return config


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  root = tmp_path_factory.mktemp('npz')
  npz_files.write_split(root, 'val', 11, train=True)
  return pipeline.NpzSource(root, 'val', num_classes=SPEC.num_classes,
                            feature_dim=SPEC.feature_dim, num_segments=SPEC.num_segments,
                            require_clicks=True)


def assembled(feed, inputs) -> dict:
  return jax.device_get(jax.jit(feed.assemble)(inputs))


@pytest.mark.parametrize('start', [pipeline.DataPosition(), pipeline.DataPosition(1, 1)])
def test_gathered_batches_equal_streamed_ones(source, start):
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    streamed = feeds.train_feed(source, small_config('never'), SPEC, start, mesh)
    resident = feeds.train_feed(source, small_config('always'), SPEC, start, mesh)
    assert isinstance(streamed, feeds.StreamingFeed) and isinstance(resident, feeds.ResidentFeed)
    padded = 0
    for _ in range(2 * streamed.steps_per_epoch):  # 11 videos, batch 8: the second is padded
      ours, theirs = assembled(resident, next(resident)), assembled(streamed, next(streamed))
      assert ours.keys() == theirs.keys()
      for key in theirs:
        assert ours[key].dtype == theirs[key].dtype, key
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
      padded += int((theirs['mask'] == 0).sum())
      assert resident.position == streamed.position
    streamed.close()
    resident.close()
  assert padded == 2 * 5


def test_resident_host_input_is_the_indices_only(source):
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    feed = feeds.train_feed(source, small_config('always'), SPEC, pipeline.DataPosition(), mesh)
    first = next(feed)
    second = next(feed)
    feed.close()
  assert first['table'] is second['table']  # placed once, not per step
  assert first['index'].shape == (8,) and first['index'].dtype == np.int32
  assert first['table']['features'].shape == (11, SPEC.num_segments, SPEC.feature_dim)


@pytest.mark.parametrize('max_gb, expected', [(1.0, True), (1e-7, False)])
def test_auto_keeps_a_split_resident_when_it_fits(max_gb, expected):
  config = small_config('auto')
  config.data.resident_max_gb = max_gb
  assert feeds.split_bytes(200, SPEC) == 200 * 4 * (6 * 8 + 3 + 6)
  assert feeds.is_resident(config.data, 200, SPEC) == expected


def test_official_splits_resident_except_hacs():
  thumos_spec = pipeline.BatchSpec(750, 2048, 20)
  anet_spec = pipeline.BatchSpec(100, 2048, 100)
  hacs_spec = pipeline.BatchSpec(200, 2048, 200)
  data = thumos.get_config().data
  assert feeds.is_resident(data, 200, thumos_spec)
  assert feeds.is_resident(data, 4819, anet_spec)
  assert not feeds.is_resident(data, 37612, hacs_spec)


def test_unknown_mode_is_named():
  with pytest.raises(ValueError, match="config.data.resident.*'sometimes'"):
    feeds.is_resident(small_config('sometimes').data, 1, SPEC)


@pytest.mark.slow
def test_resident_and_streamed_steps_train_to_identical_parameters(tmp_path):
  """Three steps from the same state, one feed each: the parameters agree bit for bit."""
  config = thumos.get_config('debug')
  config.data.features_root = str(tmp_path / 'testbed')
  config.train.batch_size = 16  # 24 videos: the second step is padded
  mesh = sharding.make_mesh()
  params = {}
  with jax.set_mesh(mesh):
    run = train.Run(config, str(tmp_path / 'run'), mesh)
    for mode in ('never', 'always'):
      config.data.resident = mode
      state = train_state.create_train_state(config, run.model, run.tx, mesh)
      feed = run.data.train_feed(pipeline.DataPosition(), mesh)
      step_fn = train.jit_train_step(run.model, run.tx, config, mesh, state, feed)
      for _ in range(3):
        state, _ = step_fn(state, next(feed))
      feed.close()
      params[mode] = jax.tree.leaves(jax.device_get(state.params))
    run.close()
  for ours, theirs in zip(params['always'], params['never']):
    np.testing.assert_array_equal(ours, theirs)
