"""The training loop end to end on the tiny synthetic debug config."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from backtal_jax.core import errors
from backtal_jax.core import sharding
from backtal_jax.data import annotations
from backtal_jax.data import datasets
from backtal_jax.data import pipeline
from backtal_jax.evaluation import mean_ap
from backtal_jax.run import checkpoint
from backtal_jax.run import evaluate_only
from backtal_jax.run import final_report
from backtal_jax.run import stop_signals
from backtal_jax.run import train
from backtal_jax.run import train_state
from configs import thumos
from tests import devices

REPO = pathlib.Path(__file__).resolve().parents[1]


def debug_config(**train_overrides):
  config = thumos.get_config('debug')
  for key, value in train_overrides.items():
    config.train[key] = value
  return config


@pytest.fixture(scope='module')
def testbed(tmp_path_factory):
  """One synthetic debug testbed shared by the runs of this module."""
  return str(tmp_path_factory.mktemp('testbed'))


def run(tmp_path, testbed, name, **train_overrides):
  config = debug_config(**train_overrides)
  config.data.features_root = testbed
  workdir = tmp_path / name
  return train.train_and_evaluate(config, str(workdir)), workdir


def params_of(state):
  return jax.tree.map(np.asarray, jax.device_get(state.params))


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, testbed):
  """Two epochs without a stop: the reference of the resume tests."""
  return run(tmp_path_factory.mktemp('straight'), testbed, 'run')


@pytest.mark.slow
def test_two_epochs_end_to_end(uninterrupted, testbed):
  state, workdir = uninterrupted
  assert int(state.step) == 2 * 3  # 24 videos, batch 8, two epochs
  results = json.loads((workdir / 'results.json').read_text())
  assert len(results['mAP']) == 9
  config = debug_config()
  ground_truth = str(annotations.load_ground_truth(config.eval.ground_truth).path)
  selection = [mean_ap.detection_map(
      ground_truth, str(workdir / 'detections' / f'epoch_{epoch:03d}.json'),
      subset=config.eval.subset, tiou_thresholds=(0.5,))[0][0] for epoch in (1, 2)]
  assert results['best_epoch'] == 1 + int(np.argmax(selection))  # the first epoch wins a tie
  for name in ('epoch_001', 'epoch_002', 'best_test'):
    detections = json.loads((workdir / 'detections' / f'{name}.json').read_text())
    assert len(detections['results']) == 8  # every test video of the debug testbed
  best = (workdir / 'detections' / f'epoch_{results["best_epoch"]:03d}.json').read_text()
  assert (workdir / 'detections' / 'best_test.json').read_text() == best  # the same model
  assert list((workdir / 'plots' / 'best_test').glob('*.png'))
  assert list((workdir / 'tensorboard').glob('events.out.tfevents.*'))
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params_of(state)))

  config.data.features_root = testbed
  config.eval.only = True
  summary = evaluate_only.evaluate_checkpoint(config, str(workdir))  # WORKDIR/best by default
  np.testing.assert_allclose(summary.mAP, results['mAP'], rtol=0, atol=1e-12)


@pytest.mark.slow
def test_evaluation_only_writes_results_and_no_checkpoint_folders(uninterrupted, testbed,
                                                                   tmp_path):
  _, trained = uninterrupted
  config = debug_config()
  config.data.features_root = testbed
  config.eval.only = True
  config.eval.checkpoint = str(trained / 'best')
  summary = evaluate_only.evaluate_checkpoint(config, str(tmp_path / 'eval'))
  results = json.loads((tmp_path / 'eval' / 'results.json').read_text())
  assert results['checkpoint'] == config.eval.checkpoint
  assert results['mAP'] == summary.mAP
  assert sorted(p.name for p in (tmp_path / 'eval').iterdir()) == [  # LOCK: held while it ran
      'LOCK', 'config.json', 'config.txt', 'detections', 'logs', 'plots', 'results.json',
      'run.json']


@pytest.mark.slow
def test_heldout_selection_by_average_map_scores_the_test_split_once(tmp_path, testbed):
  _, workdir = run(tmp_path, testbed, 'heldout', selection_split='heldout',
                   selection_metric='average')
  results = json.loads((workdir / 'results.json').read_text())
  assert (results['selection_split'], results['selection_metric']) == ('heldout', 'average')
  heldout = [json.loads((workdir / 'detections' / f'epoch_{epoch:03d}.json').read_text())
             for epoch in (1, 2)]
  names = set(heldout[0]['results'])
  assert len(names) == 2  # round(10% of the 24 debug training videos)
  assert names <= {f.stem for f in (pathlib.Path(testbed) / 'val').glob('*.npz')}
  test = json.loads((workdir / 'detections' / 'best_test.json').read_text())
  assert not names & set(test['results'])  # test videos appear only in the final evaluation
  config = debug_config()
  heldout_json = datasets.heldout_ground_truth_json(
      annotations.load_ground_truth(config.eval.ground_truth).path, sorted(names))
  averages = [mean_ap.detection_map(heldout_json, d, subset=config.data.train_split,
                                       tiou_thresholds=config.eval.tiou_thresholds)[1]
              for d in heldout]
  assert results['best_epoch'] == 1 + int(np.argmax(averages))


def test_evaluation_of_a_missing_checkpoint_creates_nothing(testbed, tmp_path):
  config = debug_config()
  config.data.features_root = testbed
  config.eval.only = True
  config.eval.checkpoint = str(tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError,
                     match=r'No checkpoint folder at .*nowhere \(config.eval.checkpoint\)'):
    evaluate_only.evaluate_checkpoint(config, str(tmp_path / 'eval'))
  assert not (tmp_path / 'nowhere').exists()
  config.eval.checkpoint = ''  # the default: the workdir's best/
  with pytest.raises(FileNotFoundError, match=r"No checkpoint folder at .*eval/best \(the run's "
                                              r'best/\)'):
    evaluate_only.evaluate_checkpoint(config, str(tmp_path / 'eval'))


@pytest.mark.slow
def test_resume_after_epoch_one_is_bit_identical(tmp_path, testbed, uninterrupted):
  reference, _ = uninterrupted
  run(tmp_path, testbed, 'stopped', num_epochs=1)
  resumed, workdir = run(tmp_path, testbed, 'stopped')
  assert int(resumed.step) == int(reference.step)
  for ours, ref in zip(jax.tree.leaves(params_of(resumed)), jax.tree.leaves(params_of(reference))):
    np.testing.assert_array_equal(ours, ref)
  # TensorBoard: the resumed invocation evaluated epoch 1 again (its checkpoint comes before its
  # evaluation), yet no point is there twice, and the config and HParams are there once.
  event_accumulator = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
  assert len(list((workdir / 'tensorboard').glob('events.out.tfevents.*'))) == 2
  events = event_accumulator.EventAccumulator(
      str(workdir / 'tensorboard'), size_guidance={event_accumulator.SCALARS: 0,
                                                   event_accumulator.TENSORS: 0}).Reload()
  for tag in events.Tags()['scalars']:
    steps = [e.step for e in events.Scalars(tag)]
    assert len(steps) == len(set(steps)), tag
  assert [e.step for e in events.Scalars('test/mAP_0.50')] == [3, 6]
  assert len(events.Tensors('config')) == len(events.Tensors('_hparams_/session_start_info')) == 1


@pytest.mark.slow
def test_a_finished_run_started_again_stops_at_once(uninterrupted, testbed):
  _, workdir = uninterrupted
  config = debug_config()
  config.data.features_root = testbed
  before = sorted(p.name for p in workdir.rglob('*'))
  assert train.train_and_evaluate(config, str(workdir)) is None
  assert sorted(p.name for p in workdir.rglob('*')) == before  # not even a log file
  config.train.num_epochs = 3  # a longer run is not finished: it would resume
  assert not final_report.is_finished(config, str(workdir))


class PreemptedAfter:
  """Stands in for stop_signals.Preemption: reports a SIGTERM from the `checks`-th look on. The loop
  looks at its sync points only; in the debug config (3 steps an epoch, logging every 2) those are
  steps 2, 3, 4 and 6, so checks=3 stops mid-epoch, at step 4."""

  signum = 15  # SIGTERM

  def __init__(self, checks):
    self.checks, self.calls = checks, 0

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False

  @property
  def requested(self):
    self.calls += 1
    return self.calls >= self.checks


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_and_resumes_bit_identically(tmp_path, testbed, uninterrupted,
                                                            monkeypatch):
  reference, _ = uninterrupted
  monkeypatch.setattr(stop_signals, 'Preemption', lambda: PreemptedAfter(checks=3))
  with pytest.raises(errors.Stopped) as stop:
    run(tmp_path, testbed, 'preempted')
  assert (stop.value.step, stop.value.exit_status) == (4, 128 + 15)
  manager = checkpoint.Checkpoints(str(tmp_path / 'preempted'))
  _, record = manager.restore_latest(reference)
  manager.close()
  assert record.position == pipeline.DataPosition(1, 1)
  monkeypatch.undo()
  resumed, _ = run(tmp_path, testbed, 'preempted')
  for ours, ref in zip(jax.tree.leaves(params_of(resumed)), jax.tree.leaves(params_of(reference))):
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize('signum', [15, 2])  # SIGTERM, SIGINT (Ctrl-C)
def test_sigterm_and_ctrl_c_set_the_preemption_flag(signum):
  with stop_signals.Preemption() as preemption:
    assert not preemption.requested
    os.kill(os.getpid(), signum)
    assert preemption.requested and preemption.signum == signum


def test_same_losses_on_one_and_four_devices(testbed, tmp_path):
  config = debug_config()
  config.data.features_root = testbed
  metrics = {}
  for count in (1, 4):
    mesh = sharding.make_mesh(devices.first_devices(count))
    with jax.set_mesh(mesh):
      run_ = train.Run(config, str(tmp_path / f'devices{count}'), mesh)
      state = train_state.create_train_state(config, run_.model, run_.tx, mesh)
      loader = run_.data.train_feed(pipeline.DataPosition(), mesh)
      step_fn = train.jit_train_step(run_.model, run_.tx, config, mesh, state, loader)
      metrics[count] = []
      for _ in range(3):
        state, step_metrics = step_fn(state, next(loader))
        metrics[count].append(jax.device_get(step_metrics))
      loader.close()
      run_.checkpoints.close()
  for one, four in zip(metrics[1], metrics[4]):
    for key in one:
      np.testing.assert_allclose(four[key], one[key], rtol=1e-6, err_msg=key)


def test_missing_features_fail_at_once_with_directions(tmp_path):
  config = thumos.get_config()
  with pytest.raises(ValueError) as error:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  message = str(error.value)
  assert 'config.data.features_root' in message
  assert 'github.com/VividLe/BackTAL' in message
  assert ':synthetic' in message


def test_config_typo_on_the_command_line_is_an_error(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'backtal_jax.main', '--config=configs/thumos.py:debug',
       f'--workdir={tmp_path}', '--config.train.nmu_epochs=3'],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert result.returncode != 0
  assert 'nmu_epochs' in result.stderr
  assert not (tmp_path / 'checkpoints').exists()


def test_train_step_makes_no_implicit_host_device_copies(testbed, tmp_path):
  config = debug_config()
  config.data.features_root = testbed
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    run_ = train.Run(config, str(tmp_path), mesh)
    state = train_state.create_train_state(config, run_.model, run_.tx, mesh)
    loader = run_.data.train_feed(pipeline.DataPosition(), mesh)
    step_fn = train.jit_train_step(run_.model, run_.tx, config, mesh, state, loader)
    batch = next(loader)
    loader.close()
    run_.checkpoints.close()
    with jax.transfer_guard('disallow'):
      state, metrics = step_fn(state, batch)
      state, metrics = step_fn(state, batch)
  assert int(state.step) == 2 and np.isfinite(float(metrics['loss']))
