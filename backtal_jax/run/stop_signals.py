"""SIGTERM and Ctrl-C as a flag the training loop checks at its sync points, agreed on by every
process, so that a stopped run saves a checkpoint and exits cleanly."""

import dataclasses
import os
import signal

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclasses.dataclass
class Preemption:
  """Turns SIGTERM and Ctrl-C (SIGINT) into a flag the loop checks at its sync points, so it can
  save and stop cleanly; a second signal ends the process at once, without saving."""
  requested: bool = False
  signum: int = 0  # the first signal received

  def __enter__(self):
    self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
    return self

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if self.requested:
      logging.warning('%s received again: stopping now, without saving.', name)
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    logging.warning('%s received: saving a checkpoint within config.train.log_every_steps steps, '
                    'then stopping (send it again to stop at once, without saving).', name)
    self.requested, self.signum = True, signum

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def any_process(flag: bool) -> bool:
  """True on every process if `flag` is True on any: SIGTERM reaches hosts at different steps, and
  a host that stopped alone would leave the others waiting in the next step's collectives."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.process_allgather(np.asarray(flag)).any())
