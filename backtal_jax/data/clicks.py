"""Human click annotations (the THUMOS14 annotators' CSV files) and per-video point labels.

Click file layout: UTF-8 with a byte-order mark, header `URLID,URL,TagID,Tag,Start,End,Time,State`,
one click per row; `URLID` is the video, `Tag` is `background_background` for a background click
(else a class name, an action click), `Start` the clicked time in seconds. The annotation tool
stores a click as a point, so `End` equals `Start` except in six rows of the shipped files where it
is half a second later (four in A1, two in A3): those are still single clicks, at `Start`, the
time the annotator clicked. A row with `End < Start`, a negative or non-numeric time or an empty
video name is malformed and raises an error naming the file and the line.

Point labels (the official `point_label`): int32 [T], -100 where nothing was clicked, C (the
number of classes) at background clicks, the class index at action clicks. A click at time t of
a video lasting d seconds lands on snippet `int(t / d * T)`, clipped into [0, T - 1] (clicks at
or after the end of the video land on the last snippet).

Run `python -m backtal_jax.data.clicks --stats` for per-annotator statistics.
"""

import csv
import dataclasses
import logging
import pathlib
from typing import Mapping
from typing import Sequence

from absl import app
from absl import flags
import numpy as np

from backtal_jax.core import errors
from backtal_jax.core.labels import IGNORE_LABEL
from backtal_jax.data import annotations
from backtal_jax.data import seeding

BACKGROUND_TAG = 'background_background'
ANNOTATORS = ('A1', 'A2', 'A3')
SOURCES = ANNOTATORS + ('union', 'random')
HEADER = ('URLID', 'URL', 'TagID', 'Tag', 'Start', 'End', 'Time', 'State')

Clicks = tuple['Click', ...]


class ClickFileError(errors.UserError):
  """A click file that does not have the expected layout."""


@dataclasses.dataclass(frozen=True)
class Click:
  time: float  # Seconds from the start of the video.
  tag: str  # BACKGROUND_TAG or a class name.


@dataclasses.dataclass(frozen=True)
class PointLabels:
  """Point labels of some videos, and the videos that got no click from the source."""
  labels: Mapping[str, np.ndarray]  # Video -> int32 [T].
  missing: tuple[str, ...]  # Sorted; their labels are all IGNORE_LABEL.


def read_click_file(name_or_path: annotations.PathLike) -> dict[str, Clicks]:
  """Parses a click file (shipped name such as 'thumos14_clicks_A1', or a path) by video."""
  path = annotations.resolve_path(name_or_path)
  with open(path, encoding='utf-8-sig', newline='') as f:
    rows = list(csv.reader(f))
  if not rows or tuple(rows[0]) != HEADER:
    raise ClickFileError(
        f'{path}: line 1: header must be {",".join(HEADER)}, got {rows[0] if rows else "nothing"}')
  by_video = {}
  for line, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    video, click = _parse_row(row, path, line)
    by_video.setdefault(video, []).append(click)
  return {video: tuple(sorted(cs, key=lambda c: c.time)) for video, cs in by_video.items()}


def _parse_row(row: Sequence[str], path: pathlib.Path, line: int) -> tuple[str, Click]:
  if len(row) != len(HEADER):
    raise ClickFileError(f'{path}: line {line}: expected {len(HEADER)} fields, got {len(row)}')
  fields = dict(zip(HEADER, row))
  if not fields['URLID'].strip():
    raise ClickFileError(f'{path}: line {line}: field URLID is empty')
  start, end = (_time(fields, key, path, line) for key in ('Start', 'End'))
  if end < start:
    raise ClickFileError(f'{path}: line {line}: field End ({end}) is before Start ({start})')
  return fields['URLID'].strip(), Click(time=start, tag=fields['Tag'].strip())


def _time(fields: Mapping[str, str], key: str, path: pathlib.Path, line: int) -> float:
  try:
    value = float(fields[key])
  except ValueError:
    raise ClickFileError(
        f'{path}: line {line}: field {key} must be a number, got {fields[key]!r}') from None
  if not np.isfinite(value) or value < 0:
    raise ClickFileError(f'{path}: line {line}: field {key} must be >= 0, got {fields[key]!r}')
  return value


def thumos14_clicks(annotator: str) -> dict[str, Clicks]:
  """The shipped THUMOS14 clicks of annotator 'A1', 'A2' or 'A3'."""
  if annotator not in ANNOTATORS:
    raise ValueError(f'annotator must be one of {ANNOTATORS}, got {annotator!r}')
  return read_click_file(f'thumos14_clicks_{annotator}')


def time_to_snippet(time: float, duration: float, num_segments: int) -> int:
  """The snippet a time falls in: int(t / d * T), clipped into [0, T - 1]."""
  return min(max(int(time / duration * num_segments), 0), num_segments - 1)


def click_labels(clicks: Clicks, *, duration: float, num_segments: int,
                 class_names: Sequence[str], video: str = '') -> np.ndarray:
  """The int32 [T] point labels of one video's clicks (later clicks win a shared snippet)."""
  labels_T = np.full(num_segments, IGNORE_LABEL, np.int32)
  for click in clicks:
    labels_T[time_to_snippet(click.time, duration, num_segments)] = _tag_index(
        click.tag, class_names, video)
  return labels_T


def _tag_index(tag: str, class_names: Sequence[str], video: str) -> int:
  if tag == BACKGROUND_TAG:
    return len(class_names)
  if tag not in class_names:
    raise ValueError(
        f'video {video!r}: click tag {tag!r} is neither {BACKGROUND_TAG!r} nor a class')
  return list(class_names).index(tag)


