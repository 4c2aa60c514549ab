"""PNG plots that explain a video's detections: what post-processing thresholded, and what it made.

Per class with a ground-truth instance or a detection (wrong classes included, a main failure
mode): the min-max normalised CAS that the CAS thresholds cut, the band those thresholds span,
the ground-truth instances, and the detections at their scores. Below them the feature magnitude
with its own thresholds, which makes the class-agnostic proposals. Both curves come from
`postprocess.proposal_signals`, the function detect_video thresholds, so the plot cannot drift
from what made the detections. Background clicks (training videos) are marked in every panel.
Each detection says which proposal made it (`postprocess.detections_and_sources`) and, where a
ground truth is given, whether it is a true positive at tIoU MATCH_TIOU; score labels are stacked
so that they never overlap; a video without detections says why.
"""

import io
from typing import Mapping
from typing import Sequence

from etils import epath
import matplotlib
import ml_collections
import numpy as np

from backtal_jax.data import annotations
from backtal_jax.evaluation import mean_ap
from backtal_jax.evaluation import postprocess

matplotlib.use('Agg')
# pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import figure as mpl_figure
from matplotlib import pyplot as plt
from matplotlib import transforms as mtransforms

# pylint: enable=g-import-not-at-top,wrong-import-position

SCREEN_WIDTH_INCHES = 14  # 1400 pixels at the saved dpi: a laptop screen's width
PANEL_HEIGHT_INCHES = 1.9
DPI = 100
MAX_CLASS_PANELS = 6  # ground-truth classes first, then wrong classes by their best detection
MAX_DETECTIONS = 8  # per class panel, the best by score
MATCH_TIOU = 0.5  # a detection is marked a true positive at this tIoU
LABEL_ROW_POINTS = 4  # the step by which a score label moves up off another


def classes_to_plot(detections: Sequence[dict], instances: Sequence[annotations.Instance],
                    class_names: Sequence[str]) -> list[int]:
  """Ground-truth classes, then wrong classes by their best detection score, at most six."""
  truth = sorted({inst.label for inst in instances})
  best: dict[int, float] = {}
  for d in detections:
    class_id = class_names.index(d['label'])
    if class_id not in truth:
      best[class_id] = max(best.get(class_id, -np.inf), d['score'])
  wrong = sorted(best, key=lambda c: -best[c])
  return (truth + wrong)[:MAX_CLASS_PANELS]


def position_seconds(length: int, duration: float) -> np.ndarray:
  """Centre time of each of `length` equal positions spanning the video."""
  return (np.arange(length) + 0.5) / length * duration


def click_seconds(click_labels_T: np.ndarray | None, num_classes: int,
                  duration: float) -> np.ndarray:
  """Times of the background clicks (label C) at their snippet centres."""
  if click_labels_T is None:
    return np.zeros(0)
  snippets = np.flatnonzero(np.asarray(click_labels_T) == num_classes)
  return (snippets + 0.5) / len(click_labels_T) * duration


def true_positives(detections: Sequence[dict], truth: Sequence[annotations.Instance],
                   tiou: float = MATCH_TIOU) -> list[bool]:
  """Whether each detection of one class matches a ground-truth instance of that class at `tiou`,
  as the mAP matches them (best score first, each instance at most once, highest tIoU first)."""
  matched, hits = set(), [False] * len(detections)
  for i in sorted(range(len(detections)), key=lambda i: -detections[i]['score']):
    start, end = detections[i]['segment']
    overlaps = [(float(mean_ap.segment_tiou(start, end, inst.start, inst.end)), j)
                for j, inst in enumerate(truth) if j not in matched]
    best = max(overlaps, default=(0.0, None))
    if best[1] is not None and best[0] >= tiou:
      matched.add(best[1])
      hits[i] = True
  return hits


