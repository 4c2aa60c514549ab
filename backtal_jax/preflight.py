"""Pre-flight checks: everything a run will read, validated before its first step.

A run used to meet some problems only after an epoch (a bad value in the selection split) or after
the whole training (a test video missing from the ground truth). Here the config values that are
only used later, and every feature file of both splits, are checked up front, and every problem
found is reported at once (up to MAX_PROBLEMS) in one `PreflightError`.

The files are checked from their .npy headers and small keys only: the features themselves are
never read (HACS is 62 GB). Their values (NaN, inf, float32 overflow) can only be seen when they
are read; `features.read_video` checks them then and names the file and the key.
"""

import collections
import concurrent.futures
import time
import zipfile
import zlib
from typing import Callable

from absl import logging
from etils import epath
import ml_collections
import numpy as np

from backtal_jax import errors
from backtal_jax.data import annotations
from backtal_jax.data import datasets
from backtal_jax.data import features
from backtal_jax.data import supervision

MAX_PROBLEMS = 25  # problems listed in one report; the rest are counted
SCAN_THREADS = 8  # files whose headers are read at once (network file systems hide latency)
COMPUTE_DTYPES = ('float32', 'bfloat16')
SOURCES = ('npz', 'tfds', 'synthetic')
SELECTION_SPLITS = ('test', 'heldout')


class PreflightError(errors.UserError):
  """Every problem the pre-flight checks found."""

  def __init__(self, problems: list[str]):
    listed = problems[:MAX_PROBLEMS]
    more = len(problems) - len(listed)
    lines = [f'{len(problems)} problem(s) found before the first step:'] + [
        f'  - {p}' for p in listed] + ([f'  ... and {more} more'] if more else [])
    super().__init__('\n'.join(lines))
    self.problems = problems


def _raised(check: Callable[[], object], prefix: str = '') -> list[str]:
  """The message of the ValueError, KeyError or OSError `check` raises, as a problem."""
  try:
    check()
  except (ValueError, KeyError, OSError) as e:
    return [prefix + (e.args[0] if isinstance(e, KeyError) and e.args else str(e))]
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
  problems += _raised(lambda: datasets.check_shapes(config))
  if not config.eval.ground_truth:
    problems.append('config.eval.ground_truth is not set: give the ground-truth JSON of the '
                    'dataset')
  else:
    problems += _raised(lambda: ground_truth_classes(config))
  return problems


def ground_truth_classes(config: ml_collections.ConfigDict) -> None:
  ground_truth = annotations.load_ground_truth(config.eval.ground_truth)
  if ground_truth.num_classes != config.model.num_classes:
    raise ValueError(f'{ground_truth.path} lists {ground_truth.num_classes} classes but '
                     f'config.model.num_classes is {config.model.num_classes}')
  ground_truth.subset(config.eval.subset)


def check_config(config: ml_collections.ConfigDict, device_count: int) -> None:
  """Raises PreflightError listing every problem of the config."""
  problems = config_problems(config, device_count)
  if problems:
    raise PreflightError(problems)


def _array_header(archive: np.lib.npyio.NpzFile, key: str) -> tuple[tuple[int, ...], np.dtype]:
  """Shape and dtype of one member, from its .npy header alone."""
  with archive.zip.open(f'{key}.npy') as f:
    version = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read(f)
  return shape, dtype


def _feature_problems(archive, key: str, half_width: int, num_segments: int) -> list[str]:
  shape, dtype = _array_header(archive, key)
  if dtype.kind not in 'biuf':
    return [f'dtype {dtype}, expected numbers']
  if shape not in ((half_width, num_segments), (num_segments, half_width)):
    return [f'shape {shape}, expected ({half_width}, {num_segments}) channels-first or '
            f'({num_segments}, {half_width}) channels-last']
  return []


def _small_array(archive, key: str) -> np.ndarray | str:
  """The array, or why it is not a usable numeric array."""
  value = archive[key]
  if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
    return f'dtype {value.dtype}, expected numbers'
  if not np.isfinite(value).all():
    return f'{value.size - np.isfinite(value).sum()} non-finite values'
  return value


