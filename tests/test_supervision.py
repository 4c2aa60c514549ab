"""Which clicks a run trains on."""

import numpy as np
import pytest

from backtal_jax.data import annotations
from backtal_jax.data import datasets
from backtal_jax.data import supervision

C = 20
IGNORE = -100


def test_switches_keep_the_right_clicks():
  clicks = np.array([IGNORE, C, IGNORE, C, IGNORE])
  actions = np.array([IGNORE, IGNORE, 3, 5, IGNORE])
  assert (supervision.supervised_clicks(clicks, actions, C, 'none') == IGNORE).all()
  np.testing.assert_array_equal(supervision.supervised_clicks(clicks, actions, C, 'background'),
                                clicks)
  np.testing.assert_array_equal(supervision.supervised_clicks(clicks, actions, C, 'action'),
                                actions)
  np.testing.assert_array_equal(supervision.supervised_clicks(clicks, actions, C, 'both'),
                                [IGNORE, C, 3, 5, IGNORE])


def test_unknown_supervision_is_an_error():
  with pytest.raises(ValueError, match='config.train.supervision'):
    supervision.supervised_clicks(np.zeros(3), None, C, 'clicks')


class OneVideo:
  def __init__(self, name):
    self.name = name

  def __len__(self):
    return 1

  def __getitem__(self, index):
    return {'vid_name': self.name, 'click_labels': np.full(750, IGNORE, np.int32)}


def test_action_clicks_fall_inside_instances_of_their_class():
  gt = annotations.load_ground_truth('thumos14_gt')
  name = 'video_validation_0000051'
  source = datasets.Supervised(OneVideo(name), 'action', gt, 750, seed=0)
  labels = source[0]['click_labels']
  video = gt.videos[name]
  clicked = np.flatnonzero(labels != IGNORE)
  assert len(clicked) == len(video.instances)
  for t in clicked:
    centre = (t + 0.5) / 750 * video.duration
    assert any(i.label == labels[t] and i.start <= centre <= i.end for i in video.instances)
  np.testing.assert_array_equal(datasets.Supervised(OneVideo(name), 'action', gt, 750, 0)[0][
      'click_labels'], labels)  # seeded by name: the same clicks every epoch and process
