"""The official BackTAL code and backtal_jax, trained on the same files on this machine, in one go.

  git clone https://github.com/VividLe/BackTAL /tmp/official
  git -C /tmp/official checkout 17161fc
  pip install -e '.[official]'  # PyTorch and what the official code imports
  python -m benchmarks.side_by_side --official_repo=/tmp/official --json_out=/tmp/side_by_side.json

Builds the semi-synthetic THUMOS14 testbed once with backtal_jax's builder (configs/thumos.py:
synthetic, under --root), then times, each in a fresh process started from here and as a new user
runs it (no warm compilation cache; the testbed's files are read by both):

- the official code (--official_repo: the root of a VividLe/BackTAL checkout at 17161fc, outside
  this repository): its tools/train.py flow for --epochs epochs at the testbed's widths on the CPU,
  evaluated once at the end by its own post-processing and ActivityNet evaluator
  (benchmarks/official_run.py, whose docstring lists every runtime patch: `.cuda()` made a no-op,
  the hard-coded widths swapped for the testbed's, config values, main()'s loop driven step by
  step);
- backtal_jax: `python -m backtal_jax.main --config=configs/thumos.py:synthetic` (the README's main
  job) with the same epochs, evaluated only at the end (`config.eval.every_epochs` = epochs).

Writes one JSON: the wall seconds of each process (start to exit) and official / backtal_jax, the
CPU seconds (user, system) and page faults of each process tree, both final mAP tables at tIoU
0.1:0.7 (and their average), each side's phase split (backtal_jax: WORKDIR/phases.json), Python,
JAX, jaxlib, PyTorch and NumPy versions, nproc and the CPU model, the date, and the load average
before and after each run. Runs in --order (official first by default).

Smoke run (minutes): --epochs=2.
"""

import datetime
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from absl import app
from absl import flags

from backtal_jax.data import datasets
from backtal_jax.reporting import run_records
from benchmarks import affinity_kernel
from configs import thumos

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TIOUS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
SIDES = ('official', 'backtal_jax')
SIDE_LIBRARIES = ('jax', 'jaxlib', 'torch', 'numpy')  # the versions the JSON records

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('official_repo', None, 'Root of an official BackTAL checkout (lib/, tools/).',
                      required=True)
  flags.DEFINE_string('json_out', None, 'Write the result here.', required=True)
  flags.DEFINE_string('root', '', 'Scratch folder: the testbed (reused when there) and a new '
                      'folder of runs; default: a new temporary folder.')
  flags.DEFINE_integer('epochs', 40, 'Training epochs of both runs.')
  flags.DEFINE_list('order', list(SIDES), 'Which side runs first.')
  flags.DEFINE_integer('official_threads', 0, "PyTorch threads of the official run; 0 keeps "
                       "tools/train.py's OMP_NUM_THREADS=1.")


def testbed_config():
  return thumos.get_config('synthetic')


def build_testbed(root: pathlib.Path) -> pathlib.Path:
  """The testbed under root/testbed, built by backtal_jax's own path (once, with its marker)."""
  config = testbed_config()
  config.data.features_root = str(root / 'testbed')
  return pathlib.Path(str(datasets.synthetic_root(config, str(root / 'unused_workdir'))))


def official_command(official_repo: str, testbed: pathlib.Path, root: pathlib.Path, epochs: int,
                     threads: int) -> list[str]:
  model = testbed_config().model
  return [sys.executable, '-m', 'benchmarks.official_run', f'--repo={official_repo}',
          f'--features_root={testbed}', f'--out_dir={root / "official"}',
          f'--result_json={root / "official.json"}', f'--epochs={epochs}',
          f'--feat_dim={model.feat_dim}', f'--hidden_dim={model.hidden_dim}',
          f'--filter_dim={model.filter_dim}', f'--embed_hidden_dim={model.embed_hidden_dim}',
          f'--embed_dim={model.embed_dim}',
          f'--class_score_thresh={testbed_config().eval.class_score_thresh}',
          f'--threads={threads}']


def backtal_jax_command(testbed: pathlib.Path, root: pathlib.Path, epochs: int) -> list[str]:
  return [sys.executable, '-m', 'backtal_jax.main', '--config=configs/thumos.py:synthetic',
          f'--workdir={root / "backtal_jax"}', f'--config.data.features_root={testbed}',
          f'--config.train.num_epochs={epochs}', f'--config.eval.every_epochs={epochs}']


