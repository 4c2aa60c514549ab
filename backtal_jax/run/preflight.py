"""Pre-flight checks: everything a run will read, validated before its first step.

A run used to meet some problems only after an epoch (a bad value in the selection split) or after
the whole training (a test video missing from the ground truth). Here the config values that are
only used later, and every feature file of both splits, are checked up front, and every problem
found is reported at once (up to MAX_PROBLEMS) in one `PreflightError`.

The files are checked from their .npy headers and small keys only: the features themselves are
never read (HACS is 62 GB). Their values (NaN, inf, float32 overflow) can only be seen when they
are read; `features.read_video` checks them then and names the file and the key.
"""

import time
from typing import Callable

from absl import logging
from etils import epath
import ml_collections
import numpy as np

from backtal_jax.core import errors
from backtal_jax.data import annotations
from backtal_jax.data import datasets
from backtal_jax.data import feature_scan
from backtal_jax.data import supervision
from backtal_jax.model import affinity_select

COMPUTE_DTYPES = ('float32', 'bfloat16')
SOURCES = ('npz', 'tfds', 'synthetic')
SELECTION_SPLITS = ('test', 'heldout')


class PreflightError(errors.Problems):
  """Every problem the pre-flight checks found."""

  def __init__(self, problems: list[str]):
    super().__init__(problems, 'before the first step')


def _raised(check: Callable[[], object]) -> list[str]:
  """The message of the ValueError, KeyError or OSError `check` raises, as a problem: the existing
  checks of datasets, supervision and annotations, collected instead of stopping at the first."""
  try:
    check()
  except (ValueError, KeyError, OSError) as e:
    return [e.args[0] if isinstance(e, KeyError) and e.args else str(e)]
  return []


def _at_least_one(config: ml_collections.ConfigDict, field: str) -> list[str]:
  group, name = field.split('.')
  value = config[group][name]
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    return [f'config.{field} is {value!r}, expected an integer >= 1']
  return []


def batch_size_problems(config: ml_collections.ConfigDict, device_count: int) -> list[str]:
  problems = []
  for field in ('train.batch_size', 'eval.batch_size'):
    group, name = field.split('.')
    size = config[group][name]
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % device_count:
      problems.append(f'config.{field} is {size!r}, expected a positive multiple of the device '
                      f'count ({device_count}): each device takes batch_size / {device_count} '
                      'videos')
  return problems


def selection_metric_problems(name: str, tiou_thresholds) -> list[str]:
  """The metric must be one the evaluation will compute (train.selection_metric reads it)."""
  if name == 'average':
    return []
  if isinstance(name, str) and name.startswith('map@'):
    try:
      if np.isclose(tiou_thresholds, float(name[4:])).any():
        return []
    except ValueError:
      pass
  return [f"config.train.selection_metric is {name!r}, expected 'average' or 'map@X' with X "
          f'among config.eval.tiou_thresholds {list(tiou_thresholds)}']


def config_problems(config: ml_collections.ConfigDict, device_count: int) -> list[str]:
  """Config values used later in the run (evaluation, checkpoints, logging), checked now."""
  problems = batch_size_problems(config, device_count)
  for field in ('train.num_epochs', 'train.log_every_steps', 'train.max_checkpoints_to_keep',
                'eval.every_epochs', 'data.num_segments'):
    problems += _at_least_one(config, field)
  thresholds = tuple(config.eval.tiou_thresholds)
  if not thresholds or not all(0 < t <= 1 for t in thresholds):
    problems.append(f'config.eval.tiou_thresholds is {list(thresholds)}, expected values in (0, 1]')
  problems += selection_metric_problems(config.train.selection_metric, thresholds)
  if config.train.selection_split not in SELECTION_SPLITS:
    problems.append(f'config.train.selection_split is {config.train.selection_split!r}, expected '
                    f'one of {SELECTION_SPLITS}')
  elif config.train.selection_split == 'heldout':
    problems += _raised(lambda: datasets.heldout_indices(10, config.train.heldout_fraction, 0))
  problems += _raised(lambda: supervision.check_supervision(config.train.supervision))
  problems += _raised(lambda: affinity_select.check_affinity_kernel(config.model.affinity_kernel))
  if config.model.dtype not in COMPUTE_DTYPES:
    problems.append(f'config.model.dtype is {config.model.dtype!r}, expected one of '
                    f'{COMPUTE_DTYPES}')
  if (isinstance(config.data.num_segments, int) and
      int(config.data.num_segments * config.model.topk_ratio) < 1):
    problems.append(f'config.model.topk_ratio ({config.model.topk_ratio}) x config.data.'
                    f'num_segments ({config.data.num_segments}) is below 1: the video score '
                    'would average no snippet')
  problems += data_config_problems(config)
  return problems


