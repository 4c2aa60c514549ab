"""backtal_jax.evaluation.postprocess against the official code's detections and on hand-made
cases."""

import json
import lzma

import numpy as np
import pytest

from backtal_jax.core import resample
from backtal_jax.data import resources
from backtal_jax.evaluation import postprocess
from configs import activitynet12
from configs import thumos
from tests.conftest import TESTDATA

FIXTURES = [('postprocess_thumos', thumos, 'thumos14_gt'),
            ('postprocess_anet', activitynet12, 'activitynet12_gt')]


def load_fixture(name):
  inputs = np.load(TESTDATA / name / 'inputs.npz')
  results = json.loads(lzma.decompress((TESTDATA / name / 'detections.json.xz').read_bytes()))
  videos = sorted({key.split('/')[0] for key in inputs.files})
  return inputs, results['results'], videos


@pytest.mark.parametrize('name, config_module, gt_name', FIXTURES)
def test_same_detections_as_official_code(name, config_module, gt_name):
  config = config_module.get_config()
  class_names = json.loads(resources.annotation_path(gt_name).read_text())['activity_list']
  inputs, expected, videos = load_fixture(name)
  for video in videos:
    detections = postprocess.detect_video(
        inputs[f'{video}/cas'].T, inputs[f'{video}/score'],
        inputs[f'{video}/feature1_norm'][:, None],
        frame_num=int(inputs[f'{video}/frame_num']), duration=float(inputs[f'{video}/duration']),
        class_names=class_names, config=config)
    want = expected.get(video, [])
    assert len(detections) == len(want), video
    assert [d['label'] for d in detections] == [w['label'] for w in want], video
    if want:
      np.testing.assert_allclose([[d['score']] + d['segment'] for d in detections],
                                 [[w['score']] + w['segment'] for w in want], rtol=0, atol=1e-6,
                                 err_msg=video)


def test_linear_resize_follows_opencv_half_pixel_rule():
  up = resample.linear_resize(np.array([[0.0], [1.0]]), 4)[:, 0]
  np.testing.assert_allclose(up, [0.0, 0.25, 0.75, 1.0])
  down = resample.linear_resize(np.array([[0.0], [2.0], [4.0], [8.0]]), 2)[:, 0]
  np.testing.assert_allclose(down, [1.0, 6.0])


def test_feature_magnitudes_are_minmax_normalised_norms():
  feature_TxH = np.array([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]])
  np.testing.assert_allclose(postprocess.feature_magnitudes(feature_TxH), [4 / 9, 0.0, 1.0],
                             rtol=1e-6)


def test_find_runs_groups_consecutive_positions():
  mask = np.array([[1, 1, 0, 1], [0, 0, 0, 0], [0, 1, 1, 1]], bool)
  rows, firsts, lasts = postprocess.find_runs(mask)
  np.testing.assert_array_equal(rows, [0, 0, 2])
  np.testing.assert_array_equal(firsts, [0, 3, 1])
  np.testing.assert_array_equal(lasts, [1, 3, 3])


def test_contrast_score_uses_the_official_outer_margins():
  values = np.array([[0.0, 1.0, 1.0, 0.5, 0.2, 0.0]], np.float32)
  # Run [1, 2], lambda 1: left margin [max(0, 1 - 2), 1) = {0},
  # right margin [3, min(6, 2 + 2)) = {3}.
  score = postprocess.contrast_scores(values, np.array([0]), np.array([1]), np.array([2]), 1.0)
  np.testing.assert_allclose(score, [1.0 - 0.25])


def test_nms_uses_plus_one_length_and_ranks_later_ties_first():
  scores = np.array([0.9, 0.8, 0.8])
  starts = np.array([0.0, 0.5, 10.0])
  ends = np.array([1.0, 1.5, 11.0])
  # True IoU of the first two is 1/3, but with length end - start + 1 it is 0.6 >= 0.55.
  np.testing.assert_array_equal(postprocess.nms_1d(scores, starts, ends, 0.55), [0, 2])
  np.testing.assert_array_equal(postprocess.nms_1d(scores, starts, ends, 0.7), [0, 2, 1])


def small_config(**overrides):
  config = thumos.get_config()
  config.eval.feature_proposals = False
  config.eval.update(overrides)
  return config


def one_class_video(cas_T, score=0.9):
  """Two classes plus background; class 0 carries `cas_T` and a confident video score."""
  cas_TxC1 = np.zeros((len(cas_T), 3), np.float32)
  cas_TxC1[:, 0] = cas_T
  return cas_TxC1, np.array([score, 0.05, 0.05], np.float32), np.ones((len(cas_T), 4))


def test_all_background_video_gives_no_detection():
  cas, scores, feature = one_class_video(np.linspace(0, 1, 20), score=0.1)
  assert postprocess.detect_video(cas, scores, feature, frame_num=20, duration=10.0,
                                  class_names=['a', 'b'], config=thumos.get_config()) == []


def test_flat_cas_gives_no_detection():
  cas, scores, feature = one_class_video(np.zeros(20))
  assert postprocess.detect_video(cas, scores, feature, frame_num=20, duration=10.0,
                                  class_names=['a', 'b'], config=small_config()) == []


@pytest.mark.parametrize('keep', [False, True])
def test_lone_position_at_index_0(keep):
  cas, scores, feature = one_class_video([1.0] + [0.0] * 9)
  detections = postprocess.detect_video(cas, scores, feature, frame_num=10, duration=5.0,
                                        class_names=['a', 'b'],
                                        config=small_config(keep_lone_first_position=keep))
  if not keep:
    assert detections == []  # the official `if any(position)` drops it
  else:
    assert len(detections) == 1
    assert detections[0]['label'] == 'a'
    np.testing.assert_allclose(detections[0]['segment'], [0.0, 0.5])
    np.testing.assert_allclose(detections[0]['score'], 1.0 + 0.2 * 0.9, rtol=1e-6)


def test_duplicate_proposals_collapse_and_separate_ones_stay():
  cas_T = np.zeros(20)
  cas_T[3:6] = 1.0
  cas_T[12:15] = 0.8
  cas, scores, feature = one_class_video(cas_T)
  detections = postprocess.detect_video(cas, scores, feature, frame_num=20, duration=20.0,
                                        class_names=['a', 'b'], config=small_config())
  # Every CAS threshold finds the same two runs: NMS keeps one of each, the better first.
  assert [d['segment'] for d in detections] == [[3.0, 6.0], [12.0, 15.0]]
  assert detections[0]['score'] > detections[1]['score']


def test_shrink_and_whole_video_proposal():
  cas_T = np.zeros(10)
  cas_T[2:6] = 1.0
  cas, scores, feature = one_class_video(cas_T)
  config = activitynet12.get_config()
  detections = postprocess.detect_video(cas, scores, feature, frame_num=10, duration=10.0,
                                        class_names=['a', 'b'], config=config)
  segments = sorted(d['segment'] for d in detections)
  np.testing.assert_allclose(segments, [[0.0, 10.0], [2.08, 5.92]])
  assert {d['score'] for d in detections if d['segment'] == [0.0, 10.0]} == {0.6}
