"""Two local processes under `jax.distributed` (127.0.0.1, CPU devices, gloo collectives) against
one process: the same losses, disjoint shares of each batch, shared checkpoints, gathered
detections."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from backtal_jax.data import annotations
from backtal_jax.evaluation import mean_ap
from tests import devices
from tests import distributed_worker

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_PROCESSES = 2
LOCAL_DEVICES = 2  # 2 x 2 devices, the 4 of the single-process reference (conftest)
TIMEOUT_S = 600  # a bound, not a speed check: a loaded 2-core CI machine takes minutes


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def run_processes(testbed: pathlib.Path, workdir: pathlib.Path, out: pathlib.Path,
                  *flags: str) -> list[dict]:
  """Starts the workers and waits (bounded); once one fails or time is up, kills the rest, which
  would otherwise wait on it in a collective, and shows the logs."""
  port = free_port()
  env = {**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': f'--xla_force_host_platform_device_count={LOCAL_DEVICES}'}
  workers = []
  try:
    for i in range(NUM_PROCESSES):
      command = [sys.executable, '-m', 'tests.distributed_worker', f'--process_id={i}',
                 f'--num_processes={NUM_PROCESSES}', f'--port={port}', f'--testbed={testbed}',
                 f'--workdir={workdir}', f'--out={out / f"{i}.json"}', *flags]
      with open(out / f'{i}.log', 'w') as log:
        workers.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                                        stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and not all_done_or_one_failed(workers):
      time.sleep(0.5)
  finally:
    for process in workers:
      if process.poll() is None:
        process.kill()
        process.wait()
  failed = [i for i, process in enumerate(workers) if process.returncode != 0]
  assert not failed, '\n'.join(f'--- process {i} (rc {workers[i].returncode}):\n'
                               + (out / f'{i}.log').read_text()[-4000:] for i in failed)
  return [json.loads((out / f'{i}.json').read_text()) for i in range(NUM_PROCESSES)]


def all_done_or_one_failed(workers: list[subprocess.Popen]) -> bool:
  codes = [process.poll() for process in workers]
  return None not in codes or any(code for code in codes)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """The two-process results, then the single-process reference on the testbed they built."""
  root = tmp_path_factory.mktemp('distributed')
  testbed = root / 'testbed'  # built by process 0 behind a barrier
  out = root / 'out'
  out.mkdir()
  hosts = run_processes(testbed, root / 'workdir', out)
  devices.first_devices(NUM_PROCESSES * LOCAL_DEVICES)  # the reference: the same devices, on one
  single = distributed_worker.run_steps(str(testbed), str(root / 'single'))
  return hosts, single, testbed


def test_workers_are_two_processes_of_two_devices(runs):
  hosts, _, _ = runs
  assert [h['process_index'] for h in hosts] == list(range(NUM_PROCESSES))
  assert all(h['local_devices'] == LOCAL_DEVICES for h in hosts)


def test_losses_equal_a_single_process(runs):
  hosts, single, _ = runs
  assert len(single['losses']) == distributed_worker.NUM_STEPS
  for host in hosts:
    np.testing.assert_allclose(host['losses'], single['losses'], rtol=1e-6, atol=1e-6)


def test_hosts_read_disjoint_shares_of_the_global_batch(runs):
  hosts, single, _ = runs
  for step, global_indices in enumerate(single['indices']):
    shares = [h['indices'][step] for h in hosts]
    assert all(len(share) == len(global_indices) // NUM_PROCESSES for share in shares)
    assert not set(shares[0]) & set(shares[1])
    assert sum(shares, []) == global_indices  # process i holds rows [i B/P, (i+1) B/P)


def test_checkpoint_saved_by_all_hosts_restores_on_each(runs):
  hosts, _, _ = runs
  for host in hosts:
    assert host['restored_step'] == distributed_worker.NUM_STEPS
    assert host['restored_position'] == {'epoch': 0, 'step': distributed_worker.NUM_STEPS}
    assert host['restored_difference'] == 0.0


def test_every_host_gathers_all_detections(runs):
  hosts, single, _ = runs
  assert len(single['detections']) == 8  # every test video of the debug testbed
  assert any(single['detections'].values())
  for host in hosts:
    assert host['detections'] == single['detections']


def test_a_preemption_seen_by_one_host_stops_all(runs):
  hosts, single, _ = runs
  assert single['any_process'] == [False, False]
  assert all(host['any_process'] == [True, False] for host in hosts)


@pytest.mark.slow
def test_training_loop_on_two_hosts_writes_once(runs, tmp_path):
  _, _, testbed = runs
  (tmp_path / 'out').mkdir()
  workdir = tmp_path / 'workdir'
  hosts = run_processes(testbed, workdir, tmp_path / 'out', '--train')
  assert [h['step'] for h in hosts] == [2 * 3] * NUM_PROCESSES  # 24 videos, batch 8, 2 epochs
  for name in ('epoch_001', 'epoch_002', 'best_test'):
    detections = json.loads((workdir / 'detections' / f'{name}.json').read_text())
    assert len(detections['results']) == 8  # gathered from both hosts
  config = distributed_worker.debug_config(str(testbed))
  selection = [mean_ap.detection_map(
      str(annotations.load_ground_truth(config.eval.ground_truth).path),
      str(workdir / 'detections' / f'epoch_{epoch:03d}.json'), subset=config.eval.subset,
      tiou_thresholds=(0.5,))[0][0] for epoch in (1, 2)]
  best_epoch = json.loads((workdir / 'results.json').read_text())['best_epoch']
  assert best_epoch == 1 + int(np.argmax(selection))  # the first epoch wins a tie
  assert ((workdir / 'detections' / 'best_test.json').read_text() ==
          (workdir / 'detections' / f'epoch_{best_epoch:03d}.json').read_text())  # same model
  assert len(list((workdir / 'tensorboard').glob('events.out.tfevents.*'))) == 1  # process 0 only
  assert sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.is_dir()) == [3, 6]
  assert json.loads((workdir / 'checkpoints' / 'epochs.json').read_text()) == {'3': 1, '6': 2}