def timed(command: list[str], log: pathlib.Path) -> dict:
  """Runs `command` from the repository root, its output to `log`: wall time, the load average
  around it, and the CPU seconds and page faults of the process and every child it waited for
  (the official DataLoader's worker and evaluator's pool included), which the load sways less."""
  load_before = os.getloadavg()
  usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
  started_unix, started = time.time(), time.perf_counter()
  with log.open('w') as out:
    status = subprocess.run(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                            check=False).returncode
  wall = time.perf_counter() - started
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  if status:
    raise RuntimeError(f'{command[2]} exited with {status}; its output: {log}')
  return {'command': ' '.join(command), 'wall_s': wall, 'started_unix': started_unix,
          'ended_unix': started_unix + wall, 'load_before': load_before,
          'load_after': os.getloadavg(),
          'cpu_user_s': usage.ru_utime - usage_before.ru_utime,
          'cpu_system_s': usage.ru_stime - usage_before.ru_stime,
          'minor_page_faults': usage.ru_minflt - usage_before.ru_minflt, 'log': str(log)}


def map_table(tiou: Sequence[float], map_per_tiou: Sequence[float]) -> dict:
  """mAP (%) at 0.1:0.7 and their average, from a full per-tIoU list."""
  table = {f'{t:.1f}': 100 * m for t, m in zip(tiou, map_per_tiou)
           if round(t, 1) in TIOUS}
  table['average_0.1:0.7'] = sum(table.values()) / len(table)
  return table


def official_side(row: dict, root: pathlib.Path) -> dict:
  result = json.loads((root / 'official.json').read_text())
  return {**row, 'mAP_percent': map_table(result['tiou'], result['mAP']),
          'torch_threads': result['torch_threads'], 'phase_seconds': result['phase_seconds']}


def backtal_jax_side(row: dict, root: pathlib.Path) -> dict:
  workdir = root / 'backtal_jax'
  result = json.loads((workdir / 'results.json').read_text())
  phases = json.loads((workdir / 'phases.json').read_text())
  startup = phases['started_unix'] - row['started_unix']
  teardown = row['ended_unix'] - phases['ended_unix']
  return {**row, 'mAP_percent': map_table(result['tiou'], result['mAP']),
          'best_epoch': result.get('best_epoch'),
          'phase_seconds': {'process_start_and_imports': startup, **phases['seconds'],
                            'exit': teardown},
          'compile_seconds_by_phase': phases['compile_seconds']}


def machine() -> dict:
  return {'nproc': os.cpu_count(), 'cpu_model': affinity_kernel.cpu_model(),
          'platform': platform.platform(), 'host': platform.node()}


def run(official_repo: str, root: pathlib.Path, epochs: int, order: Sequence[str],
        threads: int) -> dict:
  """The testbed under `root` (reused if there), both runs in a new folder beside it."""
  date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
  load_before = os.getloadavg()
  testbed = build_testbed(root)
  runs = pathlib.Path(tempfile.mkdtemp(prefix='runs_', dir=root))
  commands = {'official': official_command(official_repo, testbed, runs, epochs, threads),
              'backtal_jax': backtal_jax_command(testbed, runs, epochs)}
  readers = {'official': official_side, 'backtal_jax': backtal_jax_side}
  sides = {}
  for side in order:
    row = timed(commands[side], runs / f'{side}.log')
    sides[side] = readers[side](row, runs)
    print(f'{side}: {row["wall_s"]:.1f} s (load {row["load_before"][0]:.2f} -> '
          f'{row["load_after"][0]:.2f})', flush=True)
  return {'date': date, 'epochs': epochs, 'testbed': str(testbed), 'runs': str(runs),
          'order': list(order), 'load_before': load_before, 'load_after': os.getloadavg(),
          'machine': machine(), 'versions': run_records.versions(SIDE_LIBRARIES),
          'ratio_official_over_backtal_jax':
              sides['official']['wall_s'] / sides['backtal_jax']['wall_s'],
          **sides}


def main(argv):
  del argv
  if sorted(FLAGS.order) != sorted(SIDES):
    raise app.UsageError(f'--order must name {SIDES} once each, got {FLAGS.order}')
  if not (pathlib.Path(FLAGS.official_repo) / 'tools' / 'train.py').exists():
    raise app.UsageError(f'--official_repo={FLAGS.official_repo}: no tools/train.py there; give '
                         'the root of a VividLe/BackTAL checkout')
  root = pathlib.Path(FLAGS.root or tempfile.mkdtemp(prefix='side_by_side_')).resolve()
  root.mkdir(parents=True, exist_ok=True)
  result = run(str(pathlib.Path(FLAGS.official_repo).resolve()), root, FLAGS.epochs, FLAGS.order,
               FLAGS.official_threads)
  pathlib.Path(FLAGS.json_out).write_text(json.dumps(result, indent=1) + '\n')
  print(f'official / backtal_jax = {result["ratio_official_over_backtal_jax"]:.2f}; '
        f'written to {FLAGS.json_out}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
