"""Reader for the official BackTAL feature files: one .npz per video.

Each file holds `feat_spa` and `feat_tem` (RGB and flow I3D features, stored channels-first
[F/2, T]), `cls_label` (multi-hot [C]), `vid_name`, and for training `point_label` (length T: -100
for unlabelled snippets, a class index for action clicks, C for background clicks), for testing
`frame_num`, `fps` and `duration`. A bad file fails with one `FeatureFileError` that names the file
and the key, so that a broken 38k-file HACS export is fixed in one look rather than debugged from a
shape error deep inside the model.
"""

import dataclasses
import pathlib
import zipfile
import zlib

import numpy as np

from backtal_jax.core import errors
from backtal_jax.core.labels import IGNORE_LABEL

METADATA_MISSING = -1  # frame_num, fps and duration of videos whose file does not store them
NPZ_MAGIC = b'PK\x03\x04'  # every .npz is a zip archive
NPY_MAGIC = b'\x93NUMPY'


class FeatureFileError(errors.UserError):
  """A feature file that is missing, unreadable or inconsistent."""

  def __init__(self, path, key: str, problem: str):
    super().__init__(f'{path}: key {key!r}: {problem}')
    self.path = path
    self.key = key


@dataclasses.dataclass(frozen=True)
class VideoRecord:
  """One video's features and labels, channels-last, validated.

  `click_labels_T` is None when the file has no `point_label`; `frame_num`, `fps` and `duration`
  are None when the file does not store them (the official training files do not).
  """

  vid_name: str
  features_SxF: np.ndarray  # float32, [spa, tem] concatenated along channels
  video_labels_C: np.ndarray  # float32 multi-hot
  click_labels_T: np.ndarray | None  # int32: IGNORE_LABEL, a class index, or C for background
  frame_num: int | None
  fps: float | None
  duration: float | None


def list_split(features_root, split: str) -> list[pathlib.Path]:
  """The split's .npz files, sorted by file name as the official loader orders them."""
  split_dir = pathlib.Path(features_root) / split
  if not split_dir.is_dir():
    raise FileNotFoundError(
        f'Feature directory {split_dir} does not exist: expected one .npz per video in '
        f'<features_root>/<split>/ (features_root={features_root!s}, split={split!r}).')
  files = sorted(p for p in split_dir.iterdir() if p.name.endswith('.npz'))
  if not files:
    raise FileNotFoundError(f'Feature directory {split_dir} holds no .npz files.')
  return files


def _read_key(archive, path, key: str) -> np.ndarray:
  """Reads one array, turning every archive-level failure into a FeatureFileError."""
  if key not in archive.files:
    raise FeatureFileError(path, key, f'missing (the file has {sorted(archive.files)})')
  try:
    return archive[key]
  except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    raise FeatureFileError(path, key, f'unreadable, truncated or corrupt ({e})') from e


def real_numbers(dtype: np.dtype, allow_bool: bool = False) -> bool:
  """Integers or floats (and booleans where 0/1 labels are read): no complex, text or object."""
  return ((np.issubdtype(dtype, np.number) and not np.issubdtype(dtype, np.complexfloating))
          or (allow_bool and dtype == np.bool_))


def numeric_problems(value: np.ndarray, allow_bool: bool = True) -> list[str]:
  """Real numbers, all finite: the rule for every numeric key, in the scan and in the reader."""
  if not real_numbers(value.dtype, allow_bool):
    return [f'expected {"" if allow_bool else "non-boolean "}real numbers, got dtype '
            f'{value.dtype}']
  if not np.all(np.isfinite(value)):
    return [f'{np.size(value) - np.isfinite(value).sum()} non-finite values']
  return []


def cls_label_problems(value: np.ndarray, num_classes: int) -> list[str]:
  if value.shape != (num_classes,):
    return [f'shape {value.shape}, expected ({num_classes},)']
  if not np.isin(value, (0, 1)).all():
    return [f'values {np.unique(value)[:10].tolist()}, expected 0 or 1 (multi-hot)']
  return []


