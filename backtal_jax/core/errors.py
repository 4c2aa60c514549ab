"""How every command ends: one line for a mistake the user can fix, 128 + N for a stop by signal N,
a traceback only for a bug.

Each command's `__main__` defines its flags with its own `define_flags()` (so importing a module
defines none, and a library such as data/synthetic.py can also be a command without adding its
flags to every program that imports it), then calls `errors.run(main)` instead of `app.run(main)`;
code anywhere below raises `UserError` (or a subclass, such as `features.FeatureFileError`) with a
message that names the file, the key or field, the value found and what was expected.
"""

import errno
import os
import re
import shlex
import signal
import sys
import traceback
from typing import Callable
from typing import Sequence

from absl import app
from absl import flags
from absl import logging

# Problems of the file system the user fixes by hand (a wrong path, a missing folder, permissions).
_FILE_SYSTEM_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
_FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # no space, quota, read-only disk
USER_ERROR_STATUS = 1  # exit status of a user error
INTERRUPTED_STATUS = 128 + signal.SIGINT  # Ctrl-C before the training loop took over the signal
MAX_PROBLEMS = 25  # problems listed in one report; the rest are counted


class UserError(ValueError):
  """A mistake in the input (file, flag, config value) that the user can fix; never a bug."""


class Problems(UserError):
  """Several user errors found by one check, reported together (up to MAX_PROBLEMS)."""

  def __init__(self, problems: Sequence[str], when: str):
    listed = list(problems[:MAX_PROBLEMS])
    more = len(problems) - len(listed)
    lines = [f'{len(problems)} problem(s) found {when}:'] + [f'  - {p}' for p in listed]
    super().__init__('\n'.join(lines + ([f'  ... and {more} more'] if more else [])))
    self.problems = list(problems)


class Stopped(Exception):
  """A run stopped cleanly on a signal (SIGTERM, Ctrl-C) after saving a checkpoint."""

  def __init__(self, signum: int, step: int):
    super().__init__(f'Stopped by {signal.Signals(signum).name} at step {step}')
    self.signum, self.step = signum, step

  @property
  def exit_status(self) -> int:
    """128 + the signal number, as a shell reports a process killed by it: schedulers can tell a
    preempted run from a finished one."""
    return 128 + self.signum


def resume_command() -> str:
  """The command line of this process, runnable from any folder: rerunning it resumes the run."""
  argv = [sys.executable, *sys.orig_argv[1:]]
  return f'cd {shlex.quote(os.getcwd())} && {shlex.join(argv)}'


def is_user_error(error: BaseException) -> bool:
  """A mistake the user fixes: a bad input, a wrong path or permission, a full or read-only disk."""
  return (isinstance(error, (UserError, *_FILE_SYSTEM_ERRORS)) or
          (isinstance(error, OSError) and error.errno in _FULL_DISK_ERRNOS))


def exit_now(status: int) -> None:
  """Ends the process with `status` once the output is flushed, without waiting for the threads
  a failed step may have left behind (orbax's pending writes wait forever on a folder they cannot
  create): a command always exits."""
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)  # pylint: disable=protected-access


def _guarded(main: Callable[[Sequence[str]], None]) -> Callable[[Sequence[str]], None]:
  def guarded_main(argv: Sequence[str]) -> None:
    try:
      main(argv)
    except Stopped as e:
      logging.warning('%s; a checkpoint is saved. To resume, run:\n  %s', e, resume_command())
      exit_now(e.exit_status)
    except KeyboardInterrupt:
      sys.stderr.write('Interrupted (Ctrl-C).\n')
      exit_now(INTERRUPTED_STATUS)
    except Exception as e:  # pylint: disable=broad-except
      if is_user_error(e):
        sys.stderr.write(f'error: {e}\n')
      else:  # a bug: its traceback
        traceback.print_exc()
      exit_now(USER_ERROR_STATUS)
  return guarded_main


def _flag_message(error: Exception, argv: Sequence[str]) -> str:
  """One line for a flag that cannot be parsed: a config file's own error without the traceback
  ml_collections adds, and an override of a field that does not exist named by its flag."""
  text = str(error)
  if 'Error whilst parsing config file' in text:
    flag = text.split(': Error whilst parsing config file')[0]
    cause = [line for line in text.splitlines() if line.strip()][-1]
    return f'{flag}: {cause.split(": ", 1)[-1]}'
  if isinstance(error, (KeyError, AttributeError)):
    name = re.search(r'(\w+)', text).group(1)
    hint = re.search(r'Did you mean "(\w+)"', text)
    used = [arg.split('=')[0] for arg in argv[1:] if arg.startswith('--') and
            re.search(rf'\.{name}(\.|$)', arg.split('=')[0])]
    return (f'{used[0] if used else "--config"}: the config has no field {name!r}'
            + (f' (did you mean {hint.group(1)!r}?)' if hint else ''))
  return text


def _config_file_problem(flag_values: flags.FlagValues, name: str) -> str | None:
  """ml_collections defers a config file that fails to load to its first use: found here."""
  try:
    getattr(flag_values[name].value, 'keys', None)
  except OSError as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    cause = lines[-1].split('failure to load: ')[-1]
    return f'--{name}={flag_values[name].serialize().split("=", 1)[-1]}: {cause}'
  return None


def parse_flags(argv: Sequence[str], flag_values: flags.FlagValues | None = None) -> list[str]:
  """absl's flag parsing, with a mistake in a flag, a config file, its variant or an override as
  one `error:` line, found before anything runs."""
  flag_values = flags.FLAGS if flag_values is None else flag_values
  try:
    remaining = flag_values(argv)
  except (flags.Error, KeyError, AttributeError) as e:
    remaining, problem = [], _flag_message(e, argv)
  else:
    problem = next((p for name in flag_values
                    if (p := _config_file_problem(flag_values, name))), None)
  if problem:
    sys.stderr.write(f'error: {problem}\n')
    sys.exit(USER_ERROR_STATUS)
  return remaining


def run(main: Callable[[Sequence[str]], None]) -> None:
  """`app.run(main)` with the exits described in the module docstring."""
  app.run(_guarded(main), flags_parser=parse_flags)
