"""Plots draw exactly what post-processing thresholded, and everything needed to read them."""

import re

import numpy as np
import pytest

from backtal_jax.data import annotations
from backtal_jax.evaluation import postprocess
from backtal_jax.evaluation import visualize
from configs import thumos

CLASS_NAMES = ('jump', 'throw', 'dive', 'run')
FRAME_NUM, DURATION, T = 120, 60.0, 50


def video_inputs():
  """CAS peaking on class 1 at 20-30 s and class 2 (not in the ground truth) at 40-45 s."""
  rng = np.random.default_rng(0)
  cas_TxC1 = rng.normal(0, 0.05, (T, len(CLASS_NAMES) + 1)).astype(np.float32)
  times_T = visualize.position_seconds(T, DURATION)
  cas_TxC1[(times_T > 20) & (times_T < 30), 1] += 1.0
  cas_TxC1[(times_T > 40) & (times_T < 45), 2] += 0.8
  scores_C1 = np.asarray([0.02, 0.5, 0.3, 0.03, 0.15], np.float32)
  feature_norm_T = (1 + np.abs(cas_TxC1[:, 1]) + rng.uniform(0, 0.2, T)).astype(np.float32)
  clicks_T = np.full(T, -100, np.int32)
  clicks_T[[3, 35]] = len(CLASS_NAMES)
  return {'cas': cas_TxC1, 'scores': scores_C1, 'feature_norm': feature_norm_T}, clicks_T


@pytest.fixture
def recorded_detection(monkeypatch):
  """detect_video's run on the test video, with the arrays it thresholded recorded."""
  config = thumos.get_config()
  inputs, clicks_T = video_inputs()
  seen = {}
  original = postprocess.proposal_signals

  def recording(*args, **kwargs):
    seen['classes'] = list(args[2])
    seen['scores_LxA'], seen['magnitudes_L'] = original(*args, **kwargs)
    return seen['scores_LxA'], seen['magnitudes_L']

  monkeypatch.setattr(postprocess, 'proposal_signals', recording)
  detections = postprocess.detect_video(
      inputs['cas'], inputs['scores'], inputs['feature_norm'][:, None], frame_num=FRAME_NUM,
      duration=DURATION, class_names=CLASS_NAMES, config=config)
  monkeypatch.undo()
  return config, inputs, clicks_T, detections, seen


def figure_of(config, inputs, clicks_T, detections):
  return visualize.video_figure(
      inputs, vid_name='video_test_1', frame_num=FRAME_NUM, duration=DURATION,
      class_names=CLASS_NAMES, detections=detections, config=config,
      instances=[annotations.Instance(start=20.0, end=30.0, label=1)], click_labels_T=clicks_T)


def lines_by_gid(figure):
  return {line.get_gid(): line for ax in figure.axes for line in ax.get_lines() if line.get_gid()}


def test_plotted_curves_are_the_thresholded_arrays(recorded_detection):
  config, inputs, clicks_T, detections, seen = recorded_detection
  assert {d['label'] for d in detections} == {'throw', 'dive'}
  lines = lines_by_gid(figure_of(config, inputs, clicks_T, detections))
  for column, class_id in enumerate(seen['classes']):
    if f'cas:{class_id}' in lines:
      np.testing.assert_array_equal(lines[f'cas:{class_id}'].get_ydata(),
                                    seen['scores_LxA'][:, column])
  assert {'cas:1', 'cas:2'} <= set(lines)
  np.testing.assert_array_equal(lines['magnitude'].get_ydata(), seen['magnitudes_L'])
  np.testing.assert_allclose(lines['cas:1'].get_xdata(),
                             (np.arange(FRAME_NUM) + 0.5) / FRAME_NUM * DURATION)


