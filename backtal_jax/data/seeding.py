"""Per-video random streams that depend only on the seed and the video's name.

Keying each video's generator by its name (not by its position in a loop) keeps a video's
clicks and features the same whatever subset, order or number of processes builds them.
"""

import zlib

import numpy as np


def video_rng(seed: int, video: str, stream: str) -> np.random.Generator:
  """A generator for one purpose (`stream`) of one video under one seed."""
  return np.random.default_rng(
      [seed, zlib.crc32(video.encode('utf-8')), zlib.crc32(stream.encode('utf-8'))])
