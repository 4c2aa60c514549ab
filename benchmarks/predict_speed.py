"""Videos per second of `backtal_jax.predict` on this machine, and the sizes of best/ and
checkpoints/.

  python -m benchmarks.predict_speed [--variant=] [--videos=24] [--root=/tmp/predict_speed]

Builds a run folder whose best/ and checkpoints/ hold an initialised (untrained) model of the
config variant ('' is the official width 2048), writes `--videos` .npy feature files of random
native lengths between --min_snippets and --max_snippets (THUMOS14 test videos have 63 to about
2400 16-frame snippets) with a metadata CSV, then times the whole prediction twice (the first run
includes compilation). An untrained model scores no class above config.eval.class_score_thresh,
so post-processing is also timed with every class scored ('all_classes'), a worst case: on random
features every class makes thousands of proposals. CPU seconds are reported beside wall-clock ones
because a shared machine's load moves the latter.
"""

import csv
import json
import pathlib
import subprocess
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from backtal_jax.core import sharding
from backtal_jax.reporting import logs
from backtal_jax.run import checkpoint
from backtal_jax.run import history
from backtal_jax.run import optimizer
from backtal_jax.run import predictor
from backtal_jax.run import train_state
from configs import thumos

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('variant', '', "configs/thumos.py variant: '' (official width) "
                      "or 'synthetic' (the CPU testbed's width 128)")
  flags.DEFINE_integer('videos', 24, 'Feature files to predict on.')
  flags.DEFINE_integer('min_snippets', 63, 'Shortest native length.')
  flags.DEFINE_integer('max_snippets', 2400, 'Longest native length.')
  flags.DEFINE_string('root', '/tmp/predict_speed', 'Scratch folder.')


def folder_bytes(path: pathlib.Path) -> int:
  return sum(p.stat().st_size for p in path.rglob('*') if p.is_file())


def with_trained_like_moments(state: train_state.TrainState) -> train_state.TrainState:
  """Adam's moments filled with noise, as after training: at initialisation they are zeros, which
  orbax's compression would shrink to nothing and make checkpoints/ look as small as best/."""
  leaves, tree = jax.tree.flatten(state.opt_state)
  keys = jax.random.split(jax.random.key(0), len(leaves))
  noisy = [jax.random.normal(k, x.shape, x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
           for k, x in zip(keys, leaves)]
  return state.replace(opt_state=jax.tree.unflatten(tree, noisy))


def save_run(config, run: pathlib.Path) -> None:
  """best/ (parameters) and checkpoints/ (the whole TrainState) of an initialised model."""
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    model = train_state.make_model(config)
    state = with_trained_like_moments(train_state.create_train_state(
        config, model, optimizer.official_adam(config.train), mesh))
  saver = checkpoint.Checkpoints(str(run))
  saver.save(state, history.CheckpointRecord(), is_best=True)
  saver.wait_until_finished()
  saver.close()


def write_inputs(config, folder: pathlib.Path, count: int, low: int, high: int) -> list[int]:
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  lengths = rng.integers(low, high + 1, size=count).tolist()
  with open(folder / 'meta.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['vid_name', 'duration', 'fps'])
    for i, length in enumerate(lengths):
      name = f'video_{i:04d}'
      np.save(folder / f'{name}.npy',
              rng.normal(size=(length, config.data.feature_dim)).astype(np.float32))
      writer.writerow([name, length * 16 / 30, 30])
  return lengths


def timed_predict(config, run: pathlib.Path, inputs: pathlib.Path,
                  output: pathlib.Path) -> tuple[float, float]:
  """Wall-clock and CPU seconds (all threads of this process) of one whole prediction."""
  wall, cpu = time.monotonic(), time.process_time()
  predictor.predict(config, str(run / 'best'), [str(inputs)], str(output),
                    metadata_csv=str(inputs / 'meta.csv'))
  return time.monotonic() - wall, time.process_time() - cpu


def main(argv):
  del argv
  logs.quiet_library_logs()
  root = pathlib.Path(FLAGS.root)
  config = thumos.get_config(FLAGS.variant)
  config.data.source = 'npz'  # no testbed is needed: prediction reads the files given
  run, inputs = root / 'run', root / 'inputs'
  if not run.exists():
    save_run(config, run)
  lengths = write_inputs(config, inputs, FLAGS.videos, FLAGS.min_snippets, FLAGS.max_snippets)
  results = {'variant': FLAGS.variant or 'official', 'feature_dim': config.data.feature_dim,
             'hidden_dim': config.model.hidden_dim, 'videos': len(lengths),
             'snippets': [min(lengths), max(lengths)],
             'best_bytes': folder_bytes(run / 'best'),
             'checkpoints_bytes': folder_bytes(run / 'checkpoints'),
             'uptime': subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}
  for scored in ('default', 'all_classes'):
    if scored == 'all_classes':
      config.eval.class_score_thresh = 0.0
    (first, _), (wall, cpu) = [timed_predict(config, run, inputs, root / f'{scored}.json')
                               for _ in range(2)]
    found = json.loads((root / f'{scored}.json').read_text())['results']
    results[scored] = {'seconds_first': first, 'seconds': wall, 'cpu_seconds': cpu,
                       'videos_per_second': len(lengths) / wall,
                       'videos_per_cpu_second': len(lengths) / cpu,
                       'detections': sum(map(len, found.values()))}
  print(json.dumps(results, indent=1))


if __name__ == '__main__':
  define_flags()
  app.run(main)
