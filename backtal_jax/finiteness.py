"""Never save a non-finite state: the state itself is checked after every step, not the loss.

The loss of a step is computed before its update, so a step whose update overflows reports a
finite loss and leaves NaN parameters behind; a checkpoint of them would be resumed from and fail
again. `StepWatch` dispatches an all-finite reduction of the parameters and optimiser moments after
each step (no host sync: the flags are fetched at the loop's sync points, which come before every
save) and names the first bad step, its non-finite leaves and the videos of its batch.
"""

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from backtal_jax import errors

MAX_LEAVES_NAMED = 8


class DivergedError(errors.UserError):
  """Training produced a non-finite loss or state; nothing of it was saved."""


def _float_leaves(tree: Any) -> list:
  return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]


@jax.jit
def all_finite(tree: Any) -> jax.Array:
  """True iff every floating-point value of `tree` is finite (one reduction on the device)."""
  flags = [jnp.isfinite(x).all() for x in _float_leaves(tree)]
  return jnp.stack(flags).all() if flags else jnp.asarray(True)


def nonfinite_leaves(tree: Any) -> list[str]:
  """Paths of the floating-point leaves of `tree` that hold a NaN or an infinity."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  bad = []
  for path, leaf in flat:
    if jnp.issubdtype(leaf.dtype, jnp.inexact) and not bool(jnp.isfinite(leaf).all()):
      bad.append(jax.tree_util.keystr(path))
  return bad


@dataclasses.dataclass
class _Step:
  step: int
  state_finite: jax.Array  # device scalar, fetched at the next check
  loss: jax.Array
  indices: np.ndarray  # dataset indices of this process's rows (-1: padding)


class StepWatch:
  """The steps since the last check, with their all-finite flags still on the device."""

  def __init__(self):
    self._steps: list[_Step] = []

  def record(self, step: int, state: Any, loss: jax.Array, indices: np.ndarray) -> None:
    self._steps.append(_Step(step, all_finite((state.params, state.opt_state)), loss, indices))

  def check(self, state: Any, video_name: Callable[[int], str], last_saved: int | None,
            checkpoint_dir: str) -> None:
    """Raises DivergedError if a step since the last check left a non-finite loss or state."""
    steps, self._steps = self._steps, []
    fetched = jax.device_get([(s.state_finite, s.loss) for s in steps])
    for entry, (state_finite, loss) in zip(steps, fetched):
      if not (state_finite and np.isfinite(loss)):
        leaves = nonfinite_leaves({'params': state.params, 'opt_state': state.opt_state})
        videos = [video_name(int(i)) for i in entry.indices if i >= 0]
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
