"""python -m backtal_jax.evaluate: table, JSON summary, and errors that write nothing."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from backtal_jax import evaluate
from backtal_jax.reporting import averages
from configs import activitynet12
from configs import hacs
from configs import thumos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GT = {'database': {'v1': {'subset': 'test', 'annotations': [
    {'label': 'a', 'segment': [0.0, 10.0]}, {'label': 'b', 'segment': [20.0, 30.0]}]}}}
# tIoU with the ground truth: 'a' 0.55 (true positive up to 0.55), 'b' 1.
PRED = {'results': {'v1': [{'label': 'a', 'segment': [0.0, 5.5], 'score': 0.9},
                           {'label': 'b', 'segment': [20.0, 30.0], 'score': 0.8}]}}


def run_cli(tmp_path, predictions, *extra, ground_truth=None):
  (tmp_path / 'gt.json').write_text(json.dumps(ground_truth or GT))
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
  assert set(averages) == {'mAP_avg_0.1_0.7', 'mAP_avg_0.3_0.7'}  # 0.1:0.9 lacks 0.8 and 0.9
  np.testing.assert_allclose(averages['mAP_avg_0.1_0.7'], 6 / 7)
  np.testing.assert_allclose(averages['mAP_avg_0.3_0.7'], 4 / 5)


def test_an_average_is_the_same_number_whatever_else_was_scored():
  few = evaluate.evaluate(GT, PRED, 'test', evaluate.parse_thresholds(
      ['0.1', '0.2', '0.3', '0.4', '0.5', '0.6', '0.7']))
  every = evaluate.evaluate(GT, PRED, 'test', averages.ALL_THRESHOLDS)
  assert set(every['average_mAP']) == set(averages.AVERAGES)
  for name, value in few['average_mAP'].items():
    assert every['average_mAP'][name] == value


def test_each_dataset_config_scores_the_thresholds_of_its_averages():
  for config in (thumos.get_config(), activitynet12.get_config(), hacs.get_config()):
    assert tuple(config.eval.tiou_thresholds) == averages.dataset_thresholds(config.data.dataset)


def test_shipped_ground_truth_names_are_accepted(tmp_path):
  (tmp_path / 'pred.json').write_text(json.dumps({'results': {'video_test_0000004': [
      {'label': 'CricketBowling', 'segment': [0.0, 1.0], 'score': 0.5}]}}))
  result = subprocess.run(
      [sys.executable, '-m', 'backtal_jax.evaluate', '--ground_truth=thumos14_gt',
       f'--predictions={tmp_path / "pred.json"}', '--subset=test', '--tiou=0.5'],
      capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), cwd=tmp_path,
      check=False)
  assert result.returncode == 0, result.stderr
  assert "in 210 videos of subset 'test'" in result.stdout


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


def test_cli_per_class_counts_and_unscored_videos(tmp_path):
  ground_truth = {'database': {
      **GT['database'],
      'v2': {'subset': 'test', 'annotations': [{'label': 'a', 'segment': [5.0, 9.0]}]},
      'v3': {'subset': 'train', 'annotations': [{'label': 'b', 'segment': [0.0, 1.0]}]}}}
  predictions = {'results': {
      **PRED['results'],
      'v3': [{'label': 'b', 'segment': [0.0, 1.0], 'score': 0.5}],
      'elsewhere': [{'label': 'a', 'segment': [0.0, 1.0], 'score': 0.5}] * 2}}
  out = tmp_path / 'summary.json'
  result = run_cli(tmp_path, json.dumps(predictions), '--tiou=0.5,0.6', '--per_class',
                   f'--output_json={out}', ground_truth=ground_truth)
  assert result.returncode == 0, result.stderr
  assert ('warning: 1 predicted videos are absent from the ground truth; their predictions '
          'count as false positives: elsewhere') in result.stderr
  assert "warning: 1 predicted videos are not in subset 'test'" in result.stderr
  assert ("ground truth: 3 instances in 2 videos of subset 'test'; predictions: 5 in 3 videos, "
          '2 of them in videos of the subset') in result.stdout
  # Class a: 2 instances, 1 prediction (tIoU 0.55): AP 0.5 at 0.5, 0 at 0.6; class b: AP 1.
  assert 'a          2      1  50.00   0.00' in result.stdout
  assert 'b          1      1 100.00 100.00' in result.stdout
  summary = json.loads(out.read_text())
  np.testing.assert_allclose(summary['per_class_AP']['a'], [0.5, 0.0])
  np.testing.assert_allclose(summary['mAP'], [0.75, 0.5])
  assert summary['per_class_counts'] == {'a': {'ground_truth': 2, 'predictions': 1},
                                         'b': {'ground_truth': 1, 'predictions': 1}}
  assert summary['videos_absent_from_ground_truth'] == ['elsewhere']
  assert summary['videos_of_other_subsets'] == ['v3']
  assert (summary['ground_truth_instances'], summary['predictions'],
          summary['predictions_in_subset']) == (3, 5, 2)
