"""Small official-layout feature files for the data tests."""

import pathlib

import numpy as np

NUM_CLASSES = 3
NUM_SEGMENTS = 6
FEATURE_DIM = 8


def video_arrays(seed: int, *, train: bool, num_segments: int = NUM_SEGMENTS,
                 feature_dim: int = FEATURE_DIM, num_classes: int = NUM_CLASSES) -> dict:
  """One video's arrays as the official files store them (features channels-first)."""
  rng = np.random.default_rng(seed)
  half = feature_dim // 2
  arrays = {
      'feat_spa': rng.normal(size=(half, num_segments)).astype(np.float32),
      'feat_tem': rng.normal(size=(half, num_segments)).astype(np.float32),
      'cls_label': (rng.random(num_classes) < 0.5).astype(np.float32),
      'vid_name': np.array(f'video_{seed:04d}'),
  }
  if train:
    arrays['point_label'] = rng.choice([-100, 0, num_classes], size=num_segments).astype(np.int64)
  else:
    arrays['frame_num'] = np.array(30 * num_segments)
    arrays['fps'] = np.array(25.0)
    arrays['duration'] = np.array(30 * num_segments / 25.0)
  return arrays


def write_split(root, split: str, num_videos: int, *, train: bool, **kwargs) -> list[pathlib.Path]:
  """Writes num_videos files to root/split, named so that their sorted order is their seed order."""
  split_dir = pathlib.Path(root) / split
  split_dir.mkdir(parents=True, exist_ok=True)
  paths = []
  for seed in range(num_videos):
    path = split_dir / f'video_{seed:04d}.npz'
    np.savez(path, **video_arrays(seed + (0 if train else 1000), train=train, **kwargs))
    paths.append(path)
  return paths
