"""Feature files of videos nobody annotated, for prediction.

Every file is found, checked and given its duration and frame count before any feature is read
(a bad file or a missing duration stops the run at once, naming every video concerned); then the
features are streamed, one batch at a time, and resampled to the length the model was trained on.

Why resample (README, "Predict on your own videos"): the official feature files of a dataset all
hold config.data.num_segments snippets (THUMOS14: 750) whatever the video's length, a 34 s and a
483 s test video alike, with the video's own 16-frame snippet count kept apart as `frame_num`; the
model only ever saw that length, and post-processing stretches its CAS back to `frame_num`.
"""

from collections.abc import Sequence
import csv
import dataclasses
import pathlib

import ml_collections
import numpy as np

from backtal_jax.core import errors
from backtal_jax.core import resample
from backtal_jax.core.labels import IGNORE_LABEL
from backtal_jax.data import annotations
from backtal_jax.data import features

SUFFIXES = ('.npz', '.npy')


class InputError(errors.UserError):
  """Feature files or their metadata that prediction cannot use."""


@dataclasses.dataclass(frozen=True)
class UnannotatedVideo:
  """A video to localise actions in: where its features are and what post-processing needs."""

  vid_name: str
  path: pathlib.Path | None  # None for features handed over in memory
  num_snippets: int  # S, as stored
  frame_num: int  # positions the CAS is stretched to: the video's 16-frame snippets
  fps: float  # features.METADATA_MISSING when only frame_num was given
  duration: float  # seconds


def list_feature_files(paths: Sequence[str]) -> list[pathlib.Path]:
  """The files named, and the .npz and .npy files of the folders named (sorted by name)."""
  files = []
  for name in paths:
    path = pathlib.Path(name)
    if path.is_dir():
      found = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES)
      if not found:
        raise InputError(f'{path}: the folder holds no .npz or .npy file')
      files.extend(found)
    elif path.is_file():
      if path.suffix not in SUFFIXES:
        raise InputError(f'{path}: expected an .npz (official layout) or .npy [T, F] file')
      files.append(path)
    else:
      raise InputError(f'{path}: no such file or folder')
  if not files:
    raise InputError('No feature files given')
  return files


def npy_header(path: pathlib.Path, *, feature_dim: int) -> features.FileHeader:
  """The snippet count of an .npy [T, F] array, from its header alone."""
  try:
    with open(path, 'rb') as f:
      shape, dtype = features.npy_header(f)
      stored_bytes = path.stat().st_size - f.tell()
  except (ValueError, OSError, EOFError) as e:
    raise features.FeatureFileError(path, 'array', f'not a readable .npy file ({e})') from e
  if len(shape) != 2 or shape[1] != feature_dim or not features.real_numbers(dtype):
    raise features.FeatureFileError(
        path, 'array', f'{dtype} of shape {shape}, expected numbers of shape (T, {feature_dim}) '
        '(snippets x RGB and flow features, channels-last)')
  features.check_snippet_count(path, 'array', shape[0])
  needed = int(np.prod(shape)) * dtype.itemsize
  if stored_bytes < needed:
    raise features.FeatureFileError(path, 'array', f'truncated: {stored_bytes} bytes of data, '
                                    f'its header {shape} {dtype} needs {needed}')
  return features.FileHeader(vid_name=None, num_snippets=shape[0], frame_num=None, fps=None,
                             duration=None)


def read_header(path: pathlib.Path, *, feature_dim: int) -> features.FileHeader:
  if path.suffix == '.npy':
    return npy_header(path, feature_dim=feature_dim)
  return features.read_header(path, feature_dim=feature_dim)


def _positive(path, row: int, field: str, text: str) -> float | None:
  if not text.strip():
    return None
  try:
    value = float(text)
  except ValueError:
    value = float('nan')
  if not value > 0 or not np.isfinite(value):
    raise InputError(f'{path}: line {row}: {field} is {text!r}, expected a positive number')
  return value