def separate_labels(figure: mpl_figure.Figure) -> None:
  """Moves each score label up, a step at a time, until it covers neither a label of its panel
  placed before it (labels taken from left to right) nor another detection's bar. Lays the
  figure out first and then fixes the layout, since the labels are placed on the laid-out
  figure."""
  figure.canvas.draw()
  figure.set_layout_engine('none')
  renderer = figure.canvas.get_renderer()
  for ax in figure.axes:
    bars = [mtransforms.Bbox(c.get_transform().transform(segment)).padded(1)
            for c in ax.collections if c.get_gid() == 'bar' for segment in c.get_segments()]
    placed = []
    for text in sorted((t for t in ax.texts if t.get_gid() == 'label'), key=lambda t: t.xy[0]):
      box = text.get_window_extent(renderer)
      while any(box.overlaps(other) for other in placed + bars):
        x, y = text.get_position()
        text.set_position((x, y + LABEL_ROW_POINTS))
        box = text.get_window_extent(renderer)
      placed.append(box)


def no_detection_reason(scores_C1: np.ndarray, class_names: Sequence[str],
                        eval_config: ml_collections.ConfigDict) -> str:
  """Why a video has no detection: no class's video score reached the threshold (naming the
  best one), or the classes that did made no proposal."""
  scores_C = np.asarray(scores_C1)[:len(class_names)]
  best = int(np.argmax(scores_C))
  if scores_C[best] < eval_config.class_score_thresh:
    return (f'no detection: no class reached the class-score threshold '
            f'{eval_config.class_score_thresh:g} (best: {class_names[best]}, {scores_C[best]:.3f})')
  return 'no detection: the classes above the class-score threshold made no proposal'


def _detections(twin, detections, sources, hits):
  """Each detection as a bar at its score, coloured by true/false positive where known, with a
  label: score, TP/FP, the proposal that made it (`separate_labels` moves them apart)."""
  colours = {None: 'tab:red', True: 'tab:green', False: 'tab:red'}
  names = {None: 'detection (score)', True: f'true positive (tIoU >= {MATCH_TIOU:g})',
           False: 'false positive'}
  for d, hit, source in zip(detections, hits, sources):
    text = f'{d["score"]:.2f}' + ('' if hit is None else (' TP' if hit else ' FP')) + f' {source}'
    twin.hlines(d['score'], *d['segment'], color=colours[hit], lw=2.5, label=names[hit], gid='bar')
    twin.annotate(text, (d['segment'][0], d['score']), fontsize=6, color=colours[hit],
                  xytext=(0, 2), textcoords='offset points', gid='label')


def _class_panel(ax, times_L, cas_L, class_id, name, video_score, truth, detections, clicks,
                 eval_config, *, sources, ground_truth_given):
  line, = ax.plot(times_L, cas_L, color='tab:blue', lw=1, label='normalised CAS (thresholded)')
  line.set_gid(f'cas:{class_id}')
  thresholds = postprocess.cas_thresholds(eval_config)
  ax.axhspan(thresholds.min(), thresholds.max(), color='tab:orange', alpha=0.25,
             label=f'CAS thresholds {thresholds.min():.3g}..{thresholds.max():.3g}')
  for inst in truth:
    ax.axvspan(inst.start, inst.end, color='tab:green', alpha=0.25, label='ground truth')
  for t in clicks:
    ax.axvline(t, color='black', ls=':', lw=0.8, label='background click')
  ax.set_ylim(min(0.0, float(cas_L.min())), 1.05)
  ax.set_ylabel('CAS', fontsize=8)
  status = '' if truth else '   WRONG CLASS: no ground-truth instance'
  if video_score < eval_config.class_score_thresh:
    status += (f'   below the class-score threshold {eval_config.class_score_thresh:g}: '
               'not localised')
  ax.set_title(f'{name} (video score {video_score:.3f}){status}', fontsize=9, loc='left',
               color='black' if truth else 'tab:red')
  ours = sorted(detections, key=lambda d: -d['score'])[:MAX_DETECTIONS]
  hits = true_positives(ours, truth) if ground_truth_given else [None] * len(ours)
  twin = ax.twinx()
  _detections(twin, ours, [sources.get(_key(d), '') for d in ours], hits)
  scores = [d['score'] for d in ours] or [1.0]
  twin.set_ylim(min(0.0, min(scores)), max(1.0, max(scores)) * 1.25)  # room for labels
  twin.set_ylabel('detection score', color='tab:red', fontsize=8)
  return [ax, twin]