def point_label_problems(value: np.ndarray, num_snippets: int, num_classes: int) -> list[str]:
  value = np.ravel(value)
  if value.shape != (num_snippets,):
    return [f'length {value.size}, expected {num_snippets} (one label per snippet)']
  valid = (value == IGNORE_LABEL) | ((value >= 0) & (value <= num_classes) &
                                     (value == np.round(value)))
  if not valid.all():
    return [f'values {np.unique(value[~valid])[:10].tolist()}, expected '
            f'{IGNORE_LABEL} (no click), 0..{num_classes - 1} (action click) or '
            f'{num_classes} (background click)']
  return []


def metadata_problems(value: np.ndarray, key: str) -> list[str]:
  """frame_num >= 1, fps > 0, duration > 0, each one number."""
  if np.size(value) != 1:
    return [f'expected a scalar, got shape {np.shape(value)}']
  found = numeric_problems(np.asarray(value))
  if found:
    return found
  number = np.asarray(value).reshape(()).item()
  if key == 'frame_num' and not number >= 1:
    return [f'value {number}, expected >= 1']
  if key != 'frame_num' and not number > 0:
    return [f'value {number}, expected > 0']
  return []


def _checked(path, key: str, value: np.ndarray, problems: list[str]) -> np.ndarray:
  if problems:
    raise FeatureFileError(path, key, problems[0])
  return value


def _as_numeric(path, key: str, value: np.ndarray, allow_bool: bool = True) -> np.ndarray:
  return _checked(path, key, value, numeric_problems(value, allow_bool))


def check_unambiguous(path, key: str, shape: tuple[int, ...], half_width: int) -> None:
  """A [W, W] half reads both ways (a video of W snippets at width W: 1024 snippets at the
  official width): refused rather than guessed."""
  if tuple(shape) == (half_width, half_width):
    raise FeatureFileError(
        path, key, f'shape {tuple(shape)} reads both channels-first and channels-last (as many '
        'snippets as channels); save the video as one .npy [T, F] array (snippets x RGB then flow '
        'features), which reads one way only')


def check_snippet_count(path, key: str, num_snippets: int) -> None:
  if num_snippets < 1:
    raise FeatureFileError(path, key, 'no snippet (T = 0): nothing to localise')


def _channels_last(path, key: str, value: np.ndarray, half_width: int,
                   num_segments: int | None) -> np.ndarray:
  """[half_width, T] (official) or [T, half_width] -> [T, half_width], decided by the shapes.

  With num_segments unknown, an array with half_width rows is read channels-first, as the official
  files store them.
  """
  if value.ndim != 2:
    raise FeatureFileError(path, key, f'expected a 2-D array, got shape {value.shape}')
  if num_segments is None:
    check_unambiguous(path, key, value.shape, half_width)
    channels_first = value.shape[0] == half_width
    channels_last = not channels_first and value.shape[1] == half_width
  else:
    channels_first = value.shape == (half_width, num_segments)
    channels_last = not channels_first and value.shape == (num_segments, half_width)
  if not (channels_first or channels_last):
    expected = 'T' if num_segments is None else num_segments
    raise FeatureFileError(
        path, key, f'shape {value.shape}, expected ({half_width}, {expected}) channels-first or '
        f'({expected}, {half_width}) channels-last')
  return value.T if channels_first else value


def _feature_half(archive, path, key: str, half_width: int, num_segments: int | None
                  ) -> np.ndarray:
  """One half of the features, channels-last float32, checked after that cast: float64 values
  beyond float32's range pass the check on the stored values and become inf in the model."""
  value = _channels_last(
      path, key, _as_numeric(path, key, _read_key(archive, path, key), allow_bool=False),
      half_width, num_segments)
  return as_float32(path, key, value)


def as_float32(path, key: str, value: np.ndarray) -> np.ndarray:
  """`value` as float32, the dtype the model reads, refused if a finite value overflows it."""
  with np.errstate(over='ignore'):
    value_SxW = value.astype(np.float32)
  finite = np.isfinite(value_SxW)
  if not finite.all():
    raise FeatureFileError(
        path, key, f'{finite.size - finite.sum()} values overflow float32, the dtype the model '
        f'reads (largest magnitude {np.abs(value).max():.4g}, float32 holds up to '
        f'{np.finfo(np.float32).max:.4g})')
  return value_SxW


