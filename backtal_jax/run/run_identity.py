"""A run's identity: what it trains is fixed by its first invocation.

A resume with another batch size, learning rate, supervision or seed would mix two runs in one
workdir (and config.json would show only the second); such a resume is refused, naming each
changed field with both values. The fields a resume may change are RESUMABLE: how long to train,
how and how often to evaluate and log, and where the same data are read from. The README ("When
something goes wrong") lists them.
"""

import json

from etils import epath
import ml_collections

from backtal_jax.core import errors
from backtal_jax.reporting import run_records

RESUMABLE_FIELDS = (
    'train.num_epochs', 'train.log_every_steps', 'train.progress_every_seconds',
    'train.max_checkpoints_to_keep', 'train.debug_transfer_guard',
    'data.features_root', 'data.tfds_data_dir', 'data.prefetch', 'data.readers',
    'data.resident', 'data.resident_max_gb', 'data.dataset',
)
RESUMABLE_GROUPS = ('eval.',)  # every evaluation setting


class IdentityChanged(errors.UserError):
  """A resume whose config changes what the run trains."""


def resumable(name: str) -> bool:
  return name in RESUMABLE_FIELDS or name.startswith(RESUMABLE_GROUPS)


def _flat(values: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in values.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def recorded_values(text: str) -> dict:
  """Dotted field -> value of a recorded config.json, as JSON holds it."""
  return _flat(json.loads(text)['config'])


def changed_fields(recorded: dict, config: ml_collections.ConfigDict) -> list[str]:
  """'config.X: A in the run, B now' for each field outside RESUMABLE that differs."""
  now = recorded_values(run_records.config_to_json(config))
  return [f'config.{name}: {recorded.get(name, "(absent)")!r} in the run, '
          f'{now.get(name, "(absent)")!r} now'
          for name in sorted(set(recorded) | set(now))
          if not resumable(name) and recorded.get(name) != now.get(name)]


def check_resume(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises IdentityChanged if `workdir` holds a run whose recorded config differs from `config`
  in a field a resume may not change. A workdir without config.json has nothing to compare."""
  path = epath.Path(workdir) / 'config.json'
  if not path.exists():
    return
  try:
    recorded = recorded_values(path.read_text())
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise errors.UserError(f'{path}: not a config.json that a run wrote ({e}); the run there '
                           'cannot be resumed safely: pick another --workdir') from None
  changed = changed_fields(recorded, config)
  if changed:
    raise IdentityChanged(
        f'{workdir} holds a run with another config; resuming it with these changes would mix '
        'two runs (start a new one in another --workdir, or resume with the recorded values: '
        f'--config=configs/from_json.py:{path}):\n  ' + '\n  '.join(changed))
