"""Test setup: four CPU devices, so the sharded code paths run without an accelerator (an
XLA_FLAGS set before is kept: `.ci/run` also runs the `one_device` tests at one device)."""

import os
import pathlib

import pytest

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

TESTDATA = pathlib.Path(__file__).parent / 'testdata'


def debug_config(testbed, **train_overrides):
  """configs/thumos.py:debug on the testbed at `testbed`, without plots."""
  from configs import thumos  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS)
  config = thumos.get_config('debug')
  config.data.features_root = str(testbed)
  config.eval.num_plots = 0
  for key, value in train_overrides.items():
    config.train[key] = value
  return config


def snapshot(folder: pathlib.Path) -> dict[str, bytes]:
  """Every file under `folder` and its bytes (the workdir's LOCK aside: emptied when a run ends),
  to show that a refused run changed nothing."""
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*'))
          if p.is_file() and p.name != 'LOCK'}


@pytest.fixture(scope='session')
def finished_run(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
  """(testbed, workdir) of a finished two-epoch debug run, shared by the invariant tests and the
  bad-input generator: copy the workdir before changing it."""
  from backtal_jax.run import train  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS)
  root = tmp_path_factory.mktemp('finished')
  train.train_and_evaluate(debug_config(root / 'testbed'), str(root / 'run'))
  return root / 'testbed', root / 'run'