def _cls_label_problems(value: np.ndarray, num_classes: int) -> list[str]:
  if value.shape != (num_classes,):
    return [f'shape {value.shape}, expected ({num_classes},)']
  if not np.isin(value, (0, 1)).all():
    return [f'values {np.unique(value)[:10].tolist()}, expected 0 or 1 (multi-hot)']
  return []


def _point_label_problems(value: np.ndarray, num_segments: int, num_classes: int) -> list[str]:
  value = np.ravel(value)
  if value.shape != (num_segments,):
    return [f'length {value.size}, expected {num_segments} (one label per snippet)']
  valid = (value == features.IGNORE_LABEL) | ((value >= 0) & (value <= num_classes) &
                                              (value == np.round(value)))
  if not valid.all():
    return [f'values {np.unique(value[~valid])[:10].tolist()}, expected '
            f'{features.IGNORE_LABEL} (no click), 0..{num_classes - 1} (action click) or '
            f'{num_classes} (background click)']
  return []


def _metadata_problems(value: np.ndarray, key: str) -> list[str]:
  if value.size != 1:
    return [f'shape {value.shape}, expected a scalar']
  lowest = {'frame_num': (1, '>= 1'), 'fps': (0, '> 0'), 'duration': (0, '> 0')}
  bound, expected = lowest[key]
  number = value.reshape(()).item()
  if (key == 'frame_num' and number < bound) or (key != 'frame_num' and number <= bound):
    return [f'value {number}, expected {expected}']
  return []


def scan_file(path, *, num_classes: int, half_width: int, num_segments: int,
              train: bool) -> tuple[str | None, list[str]]:
  """(vid_name or None, problems) of one feature file, reading headers and small keys only."""
  try:
    archive = features.open_npz(path)
  except features.FeatureFileError as e:
    return None, [str(e)]
  required = ['feat_spa', 'feat_tem', 'cls_label', 'vid_name']
  required += ['point_label'] if train else ['frame_num', 'fps', 'duration']
  problems, vid_name = [], None
  with archive:
    missing = [key for key in required if key not in archive.files]
    if missing:
      problems.append(f'{path}: keys {missing} missing (the file has {sorted(archive.files)})')
    for key in (k for k in required if k not in missing):
      try:
        if key.startswith('feat_'):
          found = _feature_problems(archive, key, half_width, num_segments)
        elif key == 'vid_name':
          value = archive[key]
          found = [] if value.dtype.kind in 'US' and value.size == 1 else [
              f'expected one string, got {value.dtype} of shape {value.shape}']
          vid_name = str(value.reshape(()).item()) if not found else None
        else:
          value = _small_array(archive, key)
          found = [value] if isinstance(value, str) else (
              _cls_label_problems(value, num_classes) if key == 'cls_label' else
              _point_label_problems(value, num_segments, num_classes) if key == 'point_label'
              else _metadata_problems(value, key))
      except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        found = [f'unreadable, truncated or corrupt ({e})']
      problems += [f'{path}: key {key!r}: {p}' for p in found]
  return vid_name, problems


def scan_split(root, split: str, *, config: ml_collections.ConfigDict, train: bool
               ) -> tuple[dict[str, list], list[str]]:
  """({vid_name: [paths]}, problems) of every file of one split."""
  try:
    paths = features.list_split(root, split)
  except FileNotFoundError as e:
    return {}, [str(e)]
  scan = lambda path: scan_file(
      path, num_classes=config.model.num_classes, half_width=config.data.feature_dim // 2,
      num_segments=config.data.num_segments, train=train)
  with concurrent.futures.ThreadPoolExecutor(SCAN_THREADS) as pool:
    results = list(pool.map(scan, paths))
  names, problems = collections.defaultdict(list), []
  for path, (vid_name, found) in zip(paths, results):
    problems += found
    if vid_name is not None:
      names[vid_name].append(path)
  for name, where in names.items():
    if len(where) > 1:
      problems.append(f'{split}: vid_name {name!r} is in {len(where)} files ({where[0]}, '
                      f'{where[1]}, ...); each video must appear once (its detections would be '
                      'overwritten)')
  return names, problems


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
  train_names, problems = scan_split(root, config.data.train_split, config=config, train=True)
  test_names, test_problems = scan_split(root, config.data.test_split, config=config, train=False)
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
