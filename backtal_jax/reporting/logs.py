"""Log output a researcher reads: progress, evaluations and warnings, not library chatter."""

import logging

from absl import logging as absl_logging

CHATTY_LIBRARIES = ('orbax', 'etils', 'jax/_src')


class LibraryInfoFilter(logging.Filter):
  """Drops INFO-and-below records of chatty libraries (orbax logs every save step by step)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.WARNING:
      return True
    return not any(name in record.pathname for name in CHATTY_LIBRARIES)


def quiet_library_logs() -> None:
  absl_logging.get_absl_handler().addFilter(LibraryInfoFilter())
