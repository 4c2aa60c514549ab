"""Pre-flight checks: every problem of the config and of the feature files, reported at once."""

import json

import numpy as np
import pytest

from backtal_jax.core import errors
from backtal_jax.data import features
from backtal_jax.run import preflight
from configs import thumos
from tests import npz_files


def small_config(tmp_path):
  """The debug config shrunk to the npz_files layout, with a ground truth of its test videos."""
  config = thumos.get_config('debug')
  config.data.source = 'npz'
  config.data.features_root = str(tmp_path)
  config.data.train_split, config.data.test_split = 'train', 'test'
  config.data.num_segments = npz_files.NUM_SEGMENTS
  config.data.feature_dim = config.model.feat_dim = npz_files.FEATURE_DIM
  config.model.num_classes = npz_files.NUM_CLASSES
  config.model.topk_ratio = 0.5
  classes = ['a', 'b', 'c']
  database = {f'video_{1000 + i:04d}': {
      'subset': 'test', 'duration': 7.2, 'fps': 25.0,
      'annotations': [{'label': 'a', 'segment': [1.0, 2.0]}]} for i in range(4)}
  (tmp_path / 'gt.json').write_text(json.dumps({'activity_list': classes, 'database': database}))
  config.eval.ground_truth = str(tmp_path / 'gt.json')
  config.eval.subset = 'test'
  return config


def write(path, arrays):
  np.savez(path, **arrays)


def test_a_clean_tree_has_no_problem(tmp_path):
  npz_files.write_split(tmp_path, 'train', 3, train=True)
  npz_files.write_split(tmp_path, 'test', 4, train=False)
  config = small_config(tmp_path)
  assert preflight.config_problems(config, 4) == []
  preflight.check_data(config, tmp_path)


def test_every_file_problem_is_reported_at_once(tmp_path):
  train = npz_files.write_split(tmp_path, 'train', 4, train=True)
  test = npz_files.write_split(tmp_path, 'test', 6, train=False)
  arrays = lambda seed, train: npz_files.video_arrays(seed, train=train)
  write(train[0], {**arrays(0, True), 'cls_label': np.array([0.0, 2.0, 1.0])})
  write(train[1], {**arrays(1, True), 'point_label': np.array([-100, 0, 7, 3, 3, -1])})
  write(train[2], {k: v for k, v in arrays(2, True).items() if k != 'point_label'})
  write(test[0], {**arrays(1000, False), 'duration': np.array(0.0), 'fps': np.array(-25.0),
                  'frame_num': np.array(0)})
  write(test[1], {**arrays(1001, False), 'feat_spa': np.zeros((4, 9), np.float32)})
  write(test[2], {**arrays(1001, False), 'vid_name': np.array('video_1001')})  # a duplicate
  write(test[4], {**arrays(1004, False), 'vid_name': np.array('not_in_gt')})
  test[5].write_bytes(np.random.default_rng(0).bytes(500))
  problems = preflight.data_problems(small_config(tmp_path), tmp_path)
  expected = [
      f"{train[0]}: key 'cls_label': values [0.0, 1.0, 2.0], expected 0 or 1",
      f"{train[1]}: key 'point_label': values [-1, 7], expected -100",
      f"{train[2]}: keys ['point_label'] missing",
      f"{test[0]}: key 'frame_num': value 0, expected >= 1",
      f"{test[0]}: key 'fps': value -25.0, expected > 0",
      f"{test[0]}: key 'duration': value 0.0, expected > 0",
      f"{test[1]}: key 'feat_spa': shape (4, 9), expected (4, 6) channels-first",
      "test: vid_name 'video_1001' is in 2 files",
      f"{test[4]}: key 'vid_name': 'not_in_gt' is not a video of subset 'test'",
      f"{test[5]}: key 'feat_spa': not a valid .npz file",
  ]
  for text in expected:
    assert sum(p.startswith(text) for p in problems) == 1, (text, problems)
  assert len(problems) == len(expected)
  with pytest.raises(preflight.PreflightError, match='10 problem'):
    preflight.check_data(small_config(tmp_path), tmp_path)


def test_the_features_themselves_are_not_read(tmp_path):
  """A file whose feature bytes are corrupt past an intact header passes the scan (reading them
  fails): only headers and small keys are read, and HACS holds 62 GB of features."""
  npz_files.write_split(tmp_path, 'train', 1, train=True, feature_dim=2048)
  test = npz_files.write_split(tmp_path, 'test', 1, train=False, feature_dim=2048)
  data = bytearray(test[0].read_bytes())
  header_end = data.index(b'\n', data.index(b'NUMPY')) + 1  # feat_spa is the first member
  data[header_end + 20000:header_end + 20008] = b'\xff' * 8  # of 1024 x 6 x 4 bytes
  test[0].write_bytes(bytes(data))
  config = small_config(tmp_path)
  config.data.feature_dim = config.model.feat_dim = 2048
  assert preflight.data_problems(config, tmp_path) == []
  with pytest.raises(features.FeatureFileError, match='feat_spa'):
    features.read_video(test[0], num_classes=npz_files.NUM_CLASSES, feature_dim=2048)


def test_every_config_problem_is_reported_at_once(tmp_path):
  (tmp_path / 'train').mkdir()
  config = small_config(tmp_path)
  config.train.batch_size = 10
  config.eval.batch_size = 6
  config.train.selection_metric = 'map@0.55'
  config.train.log_every_steps = 0
  config.train.num_epochs = -1
  config.train.selection_split = 'train'
  config.model.dtype = 'float16'
  config.model.affinity_kernel = 'mosaic'
  problems = preflight.config_problems(config, 4)
  expected = [
      f'config.data.features_root: {tmp_path}/test is not a directory',
      'config.train.batch_size is 10, expected a positive multiple of the device count (4)',
      'config.eval.batch_size is 6, expected a positive multiple of the device count (4)',
      "config.train.selection_metric is 'map@0.55', expected 'average' or 'map@X'",
      'config.train.log_every_steps is 0, expected an integer >= 1',
      'config.train.num_epochs is -1, expected an integer >= 1',
      "config.train.selection_split is 'train'",
      "config.model.dtype is 'float16'",
      "config.model.affinity_kernel is 'mosaic', expected one of ['auto', 'xla', 'pallas']",
  ]
  for text in expected:
    assert sum(p.startswith(text) for p in problems) == 1, (text, problems)
  assert len(problems) == len(expected)


def test_a_long_report_is_cut_at_the_limit():
  error = preflight.PreflightError([f'problem {i}' for i in range(errors.MAX_PROBLEMS + 5)])
  message = str(error)
  assert f'problem {errors.MAX_PROBLEMS - 1}' in message
  assert f'problem {errors.MAX_PROBLEMS}\n' not in message
  assert message.endswith('... and 5 more')
