"""Log output a researcher reads: progress, evaluations and warnings, not library chatter."""

import logging

from absl import logging as absl_logging

CHATTY_LIBRARIES = ('orbax', 'etils', 'jax/_src')


class LibraryInfoFilter(logging.Filter):
  """Drops INFO-and-below records of chatty libraries (orbax logs every save step by step), and
  the tracebacks they attach to their errors: the exception reaches the command, which prints
  one `error:` line for a user's problem (a full disk) or the traceback of a bug."""

  def filter(self, record: logging.LogRecord) -> bool:
    from_library = any(name in record.pathname for name in CHATTY_LIBRARIES)
    if from_library and record.exc_info:
      record.exc_info, record.exc_text = None, None
    return record.levelno >= logging.WARNING or not from_library


def quiet_library_logs() -> None:
  absl_logging.get_absl_handler().addFilter(LibraryInfoFilter())
