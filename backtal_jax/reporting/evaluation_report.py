"""What an evaluation reports: the summary (names from averages.py), counts, tables and console
lines."""

import collections
import dataclasses
from typing import Any
from typing import Mapping
from typing import Sequence

from backtal_jax.core import membership
from backtal_jax.reporting import averages


@dataclasses.dataclass
class EvaluationSummary:
  """What every evaluation reports, under the names of `averages`: mAP per tIoU, the quoted
  averages scored, and for training and evaluation-only runs the selection metric's value and the
  seconds taken. Written into results.json and `evaluate --output_json` by `to_json`."""
  tiou: list[float]
  mAP: list[float]
  average_mAP: dict[str, float]
  selection: float | None = None  # config.train.selection_metric's value (training only)
  seconds: float | None = None  # detection and scoring, wall-clock

  @classmethod
  def of(cls, map_U: Sequence[float], thresholds: Sequence[float]) -> 'EvaluationSummary':
    return cls(tiou=[float(t) for t in thresholds], mAP=[float(m) for m in map_U],
               average_mAP=averages.averages(map_U, thresholds))

  def scalars(self) -> dict[str, float]:
    """Every reported number by its name: what TensorBoard, the table and the tests compare."""
    return {**{averages.tiou_name(t): m for t, m in zip(self.tiou, self.mAP)},
            **self.average_mAP}

  def to_json(self) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

  @classmethod
  def from_json(cls, data: dict[str, Any]) -> 'EvaluationSummary':
    """Also reads the summaries of earlier versions (averages under their legacy names)."""
    return cls(tiou=list(data['tiou']), mAP=list(data['mAP']),
               average_mAP=averages.upgrade_names(data['average_mAP']),
               selection=data.get('selection'), seconds=data.get('seconds'))


def detections_file(detections: dict[str, list]) -> dict[str, Any]:
  """Detections per video wrapped in the ActivityNet results format."""
  return {'version': 'backtal_jax', 'results': detections, 'external_data': {}}


def format_table(summary: EvaluationSummary) -> str:
  """Plain-text table of every reported number by its name, mAP in percent."""
  rows = summary.scalars().items()
  width = max(len(name) for name, _ in rows)
  return '\n'.join([f'{"":<{width}}  mAP (%)'] + [f'{k:<{width}}  {100 * m:7.2f}' for k, m in rows])


def counts(ground_truth: Mapping[str, Any], predictions: Mapping[str, Any],
           subset: str) -> dict[str, Any]:
  """Instances and predictions counted, per class too, and the predicted videos outside the
  subset (parsed ground-truth and results JSON); `evaluate` and `predict` both report these."""
  database, results = ground_truth['database'], predictions['results']
  subset_of = {v: entry.get('subset') for v, entry in database.items()}
  in_subset = {v for v, s in subset_of.items() if s == subset}
  absent, elsewhere = membership.videos_outside(results, subset_of, subset)
  truth = collections.Counter(a['label'] for v in in_subset
                              for a in database[v].get('annotations', ()))
  scored = collections.Counter(d['label'] for v, found in results.items() if v in in_subset
                               for d in found)
  return {
      'ground_truth_videos': len(in_subset),
      'ground_truth_instances': sum(truth.values()),
      'predicted_videos': len(results),
      'predictions': sum(len(found) for found in results.values()),
      'predictions_in_subset': sum(scored.values()),
      'videos_absent_from_ground_truth': absent,
      'videos_of_other_subsets': elsewhere,
      'per_class_counts': {c: {'ground_truth': truth[c], 'predictions': scored[c]}
                           for c in sorted(truth)},
  }


def outside_subset_warnings(counted: dict[str, Any], subset: str, shown: int = 5) -> list[str]:
  """One warning per kind of predicted video the subset lacks. The official evaluator counts
  their predictions as false positives, so a wrong --subset or file shows up here, not only as a
  low mAP."""
  warnings = []
  for key, what in (('videos_absent_from_ground_truth', 'absent from the ground truth'),
                    ('videos_of_other_subsets', f'not in subset {subset!r}')):
    videos = counted[key]
    if videos:
      more = f' and {len(videos) - shown} more' if len(videos) > shown else ''
      warnings.append(f'warning: {len(videos)} predicted videos are {what}; their predictions '
                      f'count as false positives: {", ".join(videos[:shown])}{more}')
  return warnings


def format_counts(counted: dict[str, Any], subset: str) -> str:
  return (f'ground truth: {counted["ground_truth_instances"]} instances in '
          f'{counted["ground_truth_videos"]} videos of subset {subset!r}; predictions: '
          f'{counted["predictions"]} in {counted["predicted_videos"]} videos, '
          f'{counted["predictions_in_subset"]} of them in videos of the subset')


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


def headline_average(summary: EvaluationSummary, dataset: str) -> tuple[str, float] | None:
  """The dataset's first reported average that was scored (THUMOS14: 0.1:0.7; ActivityNet:
  0.5:0.95), else the first scored; None when none was."""
  names = [n for n in averages.DATASET_AVERAGES.get(dataset, ()) if n in summary.average_mAP]
  names += list(summary.average_mAP)
  return (names[0], summary.average_mAP[names[0]]) if names else None


def early_zero_note(videos_detected: int, videos: int, class_score_thresh: float) -> str:
  """Why mAP@0.5 reads 0 in the first epochs: few videos have a class whose video score passes
  the threshold yet, so there is little or nothing to score."""
  return (f'(0: {videos_detected} of {videos} videos have a class above '
          f'eval.class_score_thresh={class_score_thresh:g} yet; usual in the first epochs)')


def evaluation_line(summary: EvaluationSummary, *, epoch: int, split: str, metric: str,
                    best: float, best_epoch: int, dataset: str = '', note: str = '') -> str:
  """One line per evaluation: mAP@0.5 (with `note` when it is 0), the dataset's headline
  average, and the best so far by `metric` (the selection metric), marked 'new best' when it is
  this epoch."""
  parts = [f'epoch {epoch} {split}']
  at_half = averages.map_at(summary.mAP, summary.tiou, 0.5)
  if at_half is not None:
    parts.append(f'{averages.tiou_name(0.5)} {100 * at_half:.2f}'
                 + (f' {note}' if note and at_half == 0 else ''))
  headline = headline_average(summary, dataset)
  if headline:
    parts.append(f'{headline[0]} {100 * headline[1]:.2f}')
  if best_epoch == epoch:
    parts.append('new best')
  else:
    parts.append(f'best {metric} {100 * best:.2f} at epoch {best_epoch}')
  parts.append(f'{summary.seconds:.1f} s')
  return ' | '.join(parts)
