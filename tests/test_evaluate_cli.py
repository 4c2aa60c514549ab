"""python -m backtal_jax.evaluate: table, JSON summary, and errors that write nothing."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from backtal_jax import evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GT = {'database': {'v1': {'subset': 'test', 'annotations': [
    {'label': 'a', 'segment': [0.0, 10.0]}, {'label': 'b', 'segment': [20.0, 30.0]}]}}}
# tIoU with the ground truth: 'a' 0.55 (true positive up to 0.55), 'b' 1.
PRED = {'results': {'v1': [{'label': 'a', 'segment': [0.0, 5.5], 'score': 0.9},
                           {'label': 'b', 'segment': [20.0, 30.0], 'score': 0.8}]}}


def run_cli(tmp_path, predictions, *extra):
  (tmp_path / 'gt.json').write_text(json.dumps(GT))
  (tmp_path / 'pred.json').write_text(predictions)
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run(
      [sys.executable, '-m', 'backtal_jax.evaluate', f'--ground_truth={tmp_path / "gt.json"}',
       f'--predictions={tmp_path / "pred.json"}', '--subset=test', *extra],
      capture_output=True, text=True, env=env, cwd=ROOT, check=False)


def test_summary_has_quoted_averages():
  thresholds = evaluate.parse_thresholds(['0.1', '0.2', '0.3', '0.4', '0.5', '0.6', '0.7'])
  summary = evaluate.evaluate(GT, PRED, 'test', thresholds)
  np.testing.assert_allclose(summary['mAP'], [1, 1, 1, 1, 1, 0.5, 0.5])
  averages = summary['average_mAP']
  assert set(averages) == {'0.1:0.7', '0.3:0.7', 'all scored'}
  np.testing.assert_allclose(averages['0.1:0.7'], 6 / 7)
  np.testing.assert_allclose(averages['0.3:0.7'], 4 / 5)


def test_bad_thresholds_are_rejected():
  with pytest.raises(ValueError, match='--tiou'):
    evaluate.parse_thresholds(['0.5', '1.5'])
  with pytest.raises(ValueError, match='--tiou'):
    evaluate.parse_thresholds(['half'])


def test_cli_prints_table_and_writes_json(tmp_path):
  out = tmp_path / 'summary.json'
  result = run_cli(tmp_path, json.dumps(PRED), '--tiou=0.5,0.6', f'--output_json={out}')
  assert result.returncode == 0, result.stderr
  assert '0.60' in result.stdout and '50.00' in result.stdout
  summary = json.loads(out.read_text())
  assert summary['tiou'] == [0.5, 0.6]
  np.testing.assert_allclose(summary['mAP'], [1.0, 0.5])


def test_cli_error_names_the_file_and_writes_nothing(tmp_path):
  out = tmp_path / 'summary.json'
  bad = json.dumps({'results': {'v1': [{'label': 'zz', 'segment': [0, 1], 'score': 1.0}]}})
  result = run_cli(tmp_path, bad, f'--output_json={out}')
  assert result.returncode != 0
  assert "pred.json: video 'v1': label 'zz'" in result.stderr
  assert not out.exists()
  assert not list(tmp_path.glob('*.tmp'))
