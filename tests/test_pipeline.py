"""The input pipeline: seeded order, resume, padding and mask, process shares, evaluation order."""

import ml_collections
import numpy as np
import pytest

from backtal_jax.core import sharding
from backtal_jax.core.labels import IGNORE_LABEL
from backtal_jax.data import features
from backtal_jax.data import pipeline
from configs import activitynet12
from configs import hacs
from configs import thumos
from tests import npz_files

SPEC = pipeline.BatchSpec(num_segments=npz_files.NUM_SEGMENTS, feature_dim=npz_files.FEATURE_DIM,
                          num_classes=npz_files.NUM_CLASSES)


class ListSource:
  """Examples in memory, each marked by its index; counts reads."""

  def __init__(self, num_examples):
    self.examples = [self._example(i) for i in range(num_examples)]
    self.reads = []

  @staticmethod
  def _example(i):
    return {
        'vid_name': f'v{i}',
        'features': np.full((SPEC.num_segments, SPEC.feature_dim), i, np.float32),
        'video_labels': np.eye(SPEC.num_classes, dtype=np.float32)[i % SPEC.num_classes],
        'click_labels': np.full(SPEC.num_segments, i % (SPEC.num_classes + 1), np.int32),
        'frame_num': np.int64(100 + i), 'fps': np.float64(25.0), 'duration': np.float64(i + 0.5),
    }

  def __len__(self):
    return len(self.examples)

  def __getitem__(self, index):
    self.reads.append(index)
    return self.examples[index]


def _loader(source, **kwargs):
  args = dict(global_batch_size=4, spec=SPEC, seed=7, prefetch=2)
  return pipeline.TrainLoader(source, **{**args, **kwargs})


def _take(loader, num_batches):
  batches = [next(loader) for _ in range(num_batches)]
  loader.close()
  return batches


def test_epoch_order_is_a_function_of_seed_and_epoch():
  np.testing.assert_array_equal(pipeline.epoch_order(50, 3, 2), pipeline.epoch_order(50, 3, 2))
  assert sorted(pipeline.epoch_order(50, 3, 2)) == list(range(50))
  assert not np.array_equal(pipeline.epoch_order(50, 3, 2), pipeline.epoch_order(50, 3, 3))
  assert not np.array_equal(pipeline.epoch_order(50, 3, 2), pipeline.epoch_order(50, 4, 2))


def test_every_example_once_per_epoch_and_padded_last_batch():
  loader = _loader(ListSource(10))
  assert loader.steps_per_epoch == 3
  batches = _take(loader, 6)
  for epoch in range(2):
    epoch_batches = batches[3 * epoch:3 * epoch + 3]
    real = np.concatenate([b['index'][b['mask'] == 1] for b in epoch_batches])
    assert sorted(real) == list(range(10))
    np.testing.assert_array_equal(real, loader.order(epoch))
  last = batches[2]
  np.testing.assert_array_equal(last['mask'], [1, 1, 0, 0])
  np.testing.assert_array_equal(last['index'][2:], [-1, -1])
  assert not last['features'][2:].any() and not last['video_labels'][2:].any()
  assert (last['click_labels'][2:] == IGNORE_LABEL).all()
  assert not np.array_equal(loader.order(0), loader.order(1))


def test_batch_contents_and_dtypes():
  batch = _take(_loader(ListSource(10)), 1)[0]
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
      'features': ((4, 6, 8), np.float32), 'video_labels': ((4, 3), np.float32),
      'click_labels': ((4, 6), np.int32), 'mask': ((4,), np.float32), 'index': ((4,), np.int32)}
  for row, index in enumerate(batch['index']):
    example = ListSource._example(index)
    np.testing.assert_array_equal(batch['features'][row], example['features'])
    np.testing.assert_array_equal(batch['video_labels'][row], example['video_labels'])
    np.testing.assert_array_equal(batch['click_labels'][row], example['click_labels'])


def test_resume_from_saved_position_gives_the_same_batches():
  reference = _loader(ListSource(10))
  batches, positions = [], []
  for _ in range(7):
    batches.append(next(reference))
    positions.append(reference.position)
  reference.close()
  assert positions[2] == pipeline.DataPosition(1, 0)
  assert positions[3] == pipeline.DataPosition(1, 1)
  for resume_at in (1, 2, 4):
    saved = pipeline.DataPosition.from_dict(positions[resume_at].to_dict())
    resumed = _take(_loader(ListSource(10), start=saved), 6 - resume_at)
    for expected, actual in zip(batches[resume_at + 1:], resumed):
      for key in expected:
        np.testing.assert_array_equal(expected[key], actual[key])


def test_position_outside_epoch_is_rejected():
  with pytest.raises(ValueError, match='outside an epoch of 3 steps'):
    _loader(ListSource(10), start=pipeline.DataPosition(0, 3))


def test_each_process_reads_only_its_share():
  num_examples, process_count = 10, 2
  global_batches = _take(_loader(ListSource(num_examples), global_batch_size=8), 2)
  for process_index in range(process_count):
    source = ListSource(num_examples)
    local = _take(_loader(source, global_batch_size=8, prefetch=0, process_index=process_index,
                          process_count=process_count), 2)
    rows = slice(4 * process_index, 4 * process_index + 4)
    for global_batch, local_batch in zip(global_batches, local):
      for key in global_batch:
        np.testing.assert_array_equal(global_batch[key][rows], local_batch[key])
    read_by_this_process = set(source.reads)
    expected = {i for b in local for i in b['index'] if i >= 0}
    assert read_by_this_process == expected
  with pytest.raises(ValueError, match='multiple of the number of processes'):
    _loader(ListSource(10), global_batch_size=6, process_count=4)


