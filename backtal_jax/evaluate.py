"""Scores a detections file against a ground truth: mAP per tIoU and the averages papers quote.

  python -m backtal_jax.evaluate --ground_truth=GT.json --predictions=PRED.json --subset=test \
      [--tiou=0.1,0.2,0.3,0.4,0.5] [--per_class] [--output_json=FILE]

By default both protocols' thresholds are scored (0.1:0.9 for THUMOS14, 0.5:0.95 for
ActivityNet); each quoted average is printed when all of its thresholds were scored. Also printed:
how many ground-truth instances and predictions were counted, and a warning for predicted videos
the ground truth lacks or puts in another subset (their predictions are not scored: a wrong
--subset or a wrong file shows up here, not only as a low mAP). The JSON summary holds all of it,
and the AP of every class.
"""

import collections
import sys
from typing import Any
from typing import Mapping
from typing import Sequence

from absl import app
from absl import flags

from backtal_jax.core import errors
from backtal_jax.core import files
from backtal_jax.evaluation import mean_ap
from backtal_jax.reporting import evaluation_report

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('ground_truth', None, 'Ground-truth JSON (ActivityNet format).')
  flags.DEFINE_string('predictions', None, 'Detections JSON (ActivityNet results).')
  flags.DEFINE_string('subset', None, "Ground-truth subset, e.g. 'test' or 'validation'.")
  flags.DEFINE_list('tiou', [str(t) for t in evaluation_report.DEFAULT_TIOU], 'tIoU thresholds.')
  flags.DEFINE_string('output_json', '', 'If set, the summary is also written here.')
  flags.DEFINE_bool('per_class', False, 'Also print the AP of each class.')
  flags.mark_flags_as_required(['ground_truth', 'predictions', 'subset'])


def parse_thresholds(values: Sequence[str]) -> tuple[float, ...]:
  """tIoU thresholds from their text; each must lie in (0, 1]."""
  try:
    thresholds = tuple(float(v) for v in values)
  except ValueError as e:
    raise errors.UserError(f'--tiou: {e}') from None
  if not thresholds or any(not 0 < t <= 1 for t in thresholds):
    raise errors.UserError(f'--tiou: thresholds must lie in (0, 1], got {list(values)}')
  return thresholds


def counts(ground_truth: Mapping[str, Any], predictions: Mapping[str, Any],
           subset: str) -> dict[str, Any]:
  """Instances and predictions counted, per class too, and the predicted videos left unscored."""
  database, results = ground_truth['database'], predictions['results']
  in_subset = {v for v, entry in database.items() if entry.get('subset') == subset}
  truth = collections.Counter(a['label'] for v in in_subset
                              for a in database[v].get('annotations', ()))
  scored = collections.Counter(d['label'] for v, found in results.items() if v in in_subset
                               for d in found)
  return {
      'ground_truth_videos': len(in_subset),
      'ground_truth_instances': sum(truth.values()),
      'predicted_videos': len(results),
      'predictions': sum(len(found) for found in results.values()),
      'predictions_scored': sum(scored.values()),
      'videos_absent_from_ground_truth': sorted(v for v in results if v not in database),
      'videos_of_other_subsets': sorted(v for v in results if v in database and v not in in_subset),
      'per_class_counts': {c: {'ground_truth': truth[c], 'predictions': scored[c]}
                           for c in sorted(truth)},
  }


def evaluate(ground_truth: mean_ap.JsonSource, predictions: mean_ap.JsonSource, subset: str,
             thresholds: Sequence[float]) -> dict[str, Any]:
  """The summary written as JSON: settings, mAP per tIoU, the quoted averages, the AP of every
  class and the counts."""
  ap_UxC, class_names = mean_ap.average_precision_per_class(
      ground_truth, predictions, subset=subset, tiou_thresholds=thresholds)
  summary = {'ground_truth': ground_truth, 'predictions': predictions, 'subset': subset,
             **evaluation_report.summarize(ap_UxC.mean(axis=1), thresholds),
             'per_class_AP': {c: [float(a) for a in ap_U] for c, ap_U in zip(class_names,
                                                                               ap_UxC.T)}}
  summary.update(counts(mean_ap.load_json(ground_truth, 'ground truth')[0],
                        mean_ap.load_json(predictions, 'predictions')[0], subset))
  return summary


def unscored_warnings(summary: dict[str, Any], shown: int = 5) -> list[str]:
  """One warning per kind of predicted video whose predictions were not scored."""
  warnings = []
  for key, what in (('videos_absent_from_ground_truth', 'absent from the ground truth'),
                    ('videos_of_other_subsets', f'not in subset {summary["subset"]!r}')):
    videos = summary[key]
    if videos:
      more = f' and {len(videos) - shown} more' if len(videos) > shown else ''
      warnings.append(f'warning: {len(videos)} predicted videos are {what}; their predictions '
                      f'are not scored: {", ".join(videos[:shown])}{more}')
  return warnings


def check_output_folder(output_json: str) -> None:
  """Before any work: the summary must have somewhere to go."""
  problem = files.output_file_problem(output_json, '--output_json')
  if problem:
    raise errors.UserError(problem)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  check_output_folder(FLAGS.output_json)
  summary = evaluate(FLAGS.ground_truth, FLAGS.predictions, FLAGS.subset,
                     parse_thresholds(FLAGS.tiou))
  for warning in unscored_warnings(summary):
    print(warning, file=sys.stderr)
  print(evaluation_report.format_counts(summary))
  print(evaluation_report.format_table(summary))
  if FLAGS.per_class:
    print(evaluation_report.format_per_class(summary))
  if FLAGS.output_json:
    files.write_json_atomically(FLAGS.output_json, summary)


if __name__ == '__main__':
  define_flags()
  errors.run(main)
