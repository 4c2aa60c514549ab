"""Faults during a run: bad values met late, divergence, signals, a second run on one workdir."""

import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from backtal_jax.data import datasets
from backtal_jax.data import features
from backtal_jax.data import pipeline
from backtal_jax.run import checkpoint
from backtal_jax.run import finiteness
from backtal_jax.run import train
from backtal_jax.run import train_state
from backtal_jax.run import workdir_lock
from tests.conftest import debug_config

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': str(REPO)}


def saved_steps(workdir, folder='checkpoints'):
  manager = checkpoint.Checkpoints(str(workdir))
  steps = {'checkpoints': manager.latest, 'best': manager.best}[folder].all_steps()
  manager.close()
  return sorted(steps)


@pytest.mark.slow
def test_a_bad_value_at_evaluation_keeps_the_epoch_and_a_diverged_step_is_never_saved(tmp_path):
  testbed, workdir = tmp_path / 'testbed', tmp_path / 'run'
  config = debug_config(testbed, num_epochs=1)
  datasets.synthetic_root(config, str(workdir))
  bad = sorted((testbed / 'test').glob('*.npz'))[-1]
  original = bad.read_bytes()
  arrays = dict(np.load(bad))
  arrays['feat_spa'][0, 5] = np.nan  # a value: only seen when evaluation reads the file
  np.savez(bad, **arrays)

  with pytest.raises(features.FeatureFileError, match=f"{bad}: key 'feat_spa': 1 non-finite"):
    train.train_and_evaluate(config, str(workdir))
  assert saved_steps(workdir) == [3]  # the epoch is kept, its evaluation marked as pending

  bad.write_bytes(original)
  # Epoch 2 diverges at its first step (4): one video of its first batch holds features finite
  # in float32 (so reading it passes) that overflow in the network. The loop looks at steps 4..6
  # at step 6, before the save that ends the epoch. (A resume cannot change the learning rate,
  # and an infinite one is refused before the first step: tests/test_config_fields.py.)
  config = debug_config(testbed, num_epochs=2, log_every_steps=3)
  names = sorted(p.stem for p in (testbed / 'val').glob('*.npz'))
  batch = pipeline.epoch_order(len(names), config.data.shuffle_seed, 1)[:8]
  poisoned = testbed / 'val' / f'{names[batch[0]]}.npz'
  arrays = dict(np.load(poisoned))
  arrays['feat_spa'] = np.full_like(arrays['feat_spa'], 3e38)
  np.savez(poisoned, **arrays)
  with pytest.raises(finiteness.DivergedError) as error:
    train.train_and_evaluate(config, str(workdir))
  message = str(error.value)
  assert message.startswith('Training diverged at step 4 ')
  assert 'non-finite state after it: params[' in message
  assert f'videos {[names[i] for i in batch]}' in message
  assert 'The last checkpoint, step 3 in ' in message
  assert saved_steps(workdir) == [3]
  assert saved_steps(workdir, 'best') == [1]  # best/epoch_1: the pending evaluation ran first
  assert (workdir / 'detections' / 'epoch_001.json').exists()


def test_state_watch_names_the_first_bad_step_and_its_leaves():
  good = train_state.TrainState(step=np.int32(1), params={'w': np.ones(2, np.float32)},
                                opt_state=({'mu': np.zeros(2, np.float32)},),
                                rng=np.zeros(2, np.uint32))
  bad = good.replace(opt_state=({'mu': np.array([0.0, np.inf], np.float32)},))
  watch = finiteness.StepWatch()
  watch.record(1, good, np.float32(0.5), jnp.asarray([0, 1]))
  watch.record(2, bad, np.float32(0.4), jnp.asarray([2, -1]))
  watch.record(3, bad, np.float32(np.nan), jnp.asarray([1, 0]))
  with pytest.raises(finiteness.DivergedError) as error:
    watch.check(bad, lambda index: f'v{index}', None, '/w/checkpoints')
  message = str(error.value)
  assert message.startswith('Training diverged at step 2 (loss 0.4)')
  assert "opt_state[0]['mu']" in message and "params['w']" not in message
  assert "videos ['v2']" in message and 'No checkpoint had been written yet' in message
  watch.check(bad, str, None, '')  # the steps were consumed by the first check


