"""One annotator's file: the clicks, checked classes and active time of each video.

Layout (JSON, written whole through a temporary file after every change, so that it is always a
complete file):

  {"format": "backtal_jax.annotation/1", "annotator": "alice", "class_names": [...],
   "videos": {"clip_a": {"file": "clip_a.mp4", "duration": 6.04, "classes": ["Jump"],
                         "clicks": [{"time": 1.25, "tag": "background_background"},
                                    {"time": 3.5, "tag": "Jump"}],
                         "active_seconds": 41.2, "done": true}}}

A click's `tag` follows the THUMOS14 annotators' files (backtal_jax.data.clicks): the background
tag, or the class of an action click. `time` is in seconds from the start of the video, where the
player stood when the key was pressed. Every video entry is checked when read and when the page
sends it, so a bad value is refused with one message naming the file, the video and the value.
"""

import dataclasses
import json
import math
import pathlib
import threading
from typing import Any
from typing import Mapping
from typing import Sequence

from backtal_jax.core import errors
from backtal_jax.core import files
from backtal_jax.data import clicks as clicks_lib

FORMAT = 'backtal_jax.annotation/1'
BACKGROUND_TAG = clicks_lib.BACKGROUND_TAG


class AnnotationFileError(errors.UserError):
  """An annotation file, or a change sent by the page, that breaks the layout."""


@dataclasses.dataclass(frozen=True)
class VideoAnnotation:
  """What one annotator said about one video."""
  duration: float  # seconds, as the player measured it
  classes: tuple[str, ...]  # the checked video-level classes
  clicks: clicks_lib.Clicks  # sorted by time
  active_seconds: float = 0.0  # time spent on the video with the tab visible and not idle
  done: bool = False  # the annotator marked it finished
  file: str = ''  # the video file's name in the served folder

  def to_json(self) -> dict:
    return {'file': self.file, 'duration': self.duration, 'classes': list(self.classes),
            'clicks': [{'time': c.time, 'tag': c.tag} for c in self.clicks],
            'active_seconds': self.active_seconds, 'done': self.done}


@dataclasses.dataclass(frozen=True)
class AnnotationFile:
  """One annotator's annotations of the videos of a folder."""
  annotator: str
  class_names: tuple[str, ...]
  videos: Mapping[str, VideoAnnotation]
  path: pathlib.Path | None = None

  def to_json(self) -> dict:
    return {'format': FORMAT, 'annotator': self.annotator, 'class_names': list(self.class_names),
            'videos': {name: v.to_json() for name, v in sorted(self.videos.items())}}


def _number(value: Any, where: str, field: str, *, positive: bool = False) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise AnnotationFileError(f'{where}: field {field} must be a number, got {value!r}')
  if value < 0 or (positive and value == 0):
    raise AnnotationFileError(
        f'{where}: field {field} must be {"> 0" if positive else ">= 0"}, got {value!r}')
  return float(value)


def parse_video(entry: Any, where: str, class_names: Sequence[str]) -> VideoAnnotation:
  """One video's entry, checked: clicks inside the video, tags and classes from the list."""
  if not isinstance(entry, Mapping):
    raise AnnotationFileError(f'{where}: expected an object, got {type(entry).__name__}')
  duration = _number(entry.get('duration'), where, 'duration', positive=True)
  classes = entry.get('classes', [])
  if not isinstance(classes, list):
    raise AnnotationFileError(f'{where}: field classes must be a list, got {classes!r}')
  for name in classes:
    if name not in class_names:
      raise AnnotationFileError(
          f'{where}: field classes: class {name!r} is not in the class list {list(class_names)}')
  raw_clicks = entry.get('clicks', [])
  if not isinstance(raw_clicks, list):
    raise AnnotationFileError(f'{where}: field clicks must be a list, got {raw_clicks!r}')
  clicks = []
  for i, raw in enumerate(raw_clicks):
    field = f'clicks[{i}]'
    if not isinstance(raw, Mapping):
      raise AnnotationFileError(f'{where}: field {field} must be an object, got {raw!r}')
    time = _number(raw.get('time'), where, f'{field}.time')
    if time > duration:
      raise AnnotationFileError(
          f'{where}: field {field}.time: click at {time} s is outside the video '
          f'(duration {duration} s)')
    tag = raw.get('tag')
    if tag != BACKGROUND_TAG and tag not in class_names:
      raise AnnotationFileError(
          f'{where}: field {field}.tag: {tag!r} is neither {BACKGROUND_TAG!r} nor a class of '
          f'the class list {list(class_names)}')
    clicks.append(clicks_lib.Click(time=time, tag=tag))
  done = entry.get('done', False)
  if not isinstance(done, bool):
    raise AnnotationFileError(f'{where}: field done must be true or false, got {done!r}')
  return VideoAnnotation(
      duration=duration, classes=tuple(sorted(set(classes), key=list(class_names).index)),
      clicks=tuple(sorted(clicks, key=lambda c: c.time)),
      active_seconds=_number(entry.get('active_seconds', 0.0), where, 'active_seconds'),
      done=done, file=str(entry.get('file', '')))


