"""A run's recorded config, loaded back: the config.json a run writes into its workdir.

  python -m backtal_jax.main --config=configs/from_json.py:/tmp/backtal/config.json \
      --workdir=/tmp/backtal_again [--config.train.seed=1 ...]
"""

from etils import epath
import ml_collections

from backtal_jax.reporting import run_records


def get_config(path: str) -> ml_collections.ConfigDict:
  """The config recorded at `path` (local or gs://)."""
  if not path:
    raise ValueError('configs/from_json.py needs the recorded file: '
                     '--config=configs/from_json.py:WORKDIR/config.json')
  try:
    return run_records.config_from_json(epath.Path(path).read_text())
  except (ValueError, KeyError, TypeError, AttributeError) as e:  # hand-edited or truncated
    raise ValueError(f'{path}: not a config.json that a run wrote ({type(e).__name__}: {e})'
                     ) from None
