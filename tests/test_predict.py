"""Prediction on unannotated feature files: the evaluation-only path's detections, any length."""

import csv
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from backtal_jax.core import resample
from backtal_jax.core import sharding
from backtal_jax.data import annotations
from backtal_jax.data import datasets
from backtal_jax.data import features
from backtal_jax.data import unannotated
from backtal_jax.reporting import evaluation_report
from backtal_jax.run import checkpoint
from backtal_jax.run import evaluate_only
from backtal_jax.run import history
from backtal_jax.run import optimizer
from backtal_jax.run import predictor
from backtal_jax.run import train_state
from configs import thumos

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.one_device  # prediction works on any device count (.ci/run: 1 and 4)
LENGTHS = (17, 64, 100, 251)  # shorter than, equal to and longer than num_segments (64)


def debug_config(testbed):
  config = thumos.get_config('debug')
  config.data.features_root = str(testbed)
  # The model is not trained: with every class scored, post-processing still has work to do.
  config.eval.class_score_thresh = 0.0
  return config


def evaluation_only(config, checkpoint_dir, workdir) -> dict:
  config = config.copy_and_resolve_references()
  config.eval.only, config.eval.checkpoint = True, str(checkpoint_dir)
  evaluate_only.evaluate_checkpoint(config, str(workdir))
  return json.loads((workdir / 'detections' / 'evaluation.json').read_text())['results']


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A debug run's checkpoint folders (untrained parameters) and its evaluation-only detections."""
  root = tmp_path_factory.mktemp('predict')
  config = debug_config(root / 'testbed')
  datasets.synthetic_root(config, str(root))
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    model = train_state.make_model(config)
    state = train_state.create_train_state(config, model, optimizer.official_adam(config.train),
                                           mesh)
  saver = checkpoint.Checkpoints(str(root / 'run'))
  saver.save(state, history.CheckpointRecord(), is_best=True)
  saver.wait_until_finished()
  saver.close()
  detections = evaluation_only(config, root / 'run' / 'best', root / 'evaluation')
  assert sum(map(len, detections.values())) > 0  # else the comparisons below prove nothing
  return {'root': root, 'config': config, 'best': root / 'run' / 'best', 'state': state,
          'detections': detections}


def read_testbed_videos(trained) -> list[features.VideoRecord]:
  config = trained['config']
  paths = features.list_split(config.data.features_root, config.data.test_split)
  return [features.read_video(p, num_classes=config.model.num_classes,
                              feature_dim=config.data.feature_dim) for p in paths]


def write_metadata_csv(path, records):
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['vid_name', 'duration', 'fps'])
    writer.writerows([r.vid_name, repr(r.duration), repr(r.fps)] for r in records)


def run_cli(*args, timeout=240):
  return subprocess.run(
      [sys.executable, '-m', 'backtal_jax.predict', *args], cwd=REPO, capture_output=True,
      text=True, timeout=timeout, env={**os.environ, 'PYTHONPATH': str(REPO)})


def test_best_holds_parameters_only_and_both_folders_restore(trained):
  best_step = trained['best'] / 'epoch_0'
  assert sorted(p.name for p in best_step.iterdir() if p.is_dir()) == ['params', 'record']
  mesh = sharding.make_mesh()
  config = trained['config']
  target = train_state.abstract_params(config, train_state.make_model(config), mesh)
  expected = jax.tree.leaves(jax.device_get(trained['state'].params))
  for folder in ('best', 'checkpoints'):
    restored = checkpoint.restore_params(str(trained['root'] / 'run' / folder), target)
    for ours, ref in zip(jax.tree.leaves(jax.device_get(restored)), expected, strict=True):
      np.testing.assert_array_equal(ours, ref)