def read_metadata_csv(path: str) -> dict[str, dict[str, float | None]]:
  """vid_name -> {'duration', 'fps'} from a CSV with a header row `vid_name,duration,fps`;
  an empty cell is a value the file does not give."""
  with open(path, newline='', encoding='utf-8-sig') as f:  # with or without a byte-order mark
    reader = csv.DictReader(f)
    missing = {'vid_name', 'duration', 'fps'} - set(reader.fieldnames or ())
    if missing:
      raise InputError(f'{path}: header {reader.fieldnames}, expected the columns vid_name, '
                       f'duration, fps (missing: {sorted(missing)})')
    table = {}
    for row in reader:
      line = reader.line_num
      name = (row['vid_name'] or '').strip()
      if not name:
        raise InputError(f'{path}: line {line}: vid_name is empty')
      if name in table:
        raise InputError(f'{path}: line {line}: vid_name {name!r} appears twice')
      table[name] = {field: _positive(path, line, field, row[field] or '')
                     for field in ('duration', 'fps')}
  return table


def _first(*values):
  return next((v for v in values if v is not None), None)


def complete(headers: Sequence[tuple[pathlib.Path, features.FileHeader]],
             table: dict[str, dict[str, float | None]], *, duration: float | None,
             fps: float | None, frames_per_snippet: int) -> list[UnannotatedVideo]:
  """Names and metadata of every video: from the file, else the CSV table, else the defaults.

  A video needs its duration, and its frame_num or its fps (frame_num = round(duration x fps /
  frames_per_snippet), the official convention); all videos lacking one are named in one error.
  """
  videos, lacking, files_of = [], [], {}
  for path, header in headers:
    name = header.vid_name or path.stem
    files_of.setdefault(name, []).append(str(path))
    row = table.get(name, {})
    video_duration = _first(header.duration, row.get('duration'), duration)
    video_fps = _first(header.fps, row.get('fps'), fps)
    needs = [] if video_duration is not None else ['duration']
    if header.frame_num is None and video_fps is None:
      needs.append('fps')
    if needs:
      lacking.append(f'{name} ({path}): {" and ".join(needs)}')
      continue
    frame_num = header.frame_num
    if frame_num is None:
      frame_num = annotations.snippet_count(video_duration, video_fps, frames_per_snippet)
    if frame_num < 1:
      lacking.append(f'{name} ({path}): a duration ({video_duration} s) of no whole '
                     f'{frames_per_snippet}-frame snippet at {video_fps} fps')
      continue
    videos.append(UnannotatedVideo(
        vid_name=name, path=path, num_snippets=header.num_snippets, frame_num=frame_num,
        fps=_first(video_fps, features.METADATA_MISSING), duration=video_duration))
  twice = {name: paths for name, paths in files_of.items() if len(paths) > 1}
  if twice:
    raise InputError('Two files name the same video (vid_name, else the file name): '
                     + '; '.join(f'{name}: {", ".join(p)}' for name, p in twice.items()))
  if lacking:
    raise InputError(
        f'{len(lacking)} of {len(headers)} videos lack what post-processing needs; give it in the '
        'file (keys duration, fps or frame_num), in a metadata CSV (columns vid_name,duration,fps; '
        '--metadata_csv) or for all videos at once (--duration, --fps):\n  '
        + '\n  '.join(lacking))
  return videos


def find_videos(paths: Sequence[str], config: ml_collections.ConfigDict, *,
                metadata_csv: str = '', duration: float | None = None,
                fps: float | None = None) -> list[UnannotatedVideo]:
  """Every video of `paths` (files or folders), checked and completed; reads no feature."""
  for name, value in (('duration', duration), ('fps', fps)):
    if value is not None and not (value > 0 and np.isfinite(value)):
      raise InputError(f'--{name} is {value}, expected a positive finite number')
  files = list_feature_files(paths)
  headers = [(path, read_header(path, feature_dim=config.data.feature_dim)) for path in files]
  table = read_metadata_csv(metadata_csv) if metadata_csv else {}
  return complete(headers, table, duration=duration, fps=fps,
                  frames_per_snippet=config.data.frames_per_snippet)


