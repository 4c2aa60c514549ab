"""What an evaluation reports: the averages users quote, the summary, tables and console lines."""

from typing import Any
from typing import Sequence

import numpy as np

DEFAULT_TIOU = (0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
# Averages users quote: THUMOS14 papers 0.1:0.7 and 0.3:0.7, the official THUMOS14 print 0.1:0.9,
# ActivityNet 0.5:0.95.
QUOTED_AVERAGES = {
    '0.1:0.7': (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
    '0.3:0.7': (0.3, 0.4, 0.5, 0.6, 0.7),
    '0.1:0.9': (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    '0.5:0.95': (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95),
}


def quoted_averages(map_U: np.ndarray, thresholds: Sequence[float]) -> dict[str, float]:
  """The quoted averages whose thresholds were all scored, and the mean over all of them."""
  averages = {}
  for name, wanted in QUOTED_AVERAGES.items():
    picks = [np.flatnonzero(np.isclose(thresholds, t)) for t in wanted]
    if all(p.size for p in picks):
      averages[name] = float(np.mean([map_U[p[0]] for p in picks]))
  averages['all scored'] = float(map_U.mean())
  return averages


def summarize(map_U: np.ndarray, thresholds: Sequence[float]) -> dict[str, Any]:
  """The summary every evaluation reports: mAP per tIoU and the quoted averages."""
  return {'tiou': list(thresholds), 'mAP': [float(m) for m in map_U],
          'average_mAP': quoted_averages(map_U, thresholds)}


def detections_file(detections: dict[str, list]) -> dict[str, Any]:
  """Detections per video wrapped in the ActivityNet results format."""
  return {'version': 'backtal_jax', 'results': detections, 'external_data': {}}


def format_table(summary: dict[str, Any]) -> str:
  """Plain-text table, mAP in percent."""
  rows = [(f'{t:.2f}', m) for t, m in zip(summary['tiou'], summary['mAP'])]
  rows += [(f'avg {name}', m) for name, m in summary['average_mAP'].items()]
  return '\n'.join([f'{"tIoU":>14}  mAP (%)'] + [f'{k:>14}  {100 * m:7.2f}' for k, m in rows])


def format_counts(summary: dict[str, Any]) -> str:
  return (f'ground truth: {summary["ground_truth_instances"]} instances in '
          f'{summary["ground_truth_videos"]} videos of subset {summary["subset"]!r}; predictions: '
          f'{summary["predictions"]} in {summary["predicted_videos"]} videos, '
          f'{summary["predictions_scored"]} scored')


def format_per_class(summary: dict[str, Any]) -> str:
  """AP (%) of each class at each tIoU, with its ground-truth and prediction counts."""
  width = max(len(c) for c in ['class', *summary['per_class_AP']])
  header = f'{"class":<{width}}  {"gt":>5} {"pred":>6} ' + ' '.join(
      f'{t:>6.2f}' for t in summary['tiou'])
  rows = [header]
  for name, ap_U in summary['per_class_AP'].items():
    count = summary['per_class_counts'][name]
    rows.append(f'{name:<{width}}  {count["ground_truth"]:>5} {count["predictions"]:>6} '
                + ' '.join(f'{100 * a:>6.2f}' for a in ap_U))
  return '\n'.join(rows)


def headline_average(summary: dict[str, Any]) -> tuple[str, float]:
  """The first quoted average that was scored (THUMOS14: 0.1:0.7; ActivityNet: 0.5:0.95)."""
  return next(iter(summary['average_mAP'].items()))


def evaluation_line(summary: dict[str, Any], *, epoch: int, split: str, metric: str,
                    best: float, best_epoch: int) -> str:
  """One line per evaluation: mAP@0.5, the headline average, and the best so far by `metric`
  (the selection metric), marked 'new best' when it is this epoch."""
  at_half = np.flatnonzero(np.isclose(summary['tiou'], 0.5))
  parts = [f'epoch {epoch} {split}']
  if at_half.size:
    parts.append(f'mAP@0.5 {100 * summary["mAP"][int(at_half[0])]:.2f}')
  name, average = headline_average(summary)
  parts.append(f'avg {name} {100 * average:.2f}')
  if best_epoch == epoch:
    parts.append('new best')
  else:
    parts.append(f'best {metric} {100 * best:.2f} at epoch {best_epoch}')
  parts.append(f'{summary["seconds"]:.1f} s')
  return ' | '.join(parts)