def test_metadata_free_npz_files_give_the_evaluation_only_detections(trained, tmp_path):
  records = read_testbed_videos(trained)
  bare = tmp_path / 'bare'
  bare.mkdir()
  for r in records:  # official layout, channels-first, nothing but the features
    half = r.features_SxF.shape[1] // 2
    np.savez(bare / f'{r.vid_name}.npz', feat_spa=r.features_SxF[:, :half].T,
             feat_tem=r.features_SxF[:, half:].T)
  write_metadata_csv(tmp_path / 'meta.csv', records)
  predictor.predict(trained['config'], str(trained['best']), [str(bare)],
                    str(tmp_path / 'out.json'), metadata_csv=str(tmp_path / 'meta.csv'))
  results = json.loads((tmp_path / 'out.json').read_text())['results']
  assert results == trained['detections']


def test_npy_files_of_any_length_through_the_command_line(trained, tmp_path):
  """Each .npy has another length; the evaluation-only path, given the same features resampled
  to num_segments in official files, must find the same detections. A clip the ground truth lacks
  is named in a warning."""
  config = trained['config']
  records = read_testbed_videos(trained)
  inputs, official = tmp_path / 'npy', tmp_path / 'official'
  inputs.mkdir()
  (official / config.data.test_split).mkdir(parents=True)
  (official / config.data.train_split).symlink_to(
      pathlib.Path(config.data.features_root) / config.data.train_split)
  for r, length in zip(records, LENGTHS * 2):
    features_SxF = resample.linear_resize(r.features_SxF, length)
    np.save(inputs / f'{r.vid_name}.npy', features_SxF)
    resampled_TxF = unannotated.resample_snippets(features_SxF, config.data.num_segments)
    half = resampled_TxF.shape[1] // 2
    np.savez(official / config.data.test_split / f'{r.vid_name}.npz', vid_name=r.vid_name,
             feat_spa=resampled_TxF[:, :half].T, feat_tem=resampled_TxF[:, half:].T,
             cls_label=r.video_labels_C, frame_num=r.frame_num, fps=r.fps, duration=r.duration)
  np.save(inputs / 'my_holiday_clip.npy', records[0].features_SxF[:40])
  write_metadata_csv(tmp_path / 'meta.csv', records)
  config_official = config.copy_and_resolve_references()
  config_official.data.source, config_official.data.features_root = 'npz', str(official)
  expected = evaluation_only(config_official, trained['best'], tmp_path / 'evaluation')

  result = run_cli(
      '--config=configs/thumos.py:debug', '--config.eval.class_score_thresh=0.0',
      f'--checkpoint={trained["best"]}', f'--features={inputs}',
      f'--output={tmp_path / "out.json"}', f'--metadata_csv={tmp_path / "meta.csv"}',
      '--duration=30', '--fps=25', '--ground_truth=thumos14_gt', '--subset=test',
      f'--plot_dir={tmp_path / "plots"}', '--num_plots=9')
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((tmp_path / 'out.json').read_text())['results']
  clip = results.pop('my_holiday_clip')
  assert clip and all(d['segment'][1] <= 30 + 1e-9 for d in clip)
  assert results == expected
  warnings = [line for line in result.stderr.splitlines() if 'false positives' in line]
  assert len(warnings) == 1 and warnings[0].endswith(': my_holiday_clip'), result.stderr[-3000:]
  assert result.stdout.count('mAP_avg_0.1_0.7') == 1  # the table, printed once
  assert "scored against the 8 predicted videos of subset 'test' (of 210;" in result.stderr
  assert len(list((tmp_path / 'plots').glob('*.png'))) == 9


def test_python_api_gives_the_evaluation_only_detections(trained):
  record = read_testbed_videos(trained)[2]
  found = predictor.Predictor(trained['config'], str(trained['best'])).detect(
      record.features_SxF, duration=record.duration, fps=record.fps, name=record.vid_name)
  assert found == trained['detections'][record.vid_name]


def test_a_relative_checkpoint_path_is_read_from_the_working_directory(trained, monkeypatch):
  monkeypatch.chdir(trained['best'].parent)  # orbax itself refuses relative paths
  record = read_testbed_videos(trained)[2]
  found = predictor.Predictor(trained['config'], trained['best'].name).detect(
      record.features_SxF, duration=record.duration, fps=record.fps, name=record.vid_name)
  assert found == trained['detections'][record.vid_name]