def span_means(features_SxF: np.ndarray, num_segments: int) -> np.ndarray:
  """[S, F] -> [T, F] for S > T: output t is the mean of the input over its span [t, t + 1) x S / T
  (snippet j covering [j, j + 1)), partly covered snippets weighted by the part covered, so that
  no snippet is skipped. Positions are kept exact as multiples of 1 / T."""
  num_in = features_SxF.shape[0]
  x_SxF = np.asarray(features_SxF, np.float32)
  start_S = np.arange(num_in) * num_segments  # snippet j spans [j T, (j + 1) T) in units of 1/T
  bin_S = start_S // num_in  # the output snippet each input snippet starts in; spans are S long
  first_part_S = np.minimum(start_S + num_segments, (bin_S + 1) * num_in) - start_S
  rest_S = num_segments - first_part_S  # the part of the snippet in the next output snippet
  starts_T = np.searchsorted(bin_S, np.arange(num_segments))  # every span holds a snippet start
  out_TxF = np.add.reduceat(x_SxF * (first_part_S / num_in)[:, None].astype(np.float32),
                            starts_T, axis=0)
  straddling = np.nonzero(rest_S)[0]
  out_TxF[bin_S[straddling] + 1] += x_SxF[straddling] * (
      rest_S[straddling] / num_in)[:, None].astype(np.float32)
  return out_TxF


def resample_snippets(features_SxF: np.ndarray, num_segments: int) -> np.ndarray:
  """[S, F] snippets -> [T, F], T = num_segments, float32: unchanged when S = T; stretched by
  linear interpolation at the snippet centres when S < T (as post-processing stretches the CAS,
  resample.linear_resize); shrunk by span means when S > T."""
  num_in = features_SxF.shape[0]
  if num_in == num_segments:
    return np.asarray(features_SxF, np.float32)
  if num_in < num_segments:
    return resample.linear_resize(features_SxF, num_segments)
  return span_means(features_SxF, num_segments)


def read_features(video: UnannotatedVideo, config: ml_collections.ConfigDict) -> np.ndarray:
  """The stored [S, F] features of a video, checked."""
  if video.path.suffix == '.npz':
    return features.read_video(video.path, num_classes=config.model.num_classes,
                               feature_dim=config.data.feature_dim,
                               require_labels=False).features_SxF
  try:
    array = np.load(video.path, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise features.FeatureFileError(video.path, 'array', f'unreadable ({e})') from e
  if array.shape != (video.num_snippets, config.data.feature_dim):
    expected = (video.num_snippets, config.data.feature_dim)
    raise features.FeatureFileError(video.path, 'array', f'shape {array.shape}, but it was '
                                    f'{expected} when the run started')
  if not np.all(np.isfinite(array)):
    raise features.FeatureFileError(video.path, 'array',
                                    f'{array.size - np.isfinite(array).sum()} non-finite values')
  return features.as_float32(video.path, 'array', array)


def example(video: UnannotatedVideo, features_SxF: np.ndarray,
            config: ml_collections.ConfigDict) -> dict:
  """The example dict `pipeline.read_batch` takes, features resampled to num_segments."""
  num_segments = config.data.num_segments
  return {
      'vid_name': video.vid_name,
      'features': resample_snippets(features_SxF, num_segments),
      'video_labels': np.zeros((config.model.num_classes,), np.float32),
      'click_labels': np.full((num_segments,), IGNORE_LABEL, np.int32),
      'frame_num': np.int64(video.frame_num),
      'fps': np.float64(video.fps),
      'duration': np.float64(video.duration),
  }


class FileSource:
  """Videos read from their files when their batch is built (a pipeline.Source)."""

  def __init__(self, videos: Sequence[UnannotatedVideo], config: ml_collections.ConfigDict):
    self.videos, self.config = list(videos), config

  def __len__(self) -> int:
    return len(self.videos)

  def __getitem__(self, index: int) -> dict:
    video = self.videos[index]
    return example(video, read_features(video, self.config), self.config)


class ArraySource:
  """One video whose features are already in memory (a pipeline.Source)."""

  def __init__(self, video: UnannotatedVideo, features_SxF: np.ndarray,
               config: ml_collections.ConfigDict):
    self.video, self.features_SxF, self.config = video, features_SxF, config

  def __len__(self) -> int:
    return 1

  def __getitem__(self, index: int) -> dict:
    return example(self.video, self.features_SxF, self.config)
