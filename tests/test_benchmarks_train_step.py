"""The train-step benchmark's code path at a tiny shape: no timing is asserted, only that it runs
end to end, writes its JSON with every field, and reports the official step as skipped (not
failed) where it cannot run."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import train_step

REPO = pathlib.Path(__file__).resolve().parents[1]
ROW_FIELDS = {
    'implementation', 'dataset', 'batch', 'length', 'width', 'dtype', 'precision', 'status',
    'analytic_flops', 'xla_flops', 'ms', 'steps_per_s', 'step_ms', 'tflops', 'peak_bytes',
    'xla_bytes', 'compile_s', 'loss'}


@pytest.fixture
def fake_official_checkout(tmp_path):
  """A folder that passes the checkout check; the CPU skip must come before any import of it."""
  (tmp_path / 'lib' / 'models').mkdir(parents=True)
  (tmp_path / 'lib' / 'models' / 'network.py').write_text('raise ImportError("not imported")\n')
  return tmp_path


def test_main_runs_at_a_tiny_shape_and_writes_json(tmp_path):
  out = tmp_path / 'train_step.json'
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.train_step', '--shapes=4x16', '--width=8',
       '--dtypes=float32,bfloat16', '--warmup=0', '--repeats=1', '--json_out=%s' % out],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  written = json.loads(out.read_text())
  assert written['environment']['jax_version'] and written['environment']['date']
  assert 'analytic' in written['flops_counted']
  rows = written['results']
  assert [(r['dtype'], r['precision']) for r in rows] == [('float32', 'default'),
                                                          ('bfloat16', 'default')]
  for row in rows:
    assert set(row) == ROW_FIELDS
    assert row['status'] == 'ok' and row['implementation'] == 'backtal_jax'
    assert (row['batch'], row['length'], row['width']) == (4, 16, 8)
    assert row['ms'] > 0 and row['steps_per_s'] > 0 and len(row['step_ms']) == 1
    assert row['analytic_flops'] > 0 and row['tflops'] > 0
    assert row['xla_bytes'] > 0 and np.isfinite(row['loss'])


def test_official_step_is_skipped_with_its_reason_at_small_shapes(fake_official_checkout):
  rows = train_step.run_benchmark([('thumos14', (4, 16, 8))], ['float32'], ['default'],
                                  warmup=0, repeats=1, official_repo=str(fake_official_checkout))
  official = rows[-1]
  assert official['implementation'] == 'official' and official['ms'] is None
  assert official['status'].startswith('skipped: official widths are fixed')


def test_a_path_that_is_not_a_checkout_is_refused(tmp_path):
  with pytest.raises(FileNotFoundError, match='lib/models/network.py'):
    train_step.check_official_repo(str(tmp_path))


def test_random_batch_has_labels_and_a_few_background_clicks_per_video():
  config = train_step.benchmark_config('activitynet12', (8, 100, 16), 'float32')
  batch = train_step.random_batch(0, config)
  assert batch['features'].shape == (8, 100, 16)
  labels_per_video = batch['video_labels'].sum(axis=1)
  assert np.all((labels_per_video >= 1) & (labels_per_video <= 2))
  background = config.model.num_classes
  clicks_per_video = (batch['click_labels'] == background).sum(axis=1)
  assert np.all((clicks_per_video >= 1) & (clicks_per_video <= 13))
  assert set(np.unique(batch['click_labels'])) <= {-100, background}


def test_analytic_flops_at_the_thumos14_shape():
  """Affinity convolutions dominate: 11 products of 2·B·T·3C·O (4 forward, 4 weight gradients,
  3 input gradients; the plain pass's first one needs none) = 3.32 TFLOP of about 3.5."""
  config = train_step.benchmark_config('thumos14', (16, 750, 2048), 'float32')
  affinity_product = 2 * 16 * 750 * 3 * 2048 * 2048
  flops = train_step.analytic_step_flops(config)
  assert 11 * affinity_product < flops < 12 * affinity_product
  assert config.model.filter_dim == 512 and config.model.embed_hidden_dim == 512
