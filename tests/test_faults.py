"""Bad input to every command: one message naming the problem, exit status 1, no traceback."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from backtal_jax.data import features
from tests import npz_files

REPO = pathlib.Path(__file__).resolve().parents[1]
READ_ARGS = dict(num_classes=npz_files.NUM_CLASSES, feature_dim=npz_files.FEATURE_DIM)


def command(module, *args, timeout=120):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout, env={**os.environ, 'PYTHONPATH': str(REPO)},
                        check=False)


def assert_user_error(result, *texts):
  assert result.returncode == 1, result.stderr
  assert 'Traceback' not in result.stderr, result.stderr
  for text in texts:
    assert text in result.stderr, result.stderr


def test_random_bytes_are_not_a_valid_npz_file(tmp_path):
  path = tmp_path / 'random.npz'
  path.write_bytes(np.random.default_rng(0).bytes(300))
  with pytest.raises(features.FeatureFileError, match='not a valid .npz file') as error:
    features.read_video(path, **READ_ARGS)
  assert 'pickle' not in str(error.value)


def test_float64_features_that_overflow_float32_name_the_file_and_key(tmp_path):
  arrays = npz_files.video_arrays(0, train=True)
  arrays['feat_tem'] = arrays['feat_tem'].astype(np.float64)
  arrays['feat_tem'][1, 2] = 1e39  # finite in float64, inf in float32
  path = tmp_path / 'big.npz'
  np.savez(path, **arrays)
  with pytest.raises(features.FeatureFileError,
                     match=r"big.npz: key 'feat_tem': 1 values overflow float32"):
    features.read_video(path, **READ_ARGS)


GT = {'database': {'v1': {'subset': 'test', 'annotations': [
    {'label': 'a', 'segment': [0.0, 10.0]}]}}}


@pytest.mark.parametrize('predictions, extra, text', [
    ({'results': {}}, ['--output_json=/nonexistent_folder/summary.json'],
     'folder /nonexistent_folder does not exist'),
    ({'results': [1, 2]}, [], "'results' must map video names to lists of detections"),
    ({'results': {'v1': 3}}, [], "video 'v1': expected a list of detections"),
    (None, [], 'malformed JSON'),
])
def test_evaluate_cli_user_errors(tmp_path, predictions, extra, text):
  (tmp_path / 'gt.json').write_text(json.dumps(GT))
  pred = tmp_path / 'pred.json'
  if predictions is None:
    pred.write_bytes(np.random.default_rng(0).bytes(200))
  else:
    pred.write_text(json.dumps(predictions))
  result = command('backtal_jax.evaluate', f'--ground_truth={tmp_path / "gt.json"}',
                   f'--predictions={pred}', '--subset=test', *extra)
  assert_user_error(result, text)
  assert result.stdout == ''  # nothing printed before the error


def test_synthetic_builder_rejects_nonsensical_knobs_by_name(tmp_path):
  result = command('backtal_jax.data.synthetic', f'--out={tmp_path / "out"}', '--half_width=0',
                   '--num_segments=-3', '--set=background_switch_prob=2')
  assert_user_error(result, 'half_width=0', 'num_segments=-3', 'background_switch_prob=2.0')
  assert not (tmp_path / 'out').exists()
  result = command('backtal_jax.data.synthetic', f'--out={tmp_path / "out"}', '--set=noise=loud')
  assert_user_error(result, "--set 'noise=loud': noise takes a float")


def test_clicks_cli_names_a_missing_file_and_an_unknown_subset(tmp_path):
  assert_user_error(command('backtal_jax.data.clicks', '--stats',
                            f'--ground_truth={tmp_path / "gt.json"}'), 'gt.json')
  assert_user_error(command('backtal_jax.data.clicks', '--stats', '--subset=training'),
                    "no video in subset 'training'")


def test_tfds_builder_names_a_bad_file(tmp_path):
  (tmp_path / 'manual' / 'val').mkdir(parents=True)
  bad = tmp_path / 'manual' / 'val' / 'video_0000.npz'
  bad.write_bytes(np.random.default_rng(1).bytes(300))
  result = command('backtal_jax.data.tfds_builder', f'--manual_dir={tmp_path / "manual"}',
                   f'--data_dir={tmp_path / "tfds"}')
  assert_user_error(result, f"{bad}: key 'feat_spa': not a valid .npz file")


def test_main_reports_every_config_problem_before_any_work(tmp_path):
  result = command('backtal_jax.main', '--config=configs/thumos.py:debug',
                   f'--workdir={tmp_path / "run"}', '--config.train.batch_size=6',
                   '--config.eval.batch_size=2', '--config.train.selection_metric=map@0.33')
  assert_user_error(result, '3 problem(s) found before the first step',
                    'config.train.batch_size is 6', 'config.eval.batch_size is 2',
                    "config.train.selection_metric is 'map@0.33'")
  assert not (tmp_path / 'run' / 'synthetic_data').exists()
  assert not (tmp_path / 'run' / 'checkpoints').exists()