def wait_for(path: pathlib.Path, text: str, process: subprocess.Popen, timeout: float = 240):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if path.exists() and text in path.read_text():
      return
    assert process.poll() is None, path.read_text()
    time.sleep(0.2)
  raise AssertionError(f'{text!r} not in {path} after {timeout} s')


@pytest.mark.slow
def test_ctrl_c_saves_stops_with_130_and_logs_the_resume_command(tmp_path):
  """Also: while it runs, a second training on its workdir is refused, naming host and pid."""
  workdir = tmp_path / 'run'
  args = ['-m', 'backtal_jax.main', '--config=configs/thumos.py:debug', f'--workdir={workdir}',
          '--config.train.num_epochs=100000', '--config.train.log_every_steps=1',
          '--config.eval.every_epochs=100000']
  log = tmp_path / 'stderr.txt'
  with open(log, 'w') as stderr:
    process = subprocess.Popen([sys.executable, *args], cwd=REPO, env=ENV, stderr=stderr)
  try:
    wait_for(log, 'epoch 2/100000', process)
    second = subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=120, check=False)
    assert second.returncode == 1 and 'Traceback' not in second.stderr
    assert f'is in use by another run (pid {process.pid} on host ' in second.stderr
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 128 + signal.SIGINT
  finally:
    process.kill()
  output = log.read_text()
  assert 'SIGINT received: saving a checkpoint' in output
  resume = f'cd {shlex.quote(str(REPO))} && {shlex.join([sys.executable, *args])}'
  assert f'To resume, run:\n  {resume}\n' in output
  assert saved_steps(workdir)
  assert (workdir / workdir_lock.LOCK_NAME).read_text() == ''  # released


CHILD = """
import os, signal, sys, time
from backtal_jax.run import stop_signals
with stop_signals.Preemption() as preemption:
  print('ready', flush=True)
  while not preemption.requested:
    time.sleep(0.01)
  print('requested', preemption.signum, flush=True)
  time.sleep(60)
print('not stopped', flush=True)
"""


def test_a_second_ctrl_c_stops_at_once():
  process = subprocess.Popen([sys.executable, '-c', CHILD], cwd=REPO, env=ENV,
                             stdout=subprocess.PIPE, text=True)
  try:
    assert process.stdout.readline() == 'ready\n'
    process.send_signal(signal.SIGINT)
    assert process.stdout.readline() == f'requested {int(signal.SIGINT)}\n'
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == -signal.SIGINT
    assert time.monotonic() - started < 30
    assert process.stdout.read() == ''
  finally:
    process.kill()


HOLDER = """
import sys, time
from backtal_jax.run import workdir_lock
with workdir_lock.held(sys.argv[1]):
  print('held', flush=True)
  time.sleep(120)
"""


def test_a_lock_is_refused_while_held_and_taken_over_from_a_dead_process(tmp_path, caplog):
  holder = subprocess.Popen([sys.executable, '-c', HOLDER, str(tmp_path)], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline() == 'held\n'
    with pytest.raises(workdir_lock.WorkdirInUse, match=f'pid {holder.pid} on host '):
      with workdir_lock.held(str(tmp_path)):
        pass
  finally:
    holder.kill()  # SIGKILL: no clean-up runs, the lock file still names it
    holder.wait()
  assert json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())['pid'] == holder.pid
  with workdir_lock.held(str(tmp_path)):
    assert json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())['pid'] == os.getpid()
  assert f'no longer running (pid {holder.pid} on host' in caplog.text