def _scalar(path, key: str, value: np.ndarray) -> np.ndarray:
  return _checked(path, key, value, metadata_problems(value, key)).reshape(())


def _click_labels(path, value: np.ndarray, num_snippets: int, num_classes: int) -> np.ndarray:
  value = _as_numeric(path, 'point_label', np.ravel(value))
  return _checked(path, 'point_label', value,
                  point_label_problems(value, num_snippets, num_classes)).astype(np.int32)


def open_npz(path) -> np.lib.npyio.NpzFile:
  """The archive, opened lazily (arrays are read on access), or a FeatureFileError that says what
  the file is instead: numpy reports any non-zip file as pickled data, which misleads."""
  first_key = 'feat_spa'
  try:
    with open(path, 'rb') as f:
      magic = f.read(len(NPZ_MAGIC))
  except OSError as e:
    raise FeatureFileError(path, first_key, f'cannot be opened ({e})') from e
  if magic != NPZ_MAGIC:
    kind = ('an empty file' if not magic else 'a bare .npy array' if NPY_MAGIC.startswith(magic)
            else f'it starts with {magic!r}')
    raise FeatureFileError(path, first_key,
                           f'not a valid .npz file ({kind}; expected a zip archive of .npy arrays)')
  try:
    return np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise FeatureFileError(path, first_key, f'not a readable .npz archive ({e})') from e


def read_name(archive: np.lib.npyio.NpzFile, path) -> np.ndarray:
  """The file's `vid_name`, checked to be one string."""
  vid_name = _read_key(archive, path, 'vid_name')
  if vid_name.dtype.kind not in 'US' or vid_name.size != 1:
    raise FeatureFileError(
        path, 'vid_name', f'expected one string, got {vid_name.dtype} of shape {vid_name.shape}')
  return vid_name


def read_video(path, *, num_classes: int, feature_dim: int = 2048,
               num_segments: int | None = None, require_clicks: bool = False,
               require_metadata: bool = False, require_labels: bool = True) -> VideoRecord:
  """Reads and validates one official feature file.

  Args:
    path: the .npz file.
    num_classes: C, the number of action classes (`cls_label` has C entries).
    feature_dim: F, the width of [spa, tem]; each half is F / 2.
    num_segments: T if known; it also settles the layout of square arrays.
    require_clicks: `point_label` must be present (training splits).
    require_metadata: `frame_num`, `fps` and `duration` must be present (test splits).
    require_labels: `cls_label` and `vid_name` must be present; without them (a video nobody
      annotated) the labels are zeros and the name is the file name without its extension.
  """
  if feature_dim % 2:
    raise ValueError(f'feature_dim must be even (RGB and flow halves), got {feature_dim}')
  archive = open_npz(path)
  with archive:
    half = feature_dim // 2
    spa_SxW = _feature_half(archive, path, 'feat_spa', half, num_segments)
    tem_SxW = _feature_half(archive, path, 'feat_tem', half, num_segments)
    if tem_SxW.shape[0] != spa_SxW.shape[0]:
      raise FeatureFileError(
          path, 'feat_tem', f'{tem_SxW.shape[0]} snippets but feat_spa has {spa_SxW.shape[0]}')
    num_snippets = spa_SxW.shape[0]
    video_labels = np.zeros((num_classes,), np.float32)
    if require_labels or 'cls_label' in archive.files:
      video_labels = _as_numeric(path, 'cls_label', _read_key(archive, path, 'cls_label'))
    _checked(path, 'cls_label', video_labels, cls_label_problems(video_labels, num_classes))
    vid_name = np.asarray(pathlib.Path(path).stem)
    if require_labels or 'vid_name' in archive.files:
      vid_name = read_name(archive, path)
    click_labels = None
    if require_clicks or 'point_label' in archive.files:
      click_labels = _click_labels(
          path, _read_key(archive, path, 'point_label'), num_snippets, num_classes)
    metadata = {}
    for key in ('frame_num', 'fps', 'duration'):
      if require_metadata or key in archive.files:
        metadata[key] = _scalar(path, key, _read_key(archive, path, key))
  vid_name = vid_name.reshape(()).item()
  return VideoRecord(
      vid_name=vid_name.decode() if isinstance(vid_name, bytes) else vid_name,
      features_SxF=np.concatenate([spa_SxW, tem_SxW], axis=1),
      video_labels_C=video_labels.astype(np.float32),
      click_labels_T=click_labels,
      frame_num=int(metadata['frame_num']) if 'frame_num' in metadata else None,
      fps=float(metadata['fps']) if 'fps' in metadata else None,
      duration=float(metadata['duration']) if 'duration' in metadata else None,
  )