def parse(data: Any, path: pathlib.Path | str) -> AnnotationFile:
  """An annotation file's parsed JSON, checked."""
  if not isinstance(data, Mapping) or data.get('format') != FORMAT:
    found = data.get('format') if isinstance(data, Mapping) else type(data).__name__
    raise AnnotationFileError(f'{path}: field format must be {FORMAT!r}, got {found!r}')
  class_names = data.get('class_names')
  if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
    raise AnnotationFileError(f'{path}: field class_names must be a list of names, got '
                              f'{class_names!r}')
  annotator = data.get('annotator')
  if not isinstance(annotator, str) or not annotator:
    raise AnnotationFileError(f'{path}: field annotator must be a name, got {annotator!r}')
  videos = data.get('videos', {})
  if not isinstance(videos, Mapping):
    raise AnnotationFileError(f'{path}: field videos must map names to entries, got {videos!r}')
  return AnnotationFile(
      annotator=annotator, class_names=tuple(class_names), path=pathlib.Path(path),
      videos={name: parse_video(entry, f'{path}: video {name!r}', class_names)
              for name, entry in videos.items()})


def read(path: str | pathlib.Path) -> AnnotationFile:
  path = pathlib.Path(path)
  try:
    data = json.loads(path.read_text(encoding='utf-8'))
  except json.JSONDecodeError as e:
    raise AnnotationFileError(f'{path}: not valid JSON ({e})') from None
  return parse(data, path)


def class_list_problem(found: AnnotationFile, class_names: Sequence[str]) -> str | None:
  """Why a file's class list cannot be used with `class_names` (None if it can): its classes
  must be among them, in any order, since labels are indexed by the config's list."""
  outside = [c for c in found.class_names if c not in class_names]
  if outside:
    return (f'{found.path}: field class_names: class {outside[0]!r} is not in the config\'s class '
            f'list {list(class_names)}')
  return None


class Store:
  """The file the server writes: one annotator's, opened (or started) once, saved after each
  change through a temporary file, so a killed server leaves the last complete state."""

  def __init__(self, path: str | pathlib.Path, annotator: str, class_names: Sequence[str]):
    self.path = pathlib.Path(path)
    self._lock = threading.Lock()
    if self.path.exists():
      found = read(self.path)
      if found.annotator != annotator:
        raise AnnotationFileError(f'{self.path}: field annotator is {found.annotator!r}, but '
                                  f'--annotator is {annotator!r}: one file per annotator')
      problem = class_list_problem(found, class_names)
      if problem:
        raise AnnotationFileError(problem)
      self.current = dataclasses.replace(found, class_names=tuple(class_names))
    else:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      self.current = AnnotationFile(annotator, tuple(class_names), {}, self.path)
      self._save()

  def _save(self) -> None:
    files.write_json_atomically(self.path, self.current.to_json())

  def update_video(self, name: str, entry: Any) -> VideoAnnotation:
    """Checks one video's new entry, then saves the whole file with it."""
    video = parse_video(entry, f'{self.path}: video {name!r}', self.current.class_names)
    with self._lock:
      videos = dict(self.current.videos)
      videos[name] = video
      self.current = dataclasses.replace(self.current, videos=videos)
      self._save()
    return video