def test_wrong_class_thresholds_clicks_and_legend_outside(recorded_detection):
  config, inputs, clicks_T, detections, _ = recorded_detection
  figure = figure_of(config, inputs, clicks_T, detections)
  class_axes = [ax for ax in figure.axes if ax.get_title(loc='left')
                and 'magnitude' not in ax.get_title(loc='left')]
  titles = [ax.get_title(loc='left') for ax in class_axes]
  assert titles[0].startswith('throw') and 'WRONG' not in titles[0]
  assert titles[1].startswith('dive') and 'WRONG CLASS' in titles[1]
  for ax in class_axes:
    band = [p for p in ax.patches if p.get_label().startswith('CAS thresholds')]
    assert len(band) == 1
    assert band[0].get_bbox().y0 == pytest.approx(0) and band[0].get_bbox().y1 == pytest.approx(
        0.225)
    clicks = [line.get_xdata()[0] for line in ax.get_lines() if line.get_label() ==
              'background click']
    np.testing.assert_allclose(clicks, (np.asarray([3, 35]) + 0.5) / T * DURATION)
    assert ax.get_xlim() == (0, DURATION)
  figure.canvas.draw()
  (legend,) = figure.legends
  legend_box = legend.get_window_extent()
  assert not any(legend_box.overlaps(ax.get_window_extent()) for ax in figure.axes)
  labels = [t.get_text() for t in legend.get_texts()]
  assert {'ground truth', 'detection (score)', 'background click'} <= set(labels)
  width, height = figure.get_size_inches() * visualize.DPI
  assert width <= 1400 and height <= 900


def test_png_is_written_and_unannotated_videos_plot(tmp_path):
  inputs, _ = video_inputs()
  data = visualize.plot_video(
      tmp_path / 'v.png', inputs, vid_name='v', frame_num=FRAME_NUM, duration=DURATION,
      class_names=CLASS_NAMES, detections=[], config=thumos.get_config('debug'))
  assert data[:8] == b'\x89PNG\r\n\x1a\n' and (tmp_path / 'v.png').read_bytes() == data


def test_detections_say_true_or_false_positive_and_their_proposal(recorded_detection):
  config, inputs, clicks_T, detections, _ = recorded_detection
  figure = visualize.video_figure(
      inputs, vid_name='video_test_1', frame_num=FRAME_NUM, duration=DURATION,
      class_names=CLASS_NAMES, detections=detections, config=config,
      instances=[annotations.Instance(start=20.0, end=30.0, label=1)], click_labels_T=clicks_T,
      ground_truth_given=True)
  figure.canvas.draw()
  texts = [t.get_text() for ax in figure.axes for t in ax.texts if t.get_gid() == 'label']
  assert any(' TP ' in t for t in texts) and any(' FP ' in t for t in texts)
  assert all(re.search(r' (CAS|magnitude) >= [0-9.]+$| whole video$', t) for t in texts)
  _, sources = postprocess.detections_and_sources(
      inputs['cas'], inputs['scores'], inputs['feature_norm'][:, None], frame_num=FRAME_NUM,
      duration=DURATION, class_names=CLASS_NAMES, config=config)
  assert {s.split(' >= ')[0] for s in sources} == {'CAS', 'magnitude'}  # both kinds occur
  for ax in figure.axes:  # within each panel no two score labels overlap
    boxes = [t.get_window_extent() for t in ax.texts if t.get_gid() == 'label']
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
  legend = [t.get_text() for t in figure.legends[0].get_texts()]
  assert {'true positive (tIoU >= 0.5)', 'false positive'} <= set(legend)


def test_true_positives_match_each_instance_once_best_score_first():
  truth = [annotations.Instance(start=0.0, end=10.0, label=0)]
  detections = [{'segment': [0.0, 9.0], 'score': 0.5}, {'segment': [0.0, 10.0], 'score': 0.9},
                {'segment': [50.0, 60.0], 'score': 0.7}]
  assert visualize.true_positives(detections, truth) == [False, True, False]


def test_a_video_without_detections_names_the_best_class_score():
  inputs, _ = video_inputs()
  inputs['scores'] = np.asarray([0.02, 0.08, 0.05, 0.03, 0.82], np.float32)
  config = thumos.get_config()
  assert postprocess.detect_video(
      inputs['cas'], inputs['scores'], inputs['feature_norm'][:, None], frame_num=FRAME_NUM,
      duration=DURATION, class_names=CLASS_NAMES, config=config) == []
  figure = visualize.video_figure(inputs, vid_name='v', frame_num=FRAME_NUM, duration=DURATION,
                                  class_names=CLASS_NAMES, detections=[], config=config)
  assert figure._suptitle.get_text() == (
      'v (60.0 s): no detection: no class reached the class-score threshold 0.25 (best: throw, '
      '0.080)')
