"""The TFDS builder: npz files -> ArrayRecord -> `tfds.data_source`, all without TensorFlow."""

import importlib.util
import sys

import numpy as np
import pytest

from backtal_jax.data import pipeline
from configs import thumos
from tests import npz_files

pytest.importorskip('tensorflow_datasets', reason="the optional 'tfds' extra is not installed")
from backtal_jax.data import tfds_builder  # pylint: disable=wrong-import-position

SPEC = pipeline.BatchSpec(num_segments=npz_files.NUM_SEGMENTS, feature_dim=npz_files.FEATURE_DIM,
                          num_classes=npz_files.NUM_CLASSES)
SMALL = tfds_builder.FeatureConfig(
    name='small', train_split='val', test_split='test', num_classes=SPEC.num_classes,
    num_segments=SPEC.num_segments, feature_dim=SPEC.feature_dim)


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """A few generated npz files and the TFDS dataset built from them."""
  assert importlib.util.find_spec('tensorflow') is None, 'these tests must run without TensorFlow'
  root = tmp_path_factory.mktemp('features')
  npz_files.write_split(root, 'val', 5, train=True)
  npz_files.write_split(root, 'test', 3, train=False)
  data_dir = tmp_path_factory.mktemp('tfds')
  builder = tfds_builder.BacktalFeatures(config=SMALL, data_dir=str(data_dir),
                                         file_format='array_record')
  builder.download_and_prepare(
      download_config=tfds_builder.tfds.download.DownloadConfig(manual_dir=str(root)))
  return root, builder


def _npz_source(root, split, train):
  return pipeline.NpzSource(root, split, num_classes=SPEC.num_classes, feature_dim=SPEC.feature_dim,
                            num_segments=SPEC.num_segments, require_clicks=train,
                            require_metadata=not train)


@pytest.mark.parametrize('split,train', [('val', True), ('test', False)])
def test_reads_back_identical_examples_without_tensorflow(built, split, train):
  root, builder = built
  tfds_source = pipeline.TfdsSource(builder.as_data_source(split=split))
  npz_source = _npz_source(root, split, train)
  assert len(tfds_source) == len(npz_source)
  for index in range(len(npz_source)):
    expected, actual = npz_source[index], tfds_source[index]
    assert expected.keys() == actual.keys()
    for key in expected:
      np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
      assert np.asarray(actual[key]).dtype == np.asarray(expected[key]).dtype, key
  assert 'tensorflow' not in sys.modules


def test_data_source_by_name_gives_the_same_batches(built):
  root, builder = built
  data_dir = str(builder.data_path.parent.parent.parent)
  data_source = tfds_builder.data_source('backtal_features/small', 'val', data_dir=data_dir)
  loaders = [pipeline.TrainLoader(source, global_batch_size=4, spec=SPEC, seed=3, prefetch=0)
             for source in (pipeline.TfdsSource(data_source), _npz_source(root, 'val', True))]
  for _ in range(4):
    from_tfds, from_npz = (next(loader) for loader in loaders)
    for key in from_npz:
      np.testing.assert_array_equal(from_tfds[key], from_npz[key])
  assert 'tensorflow' not in sys.modules


def test_configs_match_the_official_datasets():
  configs = {c.name: c for c in tfds_builder.CONFIGS}
  assert (configs['thumos14'].train_split, configs['thumos14'].test_split) == ('val', 'test')
  assert (configs['thumos14'].num_segments, configs['thumos14'].num_classes) == (750, 20)
  assert (configs['activitynet12'].num_segments, configs['activitynet12'].num_classes) == (100, 100)
  assert (configs['hacs'].num_segments, configs['hacs'].num_classes) == (200, 200)
  assert configs['hacs'].train_split == 'training' and configs['hacs'].feature_dim == 2048


def test_tfds_source_from_config(built):
  root, builder = built
  config = thumos.get_data_config()
  config.source = 'tfds'
  config.tfds_name = 'backtal_features/small'
  config.tfds_data_dir = str(builder.data_path.parent.parent.parent)
  source = pipeline.open_source(config, 'test', num_classes=SPEC.num_classes, train=False)
  assert [source[i]['vid_name'] for i in range(len(source))] == [
      'video_1000', 'video_1001', 'video_1002']
  assert source[2]['frame_num'] == 180
