"""Clicks simulated from the ground truth, for datasets without human click files.

Snippet t of a video lasting d seconds spans [t d / T, (t + 1) d / T). A background click goes to a
random snippet lying wholly inside a background gap (before the first instance, between two
instances, after the last; overlapping instances merge first), one per gap; a gap that holds no
whole snippet is skipped, so no background click ever touches an instance. An action click goes to
a random snippet whose centre lies inside the instance, or, for an instance shorter than a
snippet, to the snippet holding its midpoint. Instance times are clipped into [0, d].
"""

from typing import Sequence

import numpy as np

from backtal_jax.core.labels import IGNORE_LABEL
from backtal_jax.data import annotations
from backtal_jax.data import clicks as clicks_lib
from backtal_jax.data import seeding


def background_gaps(video: annotations.Video) -> list[tuple[float, float]]:
  """The background stretches (start, end) in seconds between the merged instances."""
  gaps, cursor = [], 0.0
  for start, end in _clipped_sorted(video):
    if start > cursor:
      gaps.append((cursor, start))
    cursor = max(cursor, end)
  if cursor < video.duration:
    gaps.append((cursor, video.duration))
  return gaps


def _clipped_sorted(video: annotations.Video) -> list[tuple[float, float]]:
  clip = lambda x: min(max(x, 0.0), video.duration)
  return sorted((clip(inst.start), clip(inst.end)) for inst in video.instances)


def snippets_within(start: float, end: float, duration: float, num_segments: int) -> range:
  """The snippets whose whole span lies inside [start, end]."""
  first = int(np.ceil(start / duration * num_segments))
  stop = int(np.floor(end / duration * num_segments))
  return range(max(first, 0), min(stop, num_segments))


def snippets_centred_in(start: float, end: float, duration: float, num_segments: int) -> range:
  """The snippets whose centre lies inside [start, end], else the one holding the midpoint."""
  first = int(np.ceil(start / duration * num_segments - 0.5))
  stop = int(np.floor(end / duration * num_segments - 0.5)) + 1
  found = range(max(first, 0), min(stop, num_segments))
  if found:
    return found
  middle = clicks_lib.time_to_snippet((start + end) / 2, duration, num_segments)
  return range(middle, middle + 1)


def simulate_clicks(video: annotations.Video, num_segments: int, num_classes: int,
                    rng: np.random.Generator, *, background: bool = True,
                    actions: bool = False) -> np.ndarray:
  """Point labels int32 [T] of one video: background clicks (C) and/or action clicks (class).

  BackTAL trains from background clicks; action clicks (off by default) serve comparisons with
  action-click supervision.
  """
  labels_T = np.full(num_segments, IGNORE_LABEL, np.int32)
  if background:
    for start, end in background_gaps(video):
      candidates = snippets_within(start, end, video.duration, num_segments)
      if candidates:
        labels_T[candidates[rng.integers(len(candidates))]] = num_classes
  if actions:
    for inst in video.instances:
      start, end = (min(max(x, 0.0), video.duration) for x in (inst.start, inst.end))
      candidates = snippets_centred_in(start, end, video.duration, num_segments)
      labels_T[candidates[rng.integers(len(candidates))]] = inst.label
  return labels_T


def simulate_point_labels(videos: Sequence[annotations.Video], num_segments: int,
                          num_classes: int, *, seed: int = 0, background: bool = True,
                          actions: bool = False) -> dict[str, np.ndarray]:
  """Simulated point labels by video; each video's clicks depend only on the seed and its name."""
  return {
      v.name: simulate_clicks(v, num_segments, num_classes,
                              seeding.named_rng(seed, v.name, 'simulated_clicks'),
                              background=background, actions=actions)
      for v in videos
  }
