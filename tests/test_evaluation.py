"""backtal_jax.evaluation.mean_ap against the official evaluator's mAP and on hand-made cases."""

import json
import lzma

import numpy as np
import pytest

from backtal_jax.data import resources
from backtal_jax.evaluation import mean_ap
from tests.conftest import TESTDATA


@pytest.mark.parametrize('name, gt_name', [('map_thumos_test', 'thumos14_gt'),
                                           ('map_anet_val', 'activitynet12_gt')])
@pytest.mark.parametrize('detections', ['detections.json', 'detections_untied.json'])
def test_same_map_as_official_evaluator(name, gt_name, detections):
  summary = json.loads((TESTDATA / name / 'summary.json').read_text())
  predictions = json.loads(lzma.decompress((TESTDATA / name / (detections + '.xz')).read_bytes()))
  map_U, average = mean_ap.detection_map(resources.annotation_path(gt_name), predictions,
                                            subset=summary['subset'],
                                            tiou_thresholds=summary['tiou'])
  np.testing.assert_allclose(map_U, summary['mAP'], rtol=0, atol=1e-9)
  assert abs(average - summary['average_mAP']) <= 1e-9


def ground_truth(*videos, subset='test'):
  """videos: (video_id, [(label, start, end), ...])."""
  return {'database': {
      vid: {'subset': subset,
            'annotations': [{'label': c, 'segment': [s, e]} for c, s, e in anns]}
      for vid, anns in videos}}


def predictions(**videos):
  """videos: video_id=[(label, start, end, score), ...]."""
  return {'results': {vid: [{'label': c, 'segment': [s, e], 'score': p} for c, s, e, p in dets]
                      for vid, dets in videos.items()}}


GT = ground_truth(('v1', [('a', 0.0, 2.0), ('a', 5.0, 7.0), ('b', 3.0, 4.0)]),
                  ('v2', [('b', 1.0, 3.0)]))


def test_perfect_predictions_score_one():
  pred = predictions(v1=[('a', 0.0, 2.0, 0.9), ('a', 5.0, 7.0, 0.8), ('b', 3.0, 4.0, 0.7)],
                     v2=[('b', 1.0, 3.0, 0.6)])
  map_U, average = mean_ap.detection_map(GT, pred, subset='test', tiou_thresholds=[0.5, 0.9])
  np.testing.assert_array_equal(map_U, [1.0, 1.0])
  assert average == 1.0


def test_class_without_predictions_counts_zero():
  pred = predictions(v1=[('a', 0.0, 2.0, 0.9), ('a', 5.0, 7.0, 0.8)])
  map_U, _ = mean_ap.detection_map(GT, pred, subset='test', tiou_thresholds=[0.5])
  np.testing.assert_array_equal(map_U, [0.5])  # class a: AP 1, class b: AP 0


def test_duplicate_detection_is_a_false_positive():
  pred = predictions(v1=[('a', 0.0, 2.0, 0.9), ('a', 0.0, 2.0, 0.8), ('a', 5.0, 7.0, 0.7)])
  ap_UxC, names = mean_ap.average_precision_per_class(GT, pred, subset='test',
                                                         tiou_thresholds=[0.5])
  # Ranks: TP, FP, TP -> precision 1 at recall 0.5, 2/3 at recall 1.
  np.testing.assert_allclose(ap_UxC[0, names.index('a')], 0.5 * 1 + 0.5 * 2 / 3)


def test_predictions_in_unknown_videos_are_false_positives():
  pred = predictions(v1=[('a', 0.0, 2.0, 0.5), ('a', 5.0, 7.0, 0.4)], v9=[('a', 0.0, 2.0, 0.9)])
  ap_UxC, names = mean_ap.average_precision_per_class(GT, pred, subset='test',
                                                         tiou_thresholds=[0.5])
  # Ranks: FP, TP, TP -> the interpolated precision is 2/3 at both recalls.
  np.testing.assert_allclose(ap_UxC[0, names.index('a')], 2 / 3)


@pytest.mark.parametrize('listing, expected_ap', [('fp_first', 1.0), ('tp_first', 0.5)])
def test_equal_scores_rank_the_later_listed_first(listing, expected_ap):
  gt = ground_truth(('v1', [('a', 0.0, 2.0)]))
  tp, fp = ('a', 0.0, 2.0, 0.5), ('a', 8.0, 9.0, 0.5)
  pred = predictions(v1=[fp, tp] if listing == 'fp_first' else [tp, fp])
  map_U, _ = mean_ap.detection_map(gt, pred, subset='test', tiou_thresholds=[0.5])
  np.testing.assert_allclose(map_U, [expected_ap])


def test_equal_tiou_tries_the_later_listed_ground_truth_first():
  gt = ground_truth(('v1', [('a', 0.0, 2.0), ('a', 2.0, 4.0)]))
  # The first prediction has tIoU 1/3 with both; it takes the later-listed one, so the second
  # prediction, an exact copy of that one, finds it taken.
  pred = predictions(v1=[('a', 1.0, 3.0, 0.9), ('a', 2.0, 4.0, 0.8)])
  map_U, _ = mean_ap.detection_map(gt, pred, subset='test', tiou_thresholds=[0.3])
  np.testing.assert_allclose(map_U, [0.5])


def test_empty_predictions_give_zero():
  map_U, average = mean_ap.detection_map(GT, {'results': {}}, subset='test',
                                            tiou_thresholds=[0.1, 0.5])
  np.testing.assert_array_equal(map_U, [0.0, 0.0])
  assert average == 0.0


def test_malformed_json_names_the_file(tmp_path):
  path = tmp_path / 'pred.json'
  path.write_text('{"results": {"v1": [')
  with pytest.raises(ValueError, match='pred.json: malformed JSON'):
    mean_ap.detection_map(GT, path, subset='test', tiou_thresholds=[0.5])


@pytest.mark.parametrize('det, message', [
    (('z', 0.0, 1.0, 0.5), "video 'v1': label 'z' is not a class"),
    (('a', 2.0, 1.0, 0.5), "video 'v1': bad segment"),
    (('a', 0.0, float('inf'), 0.5), "video 'v1': bad segment"),
    (('a', 0.0, 1.0, float('nan')), "video 'v1': non-finite score"),
])
def test_bad_prediction_names_file_and_video(tmp_path, det, message):
  path = tmp_path / 'pred.json'
  path.write_text(json.dumps(predictions(v1=[det])))
  with pytest.raises(ValueError, match=f'pred.json: {message}'):
    mean_ap.detection_map(GT, path, subset='test', tiou_thresholds=[0.5])


def test_subset_without_ground_truth_is_an_error():
  with pytest.raises(ValueError, match="subset 'validation' has no ground-truth instance"):
    mean_ap.detection_map(GT, {'results': {}}, subset='validation', tiou_thresholds=[0.5])
