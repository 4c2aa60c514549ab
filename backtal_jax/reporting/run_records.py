"""What a workdir records about the run that made it, so a result can be traced and repeated.

- `config.txt`: the resolved config, as read by a person;
- `config.json`: the same, loadable again with
  `--config=configs/from_json.py:WORKDIR/config.json` (JSON loses what ml_collections needs to
  accept command-line overrides: the type of an unset placeholder, and tuples; both are recorded
  and restored);
- `run.json`: the command, host, start time, versions of the libraries, the devices and the git
  commit of the code (when it is a git checkout);
- `logs/`: one log file per invocation and process, the console's lines;
- `phases.json`: where this invocation's wall time went (reporting/phase_times.py), at its end.
An invocation writes the first three only once every check has passed (a refused one changes
nothing), and the last at its end; a resume may change only the fields run/run_identity.py lists,
and the records show the latest values of those.
"""

import contextlib
import datetime
import importlib.metadata
import json
import logging
import os
import pathlib
import socket
import subprocess
import sys
from typing import Any
from typing import Iterator
from typing import Sequence

from absl import logging as absl_logging
from etils import epath
import jax
import ml_collections

from backtal_jax.core import files
from backtal_jax.reporting import logs

LIBRARIES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'ml_collections')
_TYPES = {'str': str, 'int': int, 'float': float, 'bool': bool}


def placeholder_types(config: ml_collections.ConfigDict, prefix: str = '') -> dict[str, str]:
  """Dotted name -> type name of every placeholder field (set or not)."""
  types = {}
  for key in config.keys():
    field = config._fields[key]  # pylint: disable=protected-access
    if isinstance(field, ml_collections.ConfigDict):
      types.update(placeholder_types(field, f'{prefix}{key}.'))
    elif isinstance(field, ml_collections.FieldReference):
      types[f'{prefix}{key}'] = field.get_type().__name__
  return types


def config_to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps({'config': config.to_dict(), 'placeholder_types': placeholder_types(config)},
                    indent=1)


def _with_tuples(value: Any) -> Any:
  """JSON lists back to tuples (every sequence of the configs is a tuple)."""
  if isinstance(value, dict):
    return {k: _with_tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_with_tuples(v) for v in value)
  return value


def config_from_json(text: str) -> ml_collections.ConfigDict:
  """The ConfigDict `config_to_json` wrote, placeholders typed again so overrides work."""
  data = json.loads(text)
  config = ml_collections.ConfigDict(_with_tuples(data['config']))
  for name, type_name in data['placeholder_types'].items():
    *parents, key = name.split('.')
    group = config
    for parent in parents:
      group = group[parent]
    value = group[key]
    group[key] = ml_collections.config_dict.placeholder(_TYPES[type_name])
    if value is not None:
      group[key] = value
  return config


def config_markdown(config: ml_collections.ConfigDict) -> str:
  """The config as a fenced block, for TensorBoard's text tab (it renders markdown)."""
  return f'```\n{config}\n```'


def hparams(config: ml_collections.ConfigDict) -> dict[str, str | float | bool]:
  """Every config field by its dotted name, for TensorBoard's HParams dashboard: numbers and
  booleans as they are, anything else (strings, tuples, unset placeholders) as text."""
  def flat(values: dict, prefix: str):
    for key, value in values.items():
      if isinstance(value, dict):
        yield from flat(value, f'{prefix}{key}.')
      elif isinstance(value, (bool, int, float)):
        yield f'{prefix}{key}', value
      else:
        yield f'{prefix}{key}', str(value)
  return dict(flat(config.to_dict(), ''))


def versions(libraries: Sequence[str] = LIBRARIES) -> dict[str, str]:
  """Python's version and each installed library's ('not installed' for the others)."""
  found = {'python': sys.version.split()[0]}
  for name in libraries:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      found[name] = 'not installed'
  return found


def devices() -> dict[str, Any]:
  return {'process_count': jax.process_count(), 'device_count': jax.device_count(),
          'local_device_count': jax.local_device_count(),
          'devices': [f'{d.platform}:{d.device_kind}:{d.id}' for d in jax.devices()]}


def git_commit(directory: pathlib.Path) -> dict[str, Any] | None:
  """HEAD of the git checkout holding `directory`, and whether it has uncommitted changes; None
  outside a checkout (an installed wheel) or without git."""
  def git(*args):
    return subprocess.run(['git', '-C', str(directory), *args], capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()
  try:
    return {'commit': git('rev-parse', 'HEAD'), 'dirty': bool(git('status', '--porcelain'))}
  except (OSError, subprocess.SubprocessError):
    return None


def run_record(argv: list[str]) -> dict[str, Any]:
  return {
      'command': [sys.executable, '-m', 'backtal_jax.main', *argv[1:]],
      'host': socket.gethostname(),
      'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'versions': versions(),
      'devices': devices(),
      'git': git_commit(pathlib.Path(__file__).resolve().parent),
  }


def start_log_file(workdir: str) -> logging.Handler:
  """Copies every console line of this process to WORKDIR/logs/<time>.<host>.<pid>.log."""
  folder = epath.Path(workdir) / 'logs'
  folder.mkdir(parents=True, exist_ok=True)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d-%H%M%S')
  path = folder / f'{stamp}.process{jax.process_index()}.{socket.gethostname()}.{os.getpid()}.log'
  handler = logging.StreamHandler(path.open('w'))
  handler.setFormatter(absl_logging.PythonFormatter())
  handler.addFilter(logs.LibraryInfoFilter())
  handler.setLevel(logging.INFO)
  logging.getLogger().addHandler(handler)
  return handler


def write_phases(workdir: str, record: dict) -> None:
  files.write_json_atomically(epath.Path(workdir) / 'phases.json', record)


@contextlib.contextmanager
def recorded(config: ml_collections.ConfigDict, workdir: str) -> Iterator[None]:
  """config.txt, config.json and run.json in `workdir` (process 0), and this process's log for
  the duration. Entered once the run owns the workdir, so a refused run overwrites nothing."""
  handler = start_log_file(workdir)
  try:
    if jax.process_index() == 0:
      folder = epath.Path(workdir)
      (folder / 'config.txt').write_text(str(config))
      (folder / 'config.json').write_text(config_to_json(config))
      files.write_json_atomically(folder / 'run.json', run_record(sys.argv))
      absl_logging.info('Run records (config.txt, config.json, run.json, logs/) in %s', workdir)
    yield
  finally:
    logging.getLogger().removeHandler(handler)
    handler.close()
