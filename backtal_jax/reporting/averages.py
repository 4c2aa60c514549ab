"""The numbers an evaluation reports, and the one name each carries everywhere.

Training's console, `evaluate`, `predict`, TensorBoard (`<split>/<name>`), results.json and the
README all use these names, so one name is one number: the mAP at one tIoU (`mAP_0.50`) or the
mean over a fixed set of tIoUs that papers quote (`mAP_avg_0.1_0.7`). An average is reported only
when every one of its thresholds was scored, so it never depends on what else was scored. Names
are plain identifiers (letters, digits, `_` and `.`), valid TensorBoard tags and JSON keys alike.
"""

from typing import Sequence

import numpy as np

# The averages users quote: THUMOS14 papers 0.1:0.7 and 0.3:0.7, the official THUMOS14 print
# 0.1:0.9, ActivityNet 0.5:0.95.
AVERAGES = {
    'mAP_avg_0.1_0.7': (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
    'mAP_avg_0.3_0.7': (0.3, 0.4, 0.5, 0.6, 0.7),
    'mAP_avg_0.1_0.9': (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    'mAP_avg_0.5_0.95': (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95),
}
# What each dataset (config.data.dataset) reports, its headline first; its config scores the
# union of their thresholds (`dataset_thresholds`, checked against the configs by a test).
DATASET_AVERAGES = {
    'thumos14': ('mAP_avg_0.1_0.7', 'mAP_avg_0.3_0.7', 'mAP_avg_0.1_0.9'),
    'activitynet12': ('mAP_avg_0.5_0.95',),
    'hacs': ('mAP_avg_0.5_0.95',),
}
# `evaluate` scores every threshold of every average by default, whatever the dataset.
ALL_THRESHOLDS = tuple(sorted({t for wanted in AVERAGES.values() for t in wanted}))
# results.json written before these names (backtal_jax before issue 22) keyed the averages so.
LEGACY_NAMES = {'0.1:0.7': 'mAP_avg_0.1_0.7', '0.3:0.7': 'mAP_avg_0.3_0.7',
                '0.1:0.9': 'mAP_avg_0.1_0.9', '0.5:0.95': 'mAP_avg_0.5_0.95'}


def tiou_name(tiou: float) -> str:
  """The name of the mAP at one tIoU: 0.5 -> 'mAP_0.50'."""
  return f'mAP_{tiou:.2f}'


def dataset_thresholds(dataset: str) -> tuple[float, ...]:
  """The tIoUs a dataset's config scores: those of the averages it reports."""
  return tuple(sorted({t for name in DATASET_AVERAGES[dataset] for t in AVERAGES[name]}))


def _index(thresholds: Sequence[float], tiou: float) -> int | None:
  matches = np.flatnonzero(np.isclose(thresholds, tiou))
  return int(matches[0]) if matches.size else None


def averages(map_U: Sequence[float], thresholds: Sequence[float]) -> dict[str, float]:
  """Every average of AVERAGES whose thresholds were all scored, by name."""
  found = {}
  for name, wanted in AVERAGES.items():
    picks = [_index(thresholds, t) for t in wanted]
    if None not in picks:
      found[name] = float(np.mean([map_U[p] for p in picks]))
  return found


def map_at(map_U: Sequence[float], thresholds: Sequence[float], tiou: float) -> float | None:
  """The mAP at `tiou`, None when it was not scored."""
  index = _index(thresholds, tiou)
  return None if index is None else float(map_U[index])


def upgrade_names(average_mAP: dict[str, float]) -> dict[str, float]:
  """Averages keyed by the names of today, from a summary written with the legacy ones."""
  return {LEGACY_NAMES.get(name, name): value for name, value in average_mAP.items()
          if name != 'all scored'}