def choose_clicks(per_annotator: Mapping[str, Mapping[str, Clicks]], video: str, source: str,
                  seed: int = 0) -> Clicks | None:
  """One video's clicks from one annotator, their union, or a random annotator; None if none."""
  if source in per_annotator:
    return per_annotator[source].get(video)
  available = [name for name in sorted(per_annotator) if video in per_annotator[name]]
  if not available:
    return None
  if source == 'union':
    return tuple(sorted((c for name in available for c in per_annotator[name][video]),
                        key=lambda c: c.time))
  if source == 'random':
    pick = seeding.named_rng(seed, video, 'random_annotator').integers(len(available))
    return per_annotator[available[pick]][video]
  raise ValueError(f'click source must be one of {sorted(per_annotator)} or union/random, '
                   f'got {source!r}')


def build_point_labels(videos: Sequence[annotations.Video], class_names: Sequence[str],
                       num_segments: int, *, source: str = 'A1', seed: int = 0,
                       per_annotator: Mapping[str, Mapping[str, Clicks]] | None = None,
                       on_missing: str = 'report') -> PointLabels:
  """Point labels of `videos` from human clicks (default: the shipped THUMOS14 annotators).

  `source` is an annotator name, 'union' (all annotators' clicks) or 'random' (one annotator
  per video, drawn from those who annotated it, seeded by `seed` and the video's name). Videos
  the source has no click for are logged and listed in `missing`, or raise a KeyError when
  `on_missing='raise'`.
  """
  if on_missing not in ('report', 'raise'):
    raise ValueError(f"on_missing must be 'report' or 'raise', got {on_missing!r}")
  if per_annotator is None:
    per_annotator = {name: thumos14_clicks(name) for name in ANNOTATORS}
  labels, missing = {}, []
  for video in videos:
    clicks = choose_clicks(per_annotator, video.name, source, seed)
    if clicks is None:
      missing.append(video.name)
    labels[video.name] = click_labels(clicks or (), duration=video.duration,
                                      num_segments=num_segments, class_names=class_names,
                                      video=video.name)
  if missing and on_missing == 'raise':
    raise KeyError(f'click source {source!r} has no click for {len(missing)} videos: {missing}')
  if missing:
    logging.warning('Click source %s has no click for %d videos (labels left empty): %s',
                    source, len(missing), missing)
  return PointLabels(labels=labels, missing=tuple(sorted(missing)))


def inside_any_instance(time: float, video: annotations.Video) -> bool:
  return any(inst.start <= time <= inst.end for inst in video.instances)


def click_statistics(clicks: Mapping[str, Clicks],
                     videos: Sequence[annotations.Video]) -> dict[str, float]:
  """Videos covered, clicks per covered video and the share of clicks inside a GT instance."""
  covered = [v for v in videos if v.name in clicks]
  counts = np.array([len(clicks[v.name]) for v in covered])
  inside = sum(inside_any_instance(c.time, v) for v in covered for c in clicks[v.name])
  return {
      'videos': len(covered),
      'missing': len(videos) - len(covered),
      'clicks': int(counts.sum()),
      'clicks_per_video_mean': float(counts.mean()) if len(counts) else 0.0,
      'clicks_per_video_min': int(counts.min()) if len(counts) else 0,
      'clicks_per_video_max': int(counts.max()) if len(counts) else 0,
      'inside_instance_share': inside / counts.sum() if counts.sum() else 0.0,
  }


def format_statistics(rows: Mapping[str, Mapping[str, float]]) -> str:
  lines = ['source  videos  missing  clicks  per video mean/min/max  inside GT instance']
  for name, s in rows.items():
    lines.append(
        f'{name:<7} {s["videos"]:>6}  {s["missing"]:>7}  {s["clicks"]:>6}  '
        f'{s["clicks_per_video_mean"]:>8.2f} / {s["clicks_per_video_min"]} / '
        f'{s["clicks_per_video_max"]:<8} {100 * s["inside_instance_share"]:>6.1f}%')
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags, defined only when it runs (so importing this module defines none)."""
  flags.DEFINE_bool('stats', False, 'Print per-annotator click statistics.')
  flags.DEFINE_string('ground_truth', 'thumos14_gt',
                      'Shipped ground-truth name or path of a GT JSON file.')
  flags.DEFINE_string('subset', 'val', 'Ground-truth subset the clicks belong to.')


def main(argv: Sequence[str]) -> None:
  del argv
  if not FLAGS.stats:
    raise app.UsageError('Nothing to do: pass --stats.')
  gt = annotations.load_ground_truth(FLAGS.ground_truth)
  videos = gt.subset(FLAGS.subset)
  per_annotator = {name: thumos14_clicks(name) for name in ANNOTATORS}
  union = {v.name: choose_clicks(per_annotator, v.name, 'union') for v in videos}
  rows = {name: click_statistics(clicks, videos) for name, clicks in per_annotator.items()}
  rows['union'] = click_statistics({k: v for k, v in union.items() if v}, videos)
  print(f'{gt.path.name}, subset {FLAGS.subset!r}: {len(videos)} videos')
  print(format_statistics(rows))
  for name, clicks in per_annotator.items():
    skipped = sorted(v.name for v in videos if v.name not in clicks)
    if skipped:
      print(f'{name} skipped: {", ".join(skipped)}')


if __name__ == '__main__':
  define_flags()
  errors.run(main)
