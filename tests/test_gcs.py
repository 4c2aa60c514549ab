"""A debug training with its workdir on gs://, SIGKILLed mid-run and resumed, against a Cloud
Storage emulator (the gcp-storage-emulator package) serving 127.0.0.1.

Every writer of a run goes through it: gcsfs (behind etils.epath: JSON, TensorBoard events, plots,
orbax's directories and metadata) finds it through STORAGE_EMULATOR_HOST, and orbax's array data
(tensorstore's gcs driver, OCDBT) through TENSORSTORE_GCS_HTTP_URL.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

pytest.importorskip('gcp_storage_emulator',
                    reason="the Cloud Storage emulator is not installed (pip install "
                    "'backtal_jax[test]' installs it)")

REPO = pathlib.Path(__file__).resolve().parents[1]
BUCKET = 'backtal'


def free_port() -> int:
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 30) -> None:
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    assert process.poll() is None, 'the emulator exited at start'
    try:
      socket.create_connection(('127.0.0.1', port), timeout=1).close()
      return
    except OSError:
      time.sleep(0.1)
  raise TimeoutError(f'the emulator did not listen on port {port}')


@pytest.fixture
def emulator(tmp_path):
  """The emulator's URL, with an empty bucket BUCKET, in memory; stopped after the test."""
  port = free_port()
  with open(tmp_path / 'emulator.log', 'wb') as log:
    process = subprocess.Popen([sys.executable, '-m', 'tests.gcs_emulator', str(port), BUCKET],
                               cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
  try:
    wait_for_port(port, process)
    yield f'http://127.0.0.1:{port}'
  finally:
    process.terminate()
    process.wait(timeout=10)


def object_names(url: str, prefix: str) -> list[str]:
  """The bucket's objects under `prefix`, from the JSON API (no client library involved)."""
  query = urllib.parse.urlencode({'prefix': prefix})
  with urllib.request.urlopen(f'{url}/storage/v1/b/{BUCKET}/o?{query}', timeout=10) as reply:
    return [item['name'] for item in json.load(reply).get('items', [])]


def read_object(url: str, name: str) -> bytes:
  quoted = urllib.parse.quote(name, safe='')
  with urllib.request.urlopen(f'{url}/storage/v1/b/{BUCKET}/o/{quoted}?alt=media',
                              timeout=10) as reply:
    return reply.read()


def environment(url: str, tmp_path: pathlib.Path) -> dict:
  return {
      **os.environ,
      'STORAGE_EMULATOR_HOST': url,  # gcsfs
      'TENSORSTORE_GCS_HTTP_URL': url,  # tensorstore, under orbax
      'NO_GCE_CHECK': 'True',  # google-auth: no metadata-server probe for credentials
      # gcsfs's experimental layer asks for the bucket type over gRPC, which the emulator lacks
      'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false',
      'HOME': str(tmp_path / 'home'),  # the synthetic testbed of a gs:// workdir goes under ~
      # the resumed run reuses the first run's compiled steps (a third of the test's time)
      'JAX_COMPILATION_CACHE_DIR': str(tmp_path / 'jax_cache'),
      'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
      'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0',
      'PYTHONPATH': os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]),
  }


def train_command(workdir: str) -> list[str]:
  """The README's TPU command, on the debug config: 3 epochs of 3 steps, evaluated at the end."""
  return [sys.executable, '-m', 'backtal_jax.main', '--config=configs/thumos.py:debug',
          f'--workdir={workdir}', '--config.train.num_epochs=3', '--config.eval.every_epochs=3']


def test_debug_training_on_gs_killed_and_resumed(emulator, tmp_path):
  workdir = f'gs://{BUCKET}/runs/debug'
  env = environment(emulator, tmp_path)
  with open(tmp_path / 'first.log', 'wb') as log:
    first = subprocess.Popen(train_command(workdir), cwd=REPO, env=env, stdout=log,
                             stderr=subprocess.STDOUT)
  try:
    deadline = time.monotonic() + 600  # a guard against a hang only: shared CI machines are slow
    while 'runs/debug/checkpoints/3/commit_success.txt' not in object_names(
        emulator, 'runs/debug/checkpoints/'):
      assert first.poll() is None, (tmp_path / 'first.log').read_text()[-3000:]
      assert time.monotonic() < deadline, 'no checkpoint after 600 s'
      time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
  finally:
    first.kill()
    first.wait()
  assert first.returncode == -signal.SIGKILL
  assert not object_names(emulator, 'runs/debug/results.json')  # it did not finish

  resumed = subprocess.run(train_command(workdir), cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=600, check=False)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  resumed_from = [line for line in resumed.stderr.splitlines() if 'Resumed from step' in line]
  assert resumed_from, resumed.stderr[-3000:]
  step = int(resumed_from[0].split('Resumed from step ')[1].split()[0])
  assert step in (3, 6), resumed_from[0]  # an end-of-epoch checkpoint, committed before the kill

  results = json.loads(read_object(emulator, 'runs/debug/results.json'))
  assert len(results['mAP']) == 9 and results['best_epoch'] == 3
  names = object_names(emulator, 'runs/debug/')
  assert 'runs/debug/checkpoints/9/commit_success.txt' in names  # 3 epochs of 3 steps
  assert any(name.startswith('runs/debug/tensorboard/events.out.tfevents.') for name in names)
  assert any(name.startswith('runs/debug/plots/best_test/') for name in names)
  detections = json.loads(read_object(emulator, 'runs/debug/detections/best_test.json'))
  assert len(detections['results']) == 8  # every test video of the debug testbed
  assert not [name for name in names if name.endswith('.tmp')]