def test_one_device_and_a_batch_of_one_give_the_evaluation_only_detections(trained, tmp_path):
  """`predict --config.eval.batch_size=1` on a one-device machine (it crashed in merge_passes)."""
  config = trained['config']
  result = subprocess.run(
      [sys.executable, '-m', 'backtal_jax.predict', '--config=configs/thumos.py:debug',
       '--config.eval.class_score_thresh=0.0', '--config.eval.batch_size=1',
       f'--checkpoint={trained["best"]}',
       f'--features={pathlib.Path(config.data.features_root) / config.data.test_split}',
       f'--output={tmp_path / "out.json"}'], cwd=REPO, capture_output=True, text=True,
      timeout=240, env={**os.environ, 'PYTHONPATH': str(REPO),
                        'XLA_FLAGS': '--xla_force_host_platform_device_count=1'})
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads((tmp_path / 'out.json').read_text())['results'] == trained['detections']


def test_missing_durations_stop_at_once_naming_every_video(trained, tmp_path):
  records = read_testbed_videos(trained)
  for r in records[:3]:
    np.save(tmp_path / f'{r.vid_name}.npy', r.features_SxF)
  write_metadata_csv(tmp_path / 'meta.csv', records[1:2])
  result = run_cli('--config=configs/thumos.py:debug', f'--checkpoint={trained["best"]}',
                   f'--features={tmp_path}', f'--output={tmp_path / "out.json"}',
                   f'--metadata_csv={tmp_path / "meta.csv"}')
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  message = result.stderr[result.stderr.index('error: '):]
  assert message.startswith('error: 2 of 3 videos lack')
  for r in (records[0], records[2]):
    assert f'{r.vid_name} ({tmp_path / r.vid_name}.npy): duration and fps' in message
  assert records[1].vid_name not in message
  assert not (tmp_path / 'out.json').exists()


def header(name=None, frame_num=None, fps=None, duration=None):
  return features.FileHeader(vid_name=name, num_snippets=10, frame_num=frame_num, fps=fps,
                             duration=duration)


def test_metadata_comes_from_the_file_then_the_csv_then_the_defaults():
  headers = [(pathlib.Path('a.npz'), header('named', frame_num=7, duration=3.0)),
             (pathlib.Path('b.npy'), header()),
             (pathlib.Path('c.npz'), header(fps=24.0))]
  table = {'b': {'duration': 10.0, 'fps': None}, 'c': {'duration': 20.0, 'fps': 50.0},
           'named': {'duration': 99.0, 'fps': 99.0}}
  videos = unannotated.complete(headers, table, duration=5.0, fps=30.0, frames_per_snippet=16)
  assert [(v.vid_name, v.frame_num, v.fps, v.duration) for v in videos] == [
      ('named', 7, 99.0, 3.0),  # frame_num and duration from the file, fps from the CSV
      ('b', round(10.0 * 30.0 / 16), 30.0, 10.0),  # duration from the CSV, fps by default
      ('c', round(20.0 * 24.0 / 16), 24.0, 20.0)]  # fps from the file, duration from the CSV


def test_two_files_of_one_video_are_an_error():
  headers = [(pathlib.Path('x/a.npy'), header(duration=1.0, fps=1.0)),
             (pathlib.Path('y/a.npz'), header(duration=1.0, fps=1.0))]
  with pytest.raises(unannotated.InputError, match='a: x/a.npy, y/a.npz'):
    unannotated.complete(headers, {}, duration=None, fps=None, frames_per_snippet=16)


def test_metadata_csv_errors_name_the_line_and_the_field(tmp_path):
  path = tmp_path / 'meta.csv'
  path.write_text('vid_name,duration,fps\na,12.5,30\nb,-3,30\n')
  with pytest.raises(unannotated.InputError, match=r"meta.csv: line 3: duration is '-3'"):
    unannotated.read_metadata_csv(str(path))
  path.write_text('name,duration\n')
  with pytest.raises(unannotated.InputError, match=r"missing: \['fps', 'vid_name'\]"):
    unannotated.read_metadata_csv(str(path))