def test_reads_are_streamed_not_preloaded():
  source = ListSource(100)
  loader = _loader(source, prefetch=1)
  next(loader)
  loader.close()
  assert len(source.reads) <= 4 * 3


def test_reader_errors_reach_the_consumer(tmp_path):
  paths = npz_files.write_split(tmp_path, 'val', 5, train=True)
  paths[4].write_bytes(b'broken')
  source = pipeline.NpzSource(tmp_path, 'val', num_classes=SPEC.num_classes,
                              feature_dim=SPEC.feature_dim, num_segments=SPEC.num_segments)
  loader = _loader(source, shuffle=False)
  next(loader)
  with pytest.raises(features.FeatureFileError, match="video_0004.npz: key 'feat_spa'"):
    next(loader)
  loader.close()


def test_wrong_example_shape_is_named():
  source = ListSource(4)
  source.examples[2]['features'] = np.zeros((5, SPEC.feature_dim), np.float32)
  with pytest.raises(ValueError, match=r'Example 2 \(v2\): features has shape \(5, 8\)'):
    _take(_loader(source, shuffle=False), 1)


def test_eval_batches_in_order_with_metadata():
  source = ListSource(6)
  batches = list(pipeline.eval_batches(source, global_batch_size=4, spec=SPEC))
  assert len(batches) == 2
  np.testing.assert_array_equal(np.concatenate([b['index'] for b, _ in batches]),
                                [0, 1, 2, 3, 4, 5, -1, -1])
  metadata = [m for _, rows in batches for m in rows]
  assert metadata[6:] == [None, None]
  assert metadata[4] == pipeline.VideoMetadata('v4', 104, 25.0, 4.5)
  second_half = list(pipeline.eval_batches(source, global_batch_size=4, spec=SPEC, process_index=1,
                                           process_count=2))
  np.testing.assert_array_equal(second_half[1][0]['index'], [-1, -1])
  assert second_half[0][1] == [pipeline.VideoMetadata('v2', 102, 25.0, 2.5),
                               pipeline.VideoMetadata('v3', 103, 25.0, 3.5)]


def _data_config(root, **overrides):
  config = ml_collections.ConfigDict(dict(
      source='npz', features_root=str(root), train_split='val', test_split='test',
      num_segments=SPEC.num_segments, feature_dim=SPEC.feature_dim, tfds_name='', tfds_data_dir=''))
  config.update(overrides)
  return config


def test_npz_source_from_config_into_global_arrays(tmp_path):
  npz_files.write_split(tmp_path, 'val', 5, train=True)
  source = pipeline.open_source(_data_config(tmp_path), 'val', num_classes=SPEC.num_classes,
                                train=True)
  batch = _take(_loader(source, shuffle=False), 2)[1]
  np.testing.assert_array_equal(batch['index'], [4, -1, -1, -1])
  record = features.read_video(source.paths[4], num_classes=SPEC.num_classes,
                               feature_dim=SPEC.feature_dim)
  np.testing.assert_array_equal(batch['features'][0], record.features_SxF)
  np.testing.assert_array_equal(batch['click_labels'][0], record.click_labels_T)
  global_batch = sharding.to_global_batch(batch, sharding.batch_sharding(sharding.make_mesh()))
  rows = []
  for shard in global_batch['features'].addressable_shards:
    np.testing.assert_array_equal(np.asarray(shard.data), batch['features'][shard.index[0]])
    rows.extend(range(len(batch['index']))[shard.index[0]])
  assert sorted(rows) == list(range(len(batch['index'])))  # every row on exactly one device


def test_missing_features_root_says_where_features_go(tmp_path):
  with pytest.raises(ValueError, match=r'features_root is not set.*val/\*\.npz.*:synthetic'):
    pipeline.open_source(_data_config(tmp_path, features_root=''), 'val', num_classes=3, train=True)
  with pytest.raises(FileNotFoundError, match='does not exist'):
    pipeline.open_source(_data_config(tmp_path), 'val', num_classes=3, train=True)


@pytest.mark.parametrize('module,dataset,splits,num_segments', [
    (thumos, 'thumos14', ('val', 'test'), 750),
    (activitynet12, 'activitynet12', ('training', 'validation'), 100),
    (hacs, 'hacs', ('training', 'validation'), 200)])
def test_data_configs(module, dataset, splits, num_segments):
  config = module.get_config()
  assert config.data.dataset == dataset
  assert (config.data.train_split, config.data.test_split) == splits
  assert config.data.num_segments == num_segments and config.data.feature_dim == 2048
  assert config.data.tfds_name == f'backtal_features/{dataset}'
  config.data.features_root = '/data'  # a placeholder takes a string from the command line
  with pytest.raises(ValueError, match="'npz' or 'tfds'"):
    pipeline.open_source(ml_collections.ConfigDict(dict(config.data, source='csv')), 'val',
                         num_classes=config.model.num_classes, train=True)
