"""The official feature-file reader: layouts, and one clear error per kind of bad file."""

import re

import numpy as np
import pytest

from backtal_jax.core.labels import IGNORE_LABEL
from backtal_jax.data import features
from tests import npz_files

READ_ARGS = dict(num_classes=npz_files.NUM_CLASSES, feature_dim=npz_files.FEATURE_DIM,
                 num_segments=npz_files.NUM_SEGMENTS)


def _write(tmp_path, arrays, name='bad.npz', compressed=False):
  path = tmp_path / name
  (np.savez_compressed if compressed else np.savez)(path, **arrays)
  return path


def test_reads_channels_first_training_file(tmp_path):
  arrays = npz_files.video_arrays(0, train=True)
  record = features.read_video(_write(tmp_path, arrays), require_clicks=True, **READ_ARGS)
  np.testing.assert_array_equal(
      record.features_SxF, np.concatenate([arrays['feat_spa'].T, arrays['feat_tem'].T], axis=1))
  assert record.features_SxF.dtype == np.float32
  np.testing.assert_array_equal(record.click_labels_T, arrays['point_label'])
  assert record.click_labels_T.dtype == np.int32
  np.testing.assert_array_equal(record.video_labels_C, arrays['cls_label'])
  assert record.vid_name == 'video_0000'
  assert (record.frame_num, record.fps, record.duration) == (None, None, None)


def test_channels_last_reads_the_same(tmp_path):
  arrays = npz_files.video_arrays(1, train=False)
  first = features.read_video(_write(tmp_path, arrays, 'a.npz'), require_metadata=True, **READ_ARGS)
  arrays['feat_spa'], arrays['feat_tem'] = arrays['feat_spa'].T, arrays['feat_tem'].T
  last = features.read_video(_write(tmp_path, arrays, 'b.npz'), require_metadata=True, **READ_ARGS)
  np.testing.assert_array_equal(first.features_SxF, last.features_SxF)
  assert (last.frame_num, last.fps, last.duration) == (180, 25.0, 7.2)
  assert last.click_labels_T is None


def test_layout_without_num_segments(tmp_path):
  arrays = npz_files.video_arrays(2, train=True)
  args = dict(READ_ARGS, num_segments=None)
  first = features.read_video(_write(tmp_path, arrays, 'a.npz'), **args)
  arrays['feat_spa'], arrays['feat_tem'] = arrays['feat_spa'].T, arrays['feat_tem'].T
  last = features.read_video(_write(tmp_path, arrays, 'b.npz'), **args)
  assert first.features_SxF.shape == (npz_files.NUM_SEGMENTS, npz_files.FEATURE_DIM)
  np.testing.assert_array_equal(first.features_SxF, last.features_SxF)


def _drop(key):
  return lambda a: {k: v for k, v in a.items() if k != key}


def _set(key, value_fn):
  return lambda a: {**a, key: value_fn(a[key])}


def _with_nan(x):
  x = x.copy()
  x[0, 1] = np.nan
  return x


BAD_TRAINING_FILES = {
    'missing_feat_spa': (_drop('feat_spa'), 'feat_spa', 'missing'),
    'missing_feat_tem': (_drop('feat_tem'), 'feat_tem', 'missing'),
    'missing_cls_label': (_drop('cls_label'), 'cls_label', 'missing'),
    'missing_vid_name': (_drop('vid_name'), 'vid_name', 'missing'),
    'missing_point_label': (_drop('point_label'), 'point_label', 'missing'),
    'wrong_width_spa': (_set('feat_spa', lambda x: x[:-1]), 'feat_spa', 'expected'),
    'wrong_width_tem': (_set('feat_tem', lambda x: np.concatenate([x, x])), 'feat_tem', 'expected'),
    'feature_not_2d': (_set('feat_spa', lambda x: x[None]), 'feat_spa', '2-D'),
    'wrong_length': (_set('feat_tem', lambda x: x[:, :-1]), 'feat_tem',
                     'shape (4, 5), expected (4, 6)'),
    'point_label_length': (_set('point_label', lambda x: x[:-1]), 'point_label', 'length 5'),
    'point_label_range': (_set('point_label', lambda x: x + 7), 'point_label', 'values'),
    'point_label_fraction': (_set('point_label', lambda x: x + 0.5), 'point_label', 'values'),
    'nan_spa': (_set('feat_spa', _with_nan), 'feat_spa', 'non-finite'),
    'inf_tem': (_set('feat_tem', lambda x: x + np.inf), 'feat_tem', 'non-finite'),
    'nan_cls_label': (_set('cls_label', lambda x: x * np.nan), 'cls_label', 'non-finite'),
    'label_size': (_set('cls_label', lambda x: np.append(x, 1.0)), 'cls_label', 'expected (3,)'),
    'label_2d': (_set('cls_label', lambda x: x[None]), 'cls_label', 'expected (3,)'),
    'string_features': (_set('feat_spa', lambda x: x.astype(str)), 'feat_spa', 'numbers'),
    'pickled_features': (_set('feat_spa', lambda x: x.astype(object)), 'feat_spa', 'unreadable'),
    'numeric_vid_name': (_set('vid_name', lambda x: np.array(3)), 'vid_name', 'string'),
}


