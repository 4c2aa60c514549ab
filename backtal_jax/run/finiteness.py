"""Never save a non-finite state: the state itself is checked after every step, not the loss.

The loss of a step is computed before its update, so a step whose update overflows reports a
finite loss and leaves NaN parameters behind; a checkpoint of them would be resumed from and fail
again. `StepWatch` dispatches a per-leaf all-finite reduction of the parameters and optimiser
moments after each step (no host sync: the flags are fetched at the loop's sync points, which come
before every save) and names the first bad step, its non-finite leaves and the videos of its
batch.
"""

import dataclasses
from typing import Any
from typing import Callable
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from backtal_jax.core import errors
from backtal_jax.core import sharding

MAX_LEAVES_NAMED = 8


class DivergedError(errors.UserError):
  """Training produced a non-finite loss or state; nothing of it was saved."""


def _watched(state: Any) -> tuple:
  """What a checkpoint holds besides the step and the RNG: parameters, then optimiser moments."""
  return state.params, state.opt_state


@jax.jit
def finite_leaves(tree: Any) -> jax.Array:
  """One flag per floating-point leaf of `tree` (flatten order): all its values are finite."""
  flags = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
           if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.stack(flags) if flags else jnp.ones((0,), bool)


def float_leaf_names(state: Any) -> list[str]:
  """Names of the leaves `finite_leaves(_watched(state))` flags, e.g. params['classifier']..."""
  names = []
  for label, tree in zip(('params', 'opt_state'), _watched(state)):
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      if jnp.issubdtype(leaf.dtype, jnp.inexact):
        names.append(label + jax.tree_util.keystr(path))
  return names


@dataclasses.dataclass
class _Step:
  step: int
  finite_per_leaf: jax.Array  # one flag per floating-point leaf, on the device until the next check
  loss: jax.Array
  indices_B: jax.Array  # the step's dataset indices, batch-sharded (-1: padding)


class StepWatch:
  """The steps since the last check, with their all-finite flags still on the device."""

  def __init__(self):
    self._steps: list[_Step] = []

  def record(self, step: int, state: Any, loss: jax.Array, indices_B: jax.Array) -> None:
    self._steps.append(_Step(step, finite_leaves(_watched(state)), loss, indices_B))

  def check(self, state: Any, video_name: Callable[[int], str], last_saved: int | None,
            checkpoint_dir: str) -> None:
    """Raises DivergedError if a step since the last check left a non-finite loss or state."""
    steps, self._steps = self._steps, []
    fetched = jax.device_get([(s.finite_per_leaf, s.loss) for s in steps])
    for entry, (finite_per_leaf, loss) in zip(steps, fetched):
      if not (finite_per_leaf.all() and np.isfinite(loss)):
        names = float_leaf_names(state)
        leaves = [names[i] for i in np.flatnonzero(~finite_per_leaf)]
        videos = [video_name(int(i)) for i in sharding.local_rows(entry.indices_B) if i >= 0]
        raise DivergedError(diverged_message(entry.step, float(loss), leaves, videos, last_saved,
                                             checkpoint_dir))


def diverged_message(step: int, loss: float, leaves: Sequence[str], videos: Sequence[str],
                     last_saved: int | None, checkpoint_dir: str) -> str:
  named = ', '.join(leaves[:MAX_LEAVES_NAMED]) + (
      f' and {len(leaves) - MAX_LEAVES_NAMED} more' if len(leaves) > MAX_LEAVES_NAMED else '')
  kept = (f'The last checkpoint, step {last_saved} in {checkpoint_dir}, was written before it '
          'and is kept; a rerun with the same workdir resumes from there.'
          if last_saved is not None else
          'No checkpoint had been written yet; a rerun starts from the beginning.')
  return (f'Training diverged at step {step} (loss {loss:.4g}); non-finite state after it: '
          f'{named or "none (the loss alone)"}. The batch of that step held the videos '
          f'{videos}. Nothing of it is saved. {kept} Check those videos\' feature files, or '
          'lower config.train.learning_rate.')