def data_config_problems(config: ml_collections.ConfigDict) -> list[str]:
  problems = []
  if config.data.source not in SOURCES:
    problems.append(f'config.data.source is {config.data.source!r}, expected one of {SOURCES}')
  elif config.data.source == 'npz' and not config.data.features_root:
    problems.append(
        'config.data.features_root is not set: point it at the directory that holds '
        f'{config.data.train_split}/*.npz and {config.data.test_split}/*.npz, the official I3D '
        'features published with BackTAL (github.com/VividLe/BackTAL, "Data Preparation"), e.g. '
        '--config.data.features_root=/data/THUMOS14; or run a :synthetic config variant.')
  elif config.data.source == 'npz':
    for split in (config.data.train_split, config.data.test_split):
      if not (epath.Path(config.data.features_root) / split).is_dir():
        problems.append(f'config.data.features_root: {config.data.features_root}/{split} is not '
                        'a directory (expected one .npz per video of that split in it)')
  problems += _raised(lambda: datasets.check_shapes(config))
  if not config.eval.ground_truth:
    problems.append('config.eval.ground_truth is not set: give the ground-truth JSON of the '
                    'dataset')
  else:
    problems += _raised(lambda: ground_truth_classes(config))
  return problems


def ground_truth_classes(config: ml_collections.ConfigDict) -> None:
  ground_truth = annotations.load_ground_truth(config.eval.ground_truth)
  datasets.check_class_count(ground_truth, config)
  ground_truth.subset(config.eval.subset)


def check_config(config: ml_collections.ConfigDict, device_count: int) -> None:
  """Raises PreflightError listing every problem of the config."""
  problems = config_problems(config, device_count)
  if problems:
    raise PreflightError(problems)


def ground_truth_problems(names: dict[str, list], ground_truth: annotations.GroundTruth,
                          subset: str | None, why: str) -> list[str]:
  """Videos absent from the ground truth (or from its `subset`, if given)."""
  problems = []
  for name, where in names.items():
    video = ground_truth.videos.get(name)
    if video is None or (subset is not None and video.subset != subset):
      place = f'subset {subset!r} of ' if subset is not None else ''
      problems.append(f'{where[0]}: key \'vid_name\': {name!r} is not a video of {place}'
                      f'{ground_truth.path} ({why})')
  return problems


def data_problems(config: ml_collections.ConfigDict, root: epath.Path) -> list[str]:
  """Every file of both splits, and their videos against the ground truth."""
  ground_truth = annotations.load_ground_truth(config.eval.ground_truth)
  shapes = dict(num_classes=config.model.num_classes, feature_dim=config.data.feature_dim,
                num_segments=config.data.num_segments)
  train_names, problems = feature_scan.scan_split(root, config.data.train_split, train=True,
                                                  **shapes)
  test_names, test_problems = feature_scan.scan_split(root, config.data.test_split, train=False,
                                                      **shapes)
  problems += test_problems
  problems += ground_truth_problems(test_names, ground_truth, config.eval.subset,
                                    'test videos are scored and plotted against it')
  if (config.train.selection_split == 'heldout' or
      supervision.needs_action_clicks(config.train.supervision)):
    problems += ground_truth_problems(
        train_names, ground_truth, None, 'held-out selection and action clicks read it')
  return problems


def check_data(config: ml_collections.ConfigDict, root: epath.Path) -> None:
  """Raises PreflightError listing every problem of the feature files under `root`."""
  if config.data.source == 'tfds':
    logging.info('Feature files not scanned: a TFDS dataset was validated when it was built.')
    return
  started = time.monotonic()
  problems = data_problems(config, root)
  logging.info('Pre-flight check of the feature files under %s: %.1f s', root,
               time.monotonic() - started)
  if problems:
    raise PreflightError(problems)
