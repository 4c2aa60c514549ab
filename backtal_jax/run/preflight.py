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
from typing import Sequence

from absl import logging
from etils import epath
import ml_collections

from backtal_jax.core import errors
from backtal_jax.core import fields
from backtal_jax.core import membership
from backtal_jax.core import sharding
from backtal_jax.data import annotations
from backtal_jax.data import datasets
from backtal_jax.data import feature_scan
from backtal_jax.data import supervision
from backtal_jax.evaluation import evaluator
from backtal_jax.evaluation import postprocess
from backtal_jax.model import losses
from backtal_jax.model import network
from backtal_jax.run import optimizer
from backtal_jax.run import run_fields


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


# Every config field's declaration (core/fields.py), each made by the code that owns the field.
DECLARED_FIELDS = {
    **network.CONFIG_FIELDS, **losses.CONFIG_FIELDS, **datasets.CONFIG_FIELDS,
    **supervision.CONFIG_FIELDS, **postprocess.CONFIG_FIELDS, **evaluator.CONFIG_FIELDS,
    **optimizer.CONFIG_FIELDS, **run_fields.CONFIG_FIELDS,
}


def batch_size_problems(config: ml_collections.ConfigDict, device_count: int,
                        names: Sequence[str] = ('train.batch_size', 'eval.batch_size')
                        ) -> list[str]:
  expected = (f'a positive multiple of the device count ({device_count}): each device takes '
              f'batch_size / {device_count} videos')
  return [fields.problem(name, fields.value_at(config, name), expected) for name in names
          if not sharding.divides_over(fields.value_at(config, name), device_count)]


def config_problems(config: ml_collections.ConfigDict, device_count: int, *,
                    training: bool = True) -> list[str]:
  """Every declared field in its range, then the rules that tie fields together (for the fields
  that passed) and, when `training` (or evaluating a split), the data settings."""
  return checked_config(config, device_count, training=training)[0]


def checked_config(config: ml_collections.ConfigDict, device_count: int, *,
                   training: bool = True
                   ) -> tuple[list[str], annotations.GroundTruth | None]:
  """config_problems, and the ground truth loaded to check it (None unless `training`)."""
  ground_truth = None
  bad = {name: fields.problem(name, value, expected)
         for name, value, expected in fields.violations(config, DECLARED_FIELDS)}
  problems = list(bad.values())
  good = lambda *names: not any(name in bad for name in names)
  batches = ('train.batch_size', 'eval.batch_size') if training else ('eval.batch_size',)
  problems += batch_size_problems(config, device_count, [n for n in batches if good(n)])
  if good('train.selection_metric', 'eval.tiou_thresholds'):
    problems += evaluator.selection_metric_problems(config.train.selection_metric,
                                                    config.eval.tiou_thresholds)
  if not any(name.startswith('eval.') and 'thresh' in name for name in bad):
    problems += postprocess.threshold_problems(config.eval)
  if good('data.num_segments', 'model.topk_ratio') and (
      int(config.data.num_segments * config.model.topk_ratio) < 1):
    problems.append(f'config.model.topk_ratio ({config.model.topk_ratio}) x config.data.'
                    f'num_segments ({config.data.num_segments}) is below 1: the video score '
                    'would average no snippet')
  if training and not any(name.startswith('data.') or name == 'eval.ground_truth'
                          for name in bad):
    problems += data_config_problems(config)
    if config.eval.ground_truth:
      ground_truth, found = loaded_ground_truth(config)
      problems += found
  return problems, ground_truth


def data_config_problems(config: ml_collections.ConfigDict) -> list[str]:
  problems = []
  if config.data.source == 'npz' and not config.data.features_root:
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
  return problems


def loaded_ground_truth(config: ml_collections.ConfigDict
                        ) -> tuple[annotations.GroundTruth | None, list[str]]:
  """The run's ground truth, read once here and handed down (datasets, the file scan), and
  whether it fits the config (its class count, its subset)."""
  try:
    ground_truth = annotations.load_ground_truth(config.eval.ground_truth)
  except (ValueError, OSError) as e:
    return None, [str(e)]
  return ground_truth, _raised(lambda: (datasets.check_class_count(ground_truth, config),
                                        ground_truth.subset(config.eval.subset)))


def check_config(config: ml_collections.ConfigDict, device_count: int, *,
                 training: bool = True) -> annotations.GroundTruth | None:
  """Raises PreflightError listing every problem of the config (see config_problems); returns
  the ground truth it read when `training`, for the run to hand down."""
  problems, ground_truth = checked_config(config, device_count, training=training)
  if problems:
    raise PreflightError(problems)
  return ground_truth


def ground_truth_problems(names: dict[str, list], ground_truth: annotations.GroundTruth,
                          subset: str | None, why: str) -> list[str]:
  """Videos absent from the ground truth (or from its `subset`, if given)."""
  absent, elsewhere = membership.videos_outside(names, ground_truth.subset_of, subset)
  place = f'subset {subset!r} of ' if subset is not None else ''
  return [f'{names[name][0]}: key \'vid_name\': {name!r} is not a video of {place}'
          f'{ground_truth.path} ({why})' for name in sorted(absent + elsewhere)]


def data_problems(config: ml_collections.ConfigDict, root: epath.Path,
                  ground_truth: annotations.GroundTruth | None = None) -> list[str]:
  """Every file of both splits, and their videos against the ground truth (read if not given)."""
  ground_truth = ground_truth or annotations.load_ground_truth(config.eval.ground_truth)
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


def check_data(config: ml_collections.ConfigDict, root: epath.Path,
               ground_truth: annotations.GroundTruth | None = None) -> None:
  """Raises PreflightError listing every problem of the feature files under `root`."""
  if config.data.source == 'tfds':
    logging.info('Feature files not scanned: a TFDS dataset was validated when it was built.')
    return
  started = time.monotonic()
  problems = data_problems(config, root, ground_truth)
  logging.info('Pre-flight check of the feature files under %s: %.1f s', root,
               time.monotonic() - started)
  if problems:
    raise PreflightError(problems)
