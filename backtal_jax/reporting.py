"""What an evaluation reports: the averages users quote, a table, JSON written atomically."""

import json
from typing import Any, Sequence

from etils import epath
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


def quoted_averages(map_T: np.ndarray, thresholds: Sequence[float]) -> dict[str, float]:
  """The quoted averages whose thresholds were all scored, and the mean over all of them."""
  averages = {}
  for name, wanted in QUOTED_AVERAGES.items():
    picks = [np.flatnonzero(np.isclose(thresholds, t)) for t in wanted]
    if all(p.size for p in picks):
      averages[name] = float(np.mean([map_T[p[0]] for p in picks]))
  averages['all scored'] = float(map_T.mean())
  return averages


def summarize(map_T: np.ndarray, thresholds: Sequence[float]) -> dict[str, Any]:
  """The summary every evaluation reports: mAP per tIoU and the quoted averages."""
  return {'tiou': list(thresholds), 'mAP': [float(m) for m in map_T],
          'average_mAP': quoted_averages(map_T, thresholds)}


def detections_file(detections: dict[str, list]) -> dict[str, Any]:
  """Detections per video wrapped in the ActivityNet results format."""
  return {'version': 'backtal_jax', 'results': detections, 'external_data': {}}


def format_table(summary: dict[str, Any]) -> str:
  """Plain-text table, mAP in percent."""
  rows = [(f'{t:.2f}', m) for t, m in zip(summary['tiou'], summary['mAP'])]
  rows += [(f'avg {name}', m) for name, m in summary['average_mAP'].items()]
  return '\n'.join([f'{"tIoU":>14}  mAP (%)'] + [f'{k:>14}  {100 * m:7.2f}' for k, m in rows])


def write_json_atomically(path: str | epath.PathLike, data: Any) -> None:
  """Writes through a temporary file in the same folder, so a failure leaves nothing partial.

  On object stores (gs://) one upload already appears whole or not at all, and a rename is a copy
  and a delete (gcsfs first tries GCS's moveTo, which plain buckets refuse after ~30 s of retries),
  so the file is written directly there."""
  path = epath.Path(path)
  if '://' in str(path):
    path.write_text(json.dumps(data, indent=1))
    return
  temporary = path.parent / f'.{path.name}.tmp'
  try:
    temporary.write_text(json.dumps(data, indent=1))
    temporary.replace(path)
  finally:
    if temporary.exists():
      temporary.unlink()
