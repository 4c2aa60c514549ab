"""Ground-truth annotation files (ActivityNet JSON layout) as typed, validated records.

The THUMOS14 and ActivityNet1.2 ground truths share one layout:
`{'activity_list': [...], 'database': {video: {'subset', 'duration', 'fps', 'annotations':
[{'segment': [start, end], 'label', 'idx'}, ...]}}}`. Class indices follow `activity_list`; an
instance's `label` must name a class of that list and, where `idx` is given, agree with it.
Everything a later stage relies on is checked here once, so a malformed file fails at load time
with an error that names the file, the video and the field. The shipped files are kept as they
are: ActivityNet1.2 has ten zero-length instances (start == end) and some that end after the
video's duration (185), THUMOS14 four; they are valid here, and users of the times clip them.
"""

import dataclasses
import functools
import json
import math
import os
import pathlib
from typing import Any
from typing import Mapping
from typing import Sequence

from backtal_jax.core import errors
from backtal_jax.data import resources

PathLike = str | os.PathLike


class AnnotationError(errors.UserError):
  """A ground-truth file that does not have the expected layout."""


class UnknownSubset(AnnotationError, KeyError):
  """A subset the ground truth does not have (a KeyError too, for lookups that expect one)."""
  __str__ = AnnotationError.__str__


@dataclasses.dataclass(frozen=True)
class Instance:
  """One ground-truth action instance, in seconds."""
  start: float
  end: float
  label: int  # Index into GroundTruth.class_names.

  @property
  def length(self) -> float:
    return self.end - self.start


def snippet_count(duration: float, fps: float, frames_per_snippet: int) -> int:
  """The official test files' `frame_num`: the video's 16-frame I3D snippets, not its frames."""
  return round(duration * fps / frames_per_snippet)


@dataclasses.dataclass(frozen=True)
class Video:
  """One annotated video; instances sorted by start time."""
  name: str
  subset: str
  duration: float  # Seconds.
  fps: float
  instances: tuple[Instance, ...]

  def frame_num(self, frames_per_snippet: int) -> int:
    return snippet_count(self.duration, self.fps, frames_per_snippet)

  @property
  def labels(self) -> tuple[int, ...]:
    """The video-level labels: the sorted distinct classes of its instances."""
    return tuple(sorted({inst.label for inst in self.instances}))


@dataclasses.dataclass(frozen=True)
class GroundTruth:
  """A loaded ground-truth file."""
  path: pathlib.Path
  class_names: tuple[str, ...]
  videos: Mapping[str, Video]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @functools.cached_property
  def subset_of(self) -> dict[str, str]:
    """Every video's subset by name (what core.membership's rule reads); built once, as the
    training data ask it for every example."""
    return {name: video.subset for name, video in self.videos.items()}

  def subset(self, name: str) -> list[Video]:
    """The videos of one subset (e.g. THUMOS14 'val' or 'test'), sorted by name."""
    videos = sorted((v for v in self.videos.values() if v.subset == name), key=lambda v: v.name)
    if not videos:
      known = sorted({v.subset for v in self.videos.values()})
      raise UnknownSubset(f'{self.path}: no video in subset {name!r}; subsets: {known}')
    return videos


def resolve_path(name_or_path: PathLike) -> pathlib.Path:
  """A shipped annotation name (see resources.ANNOTATION_FILES) or a file path."""
  if isinstance(name_or_path, str) and name_or_path in resources.ANNOTATION_FILES:
    return resources.annotation_path(name_or_path)
  path = pathlib.Path(name_or_path)
  if not path.is_file():
    raise FileNotFoundError(
        f'{name_or_path!r} is neither a shipped annotation '
        f'({sorted(resources.ANNOTATION_FILES)}) nor an existing file')
  return path


def load_ground_truth(name_or_path: PathLike) -> GroundTruth:
  """Loads and validates a ground-truth JSON file, e.g. load_ground_truth('thumos14_gt')."""
  path = resolve_path(name_or_path)
  try:
    raw = json.loads(path.read_text(encoding='utf-8'))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise AnnotationError(f'{path}: not valid JSON ({e})') from e
  return parse_ground_truth(raw, path)