def _magnitude_panel(ax, times_L, magnitudes_L, clicks, eval_config):
  line, = ax.plot(times_L, magnitudes_L, color='tab:purple', lw=1,
                  label='feature magnitude (thresholded)')
  line.set_gid('magnitude')
  thresholds = postprocess.feature_thresholds(eval_config)
  ax.axhspan(thresholds.min(), thresholds.max(), color='tab:pink', alpha=0.25,
             label=f'magnitude thresholds {thresholds.min():.3g}..{thresholds.max():.3g}')
  for t in clicks:
    ax.axvline(t, color='black', ls=':', lw=0.8, label='background click')
  ax.set_ylim(0, 1.05)
  ax.set_ylabel('magnitude', fontsize=8)
  ax.set_title('feature magnitude: class-agnostic proposals, scored on each class\'s CAS',
               fontsize=9, loc='left')


def _key(detection: dict) -> tuple:
  return detection['label'], *detection['segment'], detection['score']


def video_figure(inputs: Mapping[str, np.ndarray], *, vid_name: str, frame_num: int,
                 duration: float, class_names: Sequence[str], detections: Sequence[dict],
                 config: ml_collections.ConfigDict,
                 instances: Sequence[annotations.Instance] = (),
                 click_labels_T: np.ndarray | None = None,
                 ground_truth_given: bool = False) -> mpl_figure.Figure:
  """The figure of one video from the post-processing inputs {'cas', 'scores', 'feature_norm'}.
  `ground_truth_given`: the video is in a ground truth (its `instances`, maybe none), so each
  detection is marked a true or false positive."""
  classes = classes_to_plot(detections, instances, class_names)
  remade, made_by = postprocess.detections_and_sources(
      inputs['cas'], inputs['scores'], np.asarray(inputs['feature_norm'])[:, None],
      frame_num=frame_num, duration=duration, class_names=class_names, config=config)
  sources = {_key(d): source for d, source in zip(remade, made_by)}
  scores_LxA, magnitudes_L = postprocess.proposal_signals(
      inputs['cas'], np.asarray(inputs['feature_norm'])[:, None], classes, frame_num=frame_num,
      eval_config=config.eval)
  num_panels = len(classes) + (magnitudes_L is not None)
  figure, axes = plt.subplots(
      max(num_panels, 1), 1, sharex=True, squeeze=False, layout='constrained',
      figsize=(SCREEN_WIDTH_INCHES, 0.8 + PANEL_HEIGHT_INCHES * max(num_panels, 1)))
  axes = list(axes[:, 0])
  times_L = position_seconds(frame_num, duration)
  clicks = click_seconds(click_labels_T, len(class_names), duration)
  drawn = []
  for ax, class_id, cas_L in zip(axes, classes, scores_LxA.T):
    name = class_names[class_id]
    drawn += _class_panel(ax, times_L, cas_L, class_id, name, float(inputs['scores'][class_id]),
                          [i for i in instances if i.label == class_id],
                          [d for d in detections if d['label'] == name], clicks, config.eval,
                          sources=sources, ground_truth_given=ground_truth_given)
  if magnitudes_L is not None:
    _magnitude_panel(axes[-1], times_L, magnitudes_L, clicks, config.eval)
    drawn.append(axes[-1])
  if not drawn:
    axes[0].set_title(f'{vid_name}: no ground-truth instance and no detection', fontsize=9)
  axes[-1].set_xlim(0, duration)
  axes[-1].set_xlabel('seconds')
  reason = ('' if detections else
            f': {no_detection_reason(inputs["scores"], class_names, config.eval)}')
  figure.suptitle(f'{vid_name} ({duration:.1f} s){reason}', fontsize=10)
  legend = {}
  for ax in drawn:
    for handle, label in zip(*ax.get_legend_handles_labels()):
      legend.setdefault(label, handle)
  if legend:
    figure.legend(legend.values(), legend.keys(), loc='outside right upper', fontsize=8)
  separate_labels(figure)
  return figure


def png_bytes(figure: mpl_figure.Figure) -> bytes:
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=DPI)
  plt.close(figure)
  return buffer.getvalue()


def plot_video(path: epath.PathLike, inputs: Mapping[str, np.ndarray], **video) -> bytes:
  """Writes the PNG of `video_figure(inputs, **video)` to `path` and returns its bytes."""
  data = png_bytes(video_figure(inputs, **video))
  epath.Path(path).write_bytes(data)
  return data
