"""BackTAL on your own videos: features and ground truth in one folder, THUMOS14's settings.

  python -m backtal_jax.main --config=configs/own_videos.py:/data/my_dataset --workdir=/tmp/mine

The folder holds `features/train/*.npz` (official layout; their labels written by
`python -m backtal_jax.annotation.to_labels` from the annotation page's files),
`features/test/*.npz` (with `duration`, `fps` and `frame_num`) and `ground_truth.json`
(ActivityNet layout: its `activity_list` is the class list, its subset 'test' scores the test
split). README, "Background clicks on your own videos", walks through it.
"""

import pathlib

import ml_collections

from backtal_jax.core import errors
from backtal_jax.data import annotations
from configs import thumos


def get_config(root: str = '') -> ml_collections.ConfigDict:
  """THUMOS14's config reading the dataset in the folder `root`."""
  if not root:
    raise ValueError('configs/own_videos.py needs the dataset folder: '
                     '--config=configs/own_videos.py:/data/my_dataset')
  config = thumos.get_config()
  root = pathlib.Path(root)
  config.data.dataset = root.name  # for logs
  config.data.features_root = str(root / 'features')  # <split>/*.npz
  config.data.train_split = 'train'  # the annotated videos
  config.data.test_split = 'test'  # the videos the ground truth scores
  config.eval.ground_truth = str(root / 'ground_truth.json')  # classes and test instances
  config.eval.subset = 'test'  # ground-truth subset of the test split
  try:
    config.model.num_classes = annotations.load_ground_truth(
        config.eval.ground_truth).num_classes  # C, the ground truth's activity_list
  except (errors.UserError, FileNotFoundError):
    pass  # a missing or broken ground truth: every command that reads it says what is wrong
  config.train.action_clicks = 'file'  # with action/both: the annotators' action clicks
  return config