@pytest.mark.parametrize('case', sorted(BAD_TRAINING_FILES))
def test_bad_training_file_names_file_and_key(tmp_path, case):
  edit, key, problem = BAD_TRAINING_FILES[case]
  path = _write(tmp_path, edit(npz_files.video_arrays(3, train=True)), f'{case}.npz')
  with pytest.raises(features.FeatureFileError, match=re.escape(problem)) as info:
    features.read_video(path, require_clicks=True, **READ_ARGS)
  assert str(path) in str(info.value) and repr(key) in str(info.value)
  assert info.value.key == key


def test_spa_tem_length_mismatch_without_num_segments(tmp_path):
  arrays = npz_files.video_arrays(3, train=True)
  path = _write(tmp_path, {**arrays, 'feat_tem': arrays['feat_tem'][:, :-1]})
  with pytest.raises(features.FeatureFileError,
                     match="bad.npz: key 'feat_tem': 5 snippets but feat_spa has 6"):
    features.read_video(path, **dict(READ_ARGS, num_segments=None))


@pytest.mark.parametrize('key', ['frame_num', 'fps', 'duration'])
def test_missing_or_bad_test_metadata(tmp_path, key):
  arrays = npz_files.video_arrays(4, train=False)
  path = _write(tmp_path, _drop(key)(arrays), 'missing.npz')
  with pytest.raises(features.FeatureFileError, match=f"missing.npz: key '{key}': missing"):
    features.read_video(path, require_metadata=True, **READ_ARGS)
  path = _write(tmp_path, {**arrays, key: np.array([1.0, np.inf])}, 'vector.npz')
  with pytest.raises(features.FeatureFileError,
                     match=f"vector.npz: key '{key}': expected a scalar"):
    features.read_video(path, require_metadata=True, **READ_ARGS)


def test_truncated_file(tmp_path):
  path = _write(tmp_path, npz_files.video_arrays(5, train=True))
  path.write_bytes(path.read_bytes()[:300])
  with pytest.raises(features.FeatureFileError, match="bad.npz: key 'feat_spa': not a readable"):
    features.read_video(path, **READ_ARGS)


def test_corrupt_member(tmp_path):
  """Damaged compressed bytes inside an intact archive: the key being read is named."""
  arrays = npz_files.video_arrays(6, train=True)
  arrays['feat_tem'] = np.zeros((npz_files.FEATURE_DIM // 2, npz_files.NUM_SEGMENTS), np.float32)
  path = _write(tmp_path, arrays, compressed=True)
  data = bytearray(path.read_bytes())
  start = data.index(b'feat_tem.npy') + len(b'feat_tem.npy')
  data[start + 20:start + 40] = bytes(range(20))
  path.write_bytes(bytes(data))
  with pytest.raises(features.FeatureFileError, match="bad.npz: key 'feat_tem': unreadable"):
    features.read_video(path, **READ_ARGS)


def test_not_an_archive(tmp_path):
  path = tmp_path / 'plain.npz'
  np.save(path.with_suffix(''), np.zeros(3))
  path.with_suffix('').with_suffix('.npy').rename(path)
  with pytest.raises(features.FeatureFileError, match="plain.npz: key 'feat_spa'"):
    features.read_video(path, **READ_ARGS)


def test_list_split_sorted_and_errors(tmp_path):
  paths = npz_files.write_split(tmp_path, 'val', 3, train=True)
  (tmp_path / 'val' / 'notes.txt').write_text('not a feature file')
  assert features.list_split(tmp_path, 'val') == sorted(paths)
  with pytest.raises(FileNotFoundError, match=r'test does not exist.*<features_root>/<split>/'):
    features.list_split(tmp_path, 'test')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='holds no .npz files'):
    features.list_split(tmp_path, 'empty')


def test_to_example_fills_absent_fields(tmp_path):
  record = features.read_video(
      _write(tmp_path, npz_files.video_arrays(7, train=True)), **READ_ARGS)
  example = features.to_example(record)
  assert example['frame_num'] == features.METADATA_MISSING
  test_record = features.read_video(
      _write(tmp_path, npz_files.video_arrays(8, train=False), 'test.npz'), **READ_ARGS)
  np.testing.assert_array_equal(
      features.to_example(test_record)['click_labels'],
      np.full(npz_files.NUM_SEGMENTS, IGNORE_LABEL))
