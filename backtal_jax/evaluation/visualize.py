"""PNG plots that explain a video's detections: what post-processing thresholded, and what it made.

Per class with a ground-truth instance or a detection (wrong classes included, a main failure
mode): the min-max normalised CAS that the CAS thresholds cut, the band those thresholds span,
the ground-truth instances, and the detections at their scores. Below them the feature magnitude
with its own thresholds, which makes the class-agnostic proposals. Both curves come from
`postprocess.proposal_signals`, the function detect_video thresholds, so the plot cannot drift
from what made the detections. Background clicks (training videos) are marked in every panel.
"""

import io
from typing import Mapping
from typing import Sequence

from etils import epath
import matplotlib
import ml_collections
import numpy as np

from backtal_jax.data import annotations
from backtal_jax.evaluation import postprocess

matplotlib.use('Agg')
# pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import figure as mpl_figure
from matplotlib import pyplot as plt

# pylint: enable=g-import-not-at-top,wrong-import-position

SCREEN_WIDTH_INCHES = 14  # 1400 pixels at the saved dpi: a laptop screen's width
PANEL_HEIGHT_INCHES = 1.9
DPI = 100
MAX_CLASS_PANELS = 6  # ground-truth classes first, then wrong classes by their best detection
MAX_DETECTIONS = 8  # per class panel, the best by score


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


def _class_panel(ax, times_L, cas_L, class_id, name, video_score, truth, detections, clicks,
                 eval_config):
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
  twin = ax.twinx()
  for d in ours:
    twin.hlines(d['score'], *d['segment'], color='tab:red', lw=2.5, label='detection (score)')
    twin.annotate(f'{d["score"]:.2f}', (d['segment'][0], d['score']), fontsize=6,
                  color='tab:red', xytext=(0, 2), textcoords='offset points')
  scores = [d['score'] for d in ours] or [1.0]
  twin.set_ylim(min(0.0, min(scores)), max(1.0, max(scores)) * 1.1)
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


def video_figure(inputs: Mapping[str, np.ndarray], *, vid_name: str, frame_num: int,
                 duration: float, class_names: Sequence[str], detections: Sequence[dict],
                 config: ml_collections.ConfigDict,
                 instances: Sequence[annotations.Instance] = (),
                 click_labels_T: np.ndarray | None = None) -> mpl_figure.Figure:
  """The figure of one video from the post-processing inputs {'cas', 'scores', 'feature_norm'}."""
  classes = classes_to_plot(detections, instances, class_names)
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
                          [d for d in detections if d['label'] == name], clicks, config.eval)
  if magnitudes_L is not None:
    _magnitude_panel(axes[-1], times_L, magnitudes_L, clicks, config.eval)
    drawn.append(axes[-1])
  if not drawn:
    axes[0].set_title(f'{vid_name}: no ground-truth instance and no detection', fontsize=9)
  axes[-1].set_xlim(0, duration)
  axes[-1].set_xlabel('seconds')
  figure.suptitle(f'{vid_name} ({duration:.1f} s)', fontsize=10)
  legend = {}
  for ax in drawn:
    for handle, label in zip(*ax.get_legend_handles_labels()):
      legend.setdefault(label, handle)
  if legend:
    figure.legend(legend.values(), legend.keys(), loc='outside right upper', fontsize=8)
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
