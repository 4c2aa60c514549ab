"""PNG plots of a video: the CAS of its ground-truth classes, their instances and the detections.

The quickest way to see what a run learned: whether the CAS fires on the actions or on their
context, and which detections the post-processing made of it.
"""

import io
from typing import Sequence

from etils import epath
import matplotlib
import numpy as np

from backtal_jax.data import annotations

matplotlib.use('Agg')
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position


def plot_video(path: epath.PathLike, cas_TxC1: np.ndarray, video: annotations.Video,
               class_names: Sequence[str], detections: Sequence[dict], max_detections: int = 8,
               classes: Sequence[int] = ()) -> None:
  """One panel per class in `classes` (default: the ground-truth classes of `video`): its CAS
  over time (seconds), the instances shaded, and the class's best `max_detections` detections as
  bars at their score."""
  classes = classes or video.labels or (0,)
  times_T = (np.arange(cas_TxC1.shape[0]) + 0.5) / cas_TxC1.shape[0] * video.duration
  figure, axes = plt.subplots(len(classes), 1, figsize=(10, 2.2 * len(classes)), squeeze=False)
  for ax, class_id in zip(axes[:, 0], classes):
    name = class_names[class_id]
    ax.plot(times_T, cas_TxC1[:, class_id], color='tab:blue', label='CAS')
    ax.plot(times_T, cas_TxC1[:, -1], color='tab:gray', lw=0.8, label='background CAS')
    for inst in video.instances:
      if inst.label == class_id:
        ax.axvspan(inst.start, inst.end, color='tab:green', alpha=0.25)
    ours = sorted((d for d in detections if d['label'] == name), key=lambda d: -d['score'])
    twin = ax.twinx()
    for d in ours[:max_detections]:
      twin.hlines(d['score'], *d['segment'], color='tab:red', lw=3)
    twin.set_ylim(0, max([1.0] + [d['score'] for d in ours[:max_detections]]) * 1.05)
    twin.set_ylabel('detection score', color='tab:red')
    ax.set_xlim(0, video.duration)
    ax.set_title(f'{video.name}: {name} (green: ground truth, red: detections)', fontsize=9)
    ax.set_ylabel('CAS')
  axes[-1, 0].set_xlabel('seconds')
  axes[0, 0].legend(loc='upper right', fontsize=7)
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=90)
  plt.close(figure)
  epath.Path(path).write_bytes(buffer.getvalue())
