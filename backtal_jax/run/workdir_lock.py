"""One training run per workdir: WORKDIR/LOCK, held with flock(2) for the whole run.

Two runs on one workdir would overwrite each other's checkpoints. The kernel releases an flock
when its process dies, however it dies, so a lock left by a dead process is simply taken over;
the file names the host and pid of its holder for the message a second run prints. The file stays
(empty) after a clean exit. Local and NFS paths only: object stores (gs://) have no locks, and a
run there logs a warning and goes on unlocked.
"""

import contextlib
import fcntl
import json
import os
import pathlib
import socket
import time
from typing import Iterator

from absl import logging

from backtal_jax.core import errors

LOCK_NAME = 'LOCK'


class WorkdirInUse(errors.UserError):
  """Another live process holds the workdir."""


def _holder(text: str) -> dict:
  try:
    holder = json.loads(text)
  except json.JSONDecodeError:
    return {}
  return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
  return (f'pid {holder.get("pid", "?")} on host {holder.get("host", "?")}, started '
          f'{holder.get("started", "?")}')


@contextlib.contextmanager
def held(workdir: str, enabled: bool = True) -> Iterator[None]:
  """Holds WORKDIR/LOCK while the body runs; raises WorkdirInUse if a live process holds it."""
  if not enabled:
    yield
    return
  if '://' in str(workdir):
    logging.warning('%s is not a local path: it cannot be locked, so nothing stops a second run '
                    'from writing into it at the same time.', workdir)
    yield
    return
  folder = pathlib.Path(workdir)
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / LOCK_NAME
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirInUse(
          f'{folder} is in use by another run ({_describe(_holder(path.read_text()))}; lock file '
          f'{path}). Wait for it to end, stop it, or pick another --workdir.') from None
    previous = _holder(os.pread(fd, 1 << 16, 0).decode(errors='replace'))
    if previous:
      logging.warning('Taking over %s from a run that is no longer running (%s).', path,
                      _describe(previous))
    holder = {'host': socket.gethostname(), 'pid': os.getpid(),
              'started': time.strftime('%Y-%m-%d %H:%M:%S %Z')}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    try:
      yield
    finally:
      os.ftruncate(fd, 0)
  finally:
    os.close(fd)