@dataclasses.dataclass(frozen=True)
class FileHeader:
  """What a feature file says about itself, read without its features."""

  vid_name: str | None  # None when the file stores no `vid_name`
  num_snippets: int  # S, as stored
  frame_num: int | None  # None when absent, as the metadata below
  fps: float | None
  duration: float | None


def npy_header(stream) -> tuple[tuple[int, ...], np.dtype]:
  """Shape and dtype of the .npy array at the start of a binary stream (a file, or a member of an
  .npz archive), from its header alone: no data is read."""
  version = np.lib.format.read_magic(stream)
  read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
          else np.lib.format.read_array_header_2_0)
  shape, _, dtype = read(stream)
  return shape, dtype


def _stored_shape(archive: np.lib.npyio.NpzFile, path, key: str) -> tuple[int, ...]:
  try:
    with archive.zip.open(f'{key}.npy') as member:
      return npy_header(member)[0]
  except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
    raise FeatureFileError(path, key, f'unreadable, truncated or corrupt ({e})') from e


def read_header(path, *, feature_dim: int) -> FileHeader:
  """The name, snippet count and metadata of an official-layout file (only `feat_spa` and
  `feat_tem` required, [F/2, T] as the official files store them, or [T, F/2]), checking the
  feature shapes before any feature is read."""
  with open_npz(path) as archive:
    lengths = {}
    for key in ('feat_spa', 'feat_tem'):
      if key not in archive.files:
        raise FeatureFileError(path, key, f'missing (the file has {sorted(archive.files)})')
      shape = _stored_shape(archive, path, key)
      half = feature_dim // 2
      if len(shape) != 2 or half not in shape:
        raise FeatureFileError(path, key, f'shape {shape}, expected ({half}, T) channels-first '
                               f'or (T, {half}) channels-last')
      check_unambiguous(path, key, shape, half)
      lengths[key] = shape[1] if shape[0] == half else shape[0]
      check_snippet_count(path, key, lengths[key])
    if lengths['feat_spa'] != lengths['feat_tem']:
      raise FeatureFileError(path, 'feat_tem', f'{lengths["feat_tem"]} snippets but feat_spa '
                             f'has {lengths["feat_spa"]}')
    metadata = {key: _scalar(path, key, _read_key(archive, path, key)).item()
                for key in ('frame_num', 'fps', 'duration') if key in archive.files}
    vid_name = None
    if 'vid_name' in archive.files:
      vid_name = read_name(archive, path).reshape(()).item()
      vid_name = vid_name.decode() if isinstance(vid_name, bytes) else vid_name
  return FileHeader(
      vid_name=vid_name, num_snippets=lengths['feat_spa'],
      frame_num=int(metadata['frame_num']) if 'frame_num' in metadata else None,
      fps=float(metadata['fps']) if 'fps' in metadata else None,
      duration=float(metadata['duration']) if 'duration' in metadata else None)


def to_example(record: VideoRecord) -> dict:
  """The flat example both sources (npz and TFDS) produce, absent fields filled in.

  Videos without clicks get IGNORE_LABEL everywhere; absent metadata becomes METADATA_MISSING.
  """
  num_snippets = record.features_SxF.shape[0]
  click_labels = record.click_labels_T
  if click_labels is None:
    click_labels = np.full((num_snippets,), IGNORE_LABEL, np.int32)

  def or_missing(value):
    return METADATA_MISSING if value is None else value

  return {
      'vid_name': record.vid_name,
      'features': record.features_SxF,
      'video_labels': record.video_labels_C,
      'click_labels': click_labels,
      'frame_num': np.int64(or_missing(record.frame_num)),
      'fps': np.float64(or_missing(record.fps)),
      'duration': np.float64(or_missing(record.duration)),
  }
