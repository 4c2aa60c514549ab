"""The real annotation files shipped inside the package, found by name."""

import importlib.resources
import pathlib

ANNOTATION_FILES = {
    'thumos14_gt': 'gt_thumos14.json',
    'thumos14_clicks_A1': 'THUMOS14_Background-Click-Annotation_A1.txt',
    'thumos14_clicks_A2': 'THUMOS14_Background-Click-Annotation_A2.txt',
    'thumos14_clicks_A3': 'THUMOS14_Background-Click-Annotation_A3.txt',
    'activitynet12_gt': 'activity_net.v1-2.min.json',
}


def annotation_path(name: str) -> pathlib.Path:
  """Path of a shipped annotation file, e.g. annotation_path('thumos14_gt')."""
  if name not in ANNOTATION_FILES:
    raise KeyError(f'Unknown annotation {name!r}; known: {sorted(ANNOTATION_FILES)}')
  root = importlib.resources.files('backtal_jax.data') / 'annotations'
  return pathlib.Path(str(root / ANNOTATION_FILES[name]))
