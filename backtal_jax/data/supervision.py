"""Which clicks a run learns from: none, background (BackTAL), action clicks, or both.

The official feature files carry background clicks only; action clicks come from a table of
per-video point labels simulated from the ground truth (`click_simulation.simulate_clicks`), or,
with config.train.action_clicks = 'file', from the files' own point_label (clicks imported from
the annotation page, backtal_jax.annotation).
"""

import numpy as np

from backtal_jax.core import errors
from backtal_jax.core import fields
from backtal_jax.core.labels import IGNORE_LABEL

SUPERVISIONS = ('none', 'background', 'action', 'both')
ACTION_CLICK_SOURCES = ('simulated', 'file')


CONFIG_FIELDS = {  # see core/fields.py
    'train.supervision': fields.choice(*SUPERVISIONS),
    'train.action_clicks': fields.choice(*ACTION_CLICK_SOURCES),
}


def check_supervision(supervision: str) -> None:
  fields.check('train.supervision', supervision, CONFIG_FIELDS)


def check_action_clicks(action_clicks: str) -> None:
  fields.check('train.action_clicks', action_clicks, CONFIG_FIELDS, errors.UserError)


def needs_action_clicks(supervision: str) -> bool:
  return supervision in ('action', 'both')


def file_action_clicks(click_labels_T: np.ndarray, num_classes: int) -> np.ndarray:
  """The action clicks of a file's point labels: its class indices, IGNORE_LABEL elsewhere."""
  return np.where(click_labels_T < num_classes, click_labels_T, IGNORE_LABEL)


def supervised_clicks(click_labels_T: np.ndarray, action_clicks_T: np.ndarray | None,
                      num_classes: int, supervision: str) -> np.ndarray:
  """The click labels a run trains on: -100, C (background) or an action class per snippet.

  With 'both', an action click wins where both kinds fall on one snippet.
  """
  check_supervision(supervision)
  background_T = np.where(click_labels_T == num_classes, num_classes, IGNORE_LABEL)
  if supervision == 'none':
    return np.full_like(click_labels_T, IGNORE_LABEL)
  if supervision == 'background':
    return background_T.astype(click_labels_T.dtype)
  if action_clicks_T is None:
    raise ValueError(f'supervision {supervision!r} needs action clicks')
  if supervision == 'action':
    return action_clicks_T.astype(click_labels_T.dtype)
  both = np.where(action_clicks_T != IGNORE_LABEL, action_clicks_T, background_T)
  return both.astype(click_labels_T.dtype)