def naive_span_means(x_SxF, num_segments):
  num_in = len(x_SxF)
  out = np.zeros((num_segments, x_SxF.shape[1]))
  for t in range(num_segments):
    lo, hi = t * num_in / num_segments, (t + 1) * num_in / num_segments
    for j in range(num_in):
      out[t] += max(0.0, min(hi, j + 1) - max(lo, j)) * x_SxF[j]
  return out / (num_in / num_segments)


@pytest.mark.parametrize('num_in', [1, 5, 8, 9, 13, 64, 301])
def test_resampling_to_num_segments(num_in):
  x_SxF = np.random.default_rng(num_in).normal(size=(num_in, 3)).astype(np.float32)
  resampled = unannotated.resample_snippets(x_SxF, 8)
  assert resampled.shape == (8, 3) and resampled.dtype == np.float32
  if num_in == 8:
    np.testing.assert_array_equal(resampled, x_SxF)
  elif num_in < 8:
    np.testing.assert_array_equal(resampled, resample.linear_resize(x_SxF, 8))
  else:
    np.testing.assert_allclose(resampled, naive_span_means(x_SxF, 8), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resampled.mean(0), x_SxF.mean(0), rtol=1e-5, atol=1e-6)


def test_channels_last_npy_of_the_wrong_width_is_refused(tmp_path):
  np.save(tmp_path / 'v.npy', np.zeros((16, 20), np.float32))
  with pytest.raises(features.FeatureFileError, match=r'shape \(16, 20\), expected .*\(T, 16\)'):
    unannotated.npy_header(tmp_path / 'v.npy', feature_dim=16)


def test_predict_scores_the_predicted_videos_unless_asked_for_the_whole_subset(trained):
  truth = annotations.load_ground_truth(trained['config'].eval.ground_truth)
  detections = dict(trained['detections'], video_validation_0000051=[], unknown=[])
  raw = json.loads(truth.path.read_text())
  scored, which = predictor.ground_truth_of(raw, 'test', detections, whole_subset=False)
  assert sorted(scored['database']) == sorted(trained['detections'])
  assert which == (f"scored against the {len(trained['detections'])} predicted videos of subset "
                   "'test' (of 210; --score_whole_subset scores them all)")
  scored, which = predictor.ground_truth_of(raw, 'test', detections, whole_subset=True)
  assert sum(entry['subset'] == 'test' for entry in scored['database'].values()) == 210
  assert which.startswith('scored against all 210 videos')
  counted = evaluation_report.counts(scored, evaluation_report.detections_file(detections), 'test')
  assert counted['videos_absent_from_ground_truth'] == ['unknown']
  assert counted['videos_of_other_subsets'] == ['video_validation_0000051']


def test_npz_header_gives_name_length_and_metadata_and_refuses_a_zero_duration(tmp_path):
  np.savez(tmp_path / 'a.npz', feat_spa=np.zeros((8, 5)), feat_tem=np.zeros((8, 5)),
           vid_name='clip', fps=25.0)
  assert features.read_header(tmp_path / 'a.npz', feature_dim=16) == features.FileHeader(
      vid_name='clip', num_snippets=5, frame_num=None, fps=25.0, duration=None)
  np.savez(tmp_path / 'b.npz', feat_spa=np.zeros((8, 5)), feat_tem=np.zeros((8, 5)),
           duration=0.0)
  with pytest.raises(features.FeatureFileError,
                     match="b.npz: key 'duration': value 0.0, expected > 0"):
    features.read_header(tmp_path / 'b.npz', feature_dim=16)


def test_a_missing_checkpoint_names_the_flag(trained, tmp_path):
  with pytest.raises(FileNotFoundError, match=r'nowhere \(--checkpoint\)'):
    predictor.Predictor(trained['config'], str(tmp_path / 'nowhere'))
