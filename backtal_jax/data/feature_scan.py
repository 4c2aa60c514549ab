"""Checks of the official feature files from their .npy headers and small keys only.

The features themselves are never read (HACS holds 62 GB of them), so a scan of every file costs
about a second for THUMOS14: the training pre-flight (`backtal_jax.run.preflight`) and the TFDS
builder run it before any work. Values (NaN, inf, float32 overflow) are checked by
`features.read_video` when the features are read.
"""

import collections
import concurrent.futures
import zipfile
import zlib

import numpy as np

from backtal_jax.data import features

SCAN_THREADS = 8  # files whose headers are read at once (network file systems hide latency)


def _feature_problems(archive, key: str, half_width: int, num_segments: int) -> list[str]:
  with archive.zip.open(f'{key}.npy') as member:
    shape, dtype = features.npy_header(member)
  if not features.real_numbers(dtype):
    return [f'dtype {dtype}, expected real numbers']
  if shape not in ((half_width, num_segments), (num_segments, half_width)):
    return [f'shape {shape}, expected ({half_width}, {num_segments}) channels-first or '
            f'({num_segments}, {half_width}) channels-last']
  return []


def _small_array(archive, key: str) -> np.ndarray | str:
  """The array, or why it is not a usable numeric array."""
  value = archive[key]
  problems = features.numeric_problems(value)
  return problems[0] if problems else value


def _vid_name(archive) -> tuple[str | None, list[str]]:
  value = archive['vid_name']
  if value.dtype.kind not in 'US' or value.size != 1:
    return None, [f'expected one string, got {value.dtype} of shape {value.shape}']
  return str(value.reshape(()).item()), []


def _small_key_problems(archive, key: str, num_classes: int, num_segments: int) -> list[str]:
  value = _small_array(archive, key)
  if isinstance(value, str):
    return [value]
  if key == 'cls_label':
    return features.cls_label_problems(value, num_classes)
  if key == 'point_label':
    return features.point_label_problems(value, num_segments, num_classes)
  return features.metadata_problems(value, key)


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
          vid_name, found = _vid_name(archive)
        else:
          found = _small_key_problems(archive, key, num_classes, num_segments)
      except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        found = [f'unreadable, truncated or corrupt ({e})']
      problems += [f'{path}: key {key!r}: {p}' for p in found]
  return vid_name, problems


def scan_split(root, split: str, *, num_classes: int, feature_dim: int, num_segments: int,
               train: bool) -> tuple[dict[str, list], list[str]]:
  """({vid_name: [paths]}, problems) of every file of one split."""
  try:
    paths = features.list_split(root, split)
  except FileNotFoundError as e:
    return {}, [str(e)]
  scan = lambda path: scan_file(path, num_classes=num_classes, half_width=feature_dim // 2,
                                num_segments=num_segments, train=train)
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
