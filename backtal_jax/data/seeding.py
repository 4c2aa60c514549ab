"""Random streams keyed by names, not by loop positions.

Keying each video's generator by the seed and the video's name keeps a video's clicks and
features the same whatever subset, order or number of processes builds them.
"""

import zlib

import numpy as np


def named_rng(seed: int, *names: str) -> np.random.Generator:
  """A generator for one purpose of one item, e.g. named_rng(0, 'video_test_0000004', 'noise')."""
  return np.random.default_rng([seed, *(zlib.crc32(n.encode('utf-8')) for n in names)])