def parse_ground_truth(raw: Any, path: PathLike = '<memory>') -> GroundTruth:
  """Validates an already-parsed ground-truth dictionary; `path` only names it in errors."""
  path = pathlib.Path(path)
  if not isinstance(raw, dict):
    raise AnnotationError(f'{path}: top level must be an object, got {type(raw).__name__}')
  class_names = _class_names(raw, path)
  database = _field(raw, 'database', dict, path)
  videos = {name: _video(name, entry, class_names, path) for name, entry in database.items()}
  return GroundTruth(path=path, class_names=class_names, videos=videos)


def _class_names(raw: dict, path: pathlib.Path) -> tuple[str, ...]:
  names = _field(raw, 'activity_list', list, path)
  if not names or not all(isinstance(n, str) for n in names):
    raise AnnotationError(f'{path}: field activity_list must be a non-empty list of strings')
  if len(set(names)) != len(names):
    raise AnnotationError(f'{path}: field activity_list has duplicate class names')
  return tuple(names)


def _video(name: str, entry: Any, class_names: Sequence[str], path: pathlib.Path) -> Video:
  where = f'database[{name!r}]'
  if not isinstance(entry, dict):
    raise AnnotationError(f'{path}: {where} must be an object')
  subset = _field(entry, 'subset', str, path, where)
  duration = _number(entry, 'duration', path, where)
  fps = _number(entry, 'fps', path, where)
  if not (0 < duration < math.inf and 0 < fps < math.inf):
    raise AnnotationError(f'{path}: {where}: duration and fps must be > 0 (and finite), got '
                          f'{duration}, {fps}')
  raw_instances = _field(entry, 'annotations', list, path, where)
  instances = [_instance(a, class_names, path, f'{where}.annotations[{i}]')
               for i, a in enumerate(raw_instances)]
  instances.sort(key=lambda inst: (inst.start, inst.end, inst.label))
  return Video(name=name, subset=subset, duration=duration, fps=fps, instances=tuple(instances))


def valid_segment(start: float, end: float) -> bool:
  """The one rule for a segment, true or predicted (evaluation.mean_ap reads it too): finite,
  and end >= start."""
  return math.isfinite(start) and math.isfinite(end) and end >= start


def _instance(raw: Any, class_names: Sequence[str], path: pathlib.Path, where: str) -> Instance:
  if not isinstance(raw, dict):
    raise AnnotationError(f'{path}: {where} must be an object')
  segment = _field(raw, 'segment', list, path, where)
  if len(segment) != 2 or not all(_is_number(x) for x in segment):
    raise AnnotationError(f'{path}: {where}.segment must be [start, end] numbers, got {segment}')
  start, end = float(segment[0]), float(segment[1])
  if not (valid_segment(start, end) and start >= 0):
    raise AnnotationError(f'{path}: {where}.segment needs 0 <= start <= end, both finite, got '
                          f'{segment}')
  label = _field(raw, 'label', str, path, where)
  if label not in class_names:
    raise AnnotationError(f'{path}: {where}.label {label!r} is not in activity_list')
  index = class_names.index(label)
  if 'idx' in raw and raw['idx'] != index:
    raise AnnotationError(
        f'{path}: {where}.idx is {raw["idx"]!r} but label {label!r} is class {index}')
  return Instance(start=start, end=end, label=index)


def _field(raw: dict, key: str, kind: type, path: pathlib.Path, where: str = '') -> Any:
  prefix = f'{path}: {where}.' if where else f'{path}: field '
  if key not in raw:
    raise AnnotationError(f'{prefix}{key} is missing')
  if not isinstance(raw[key], kind):
    raise AnnotationError(
        f'{prefix}{key} must be a {kind.__name__}, got {type(raw[key]).__name__}')
  return raw[key]


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _number(raw: dict, key: str, path: pathlib.Path, where: str) -> float:
  if key not in raw:
    raise AnnotationError(f'{path}: {where}.{key} is missing')
  value = raw[key]
  if isinstance(value, str):
    try:
      value = float(value)
    except ValueError:
      pass
  if not _is_number(value):
    raise AnnotationError(f'{path}: {where}.{key} must be a number, got {raw[key]!r}')
  return float(value)
