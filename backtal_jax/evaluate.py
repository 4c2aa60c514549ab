"""Scores a detections file against a ground truth: mAP per tIoU and the averages papers quote.

  python -m backtal_jax.evaluate --ground_truth=GT.json --predictions=PRED.json --subset=test \
      [--tiou=0.1,0.2,0.3,0.4,0.5] [--output_json=FILE]

By default both protocols' thresholds are scored (0.1:0.9 for THUMOS14, 0.5:0.95 for
ActivityNet); each quoted average is printed when all of its thresholds were scored.
"""

import os
from typing import Any, Sequence

from absl import app
from absl import flags

from backtal_jax import errors
from backtal_jax import evaluation
from backtal_jax import reporting

_GROUND_TRUTH = flags.DEFINE_string('ground_truth', None, 'Ground-truth JSON (ActivityNet format).')
_PREDICTIONS = flags.DEFINE_string('predictions', None, 'Detections JSON (ActivityNet results).')
_SUBSET = flags.DEFINE_string('subset', None, "Ground-truth subset, e.g. 'test' or 'validation'.")
_TIOU = flags.DEFINE_list('tiou', [str(t) for t in reporting.DEFAULT_TIOU], 'tIoU thresholds.')
_OUTPUT_JSON = flags.DEFINE_string('output_json', '', 'If set, the summary is also written here.')


def parse_thresholds(values: Sequence[str]) -> tuple[float, ...]:
  """tIoU thresholds from their text; each must lie in (0, 1]."""
  try:
    thresholds = tuple(float(v) for v in values)
  except ValueError as e:
    raise errors.UserError(f'--tiou: {e}') from None
  if not thresholds or any(not 0 < t <= 1 for t in thresholds):
    raise errors.UserError(f'--tiou: thresholds must lie in (0, 1], got {list(values)}')
  return thresholds


def evaluate(ground_truth: evaluation.JsonSource, predictions: evaluation.JsonSource, subset: str,
             thresholds: Sequence[float]) -> dict[str, Any]:
  """The summary written as JSON: settings, mAP per tIoU and the quoted averages."""
  map_T, _ = evaluation.detection_map(ground_truth, predictions, subset=subset,
                                      tiou_thresholds=thresholds)
  return {'ground_truth': ground_truth, 'predictions': predictions, 'subset': subset,
          **reporting.summarize(map_T, thresholds)}


def check_output_folder(output_json: str) -> None:
  """Before any work: the summary must have somewhere to go."""
  folder = os.path.dirname(os.path.abspath(output_json)) if output_json else ''
  if folder and not os.path.isdir(folder):
    raise errors.UserError(f'--output_json={output_json}: folder {folder} does not exist')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  check_output_folder(_OUTPUT_JSON.value)
  summary = evaluate(_GROUND_TRUTH.value, _PREDICTIONS.value, _SUBSET.value,
                     parse_thresholds(_TIOU.value))
  print(reporting.format_table(summary))
  if _OUTPUT_JSON.value:
    reporting.write_json_atomically(_OUTPUT_JSON.value, summary)


if __name__ == '__main__':
  flags.mark_flags_as_required(['ground_truth', 'predictions', 'subset'])
  errors.run(main)
