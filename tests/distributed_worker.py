"""One process of the two-process `jax.distributed` test (tests/test_distributed.py).

  python -m tests.distributed_worker --process_id=0 --num_processes=2 --port=12345 \
      --testbed=DIR --workdir=DIR --out=FILE [--train]

Runs two training steps of configs/thumos.py:debug through the real code path, saves and restores
a checkpoint, and detects the test split; writes what it saw to --out as JSON. The test runs the
same `run_steps` in its own process as the single-process reference. With --train it runs
`train.train_and_evaluate` on the debug config instead.
"""

import json

from absl import app
from absl import flags
import jax
import numpy as np

from backtal_jax.core import sharding
from backtal_jax.data import pipeline
from backtal_jax.run import history
from backtal_jax.run import stop_signals
from backtal_jax.run import train
from backtal_jax.run import train_state
from configs import thumos

NUM_STEPS = 2


def debug_config(testbed: str):
  """The debug config; every class confident, so that evaluation yields detections to compare."""
  config = thumos.get_config('debug')
  config.data.features_root = testbed
  config.eval.class_score_thresh = 0.0
  return config


def largest_difference(tree_a, tree_b) -> float:
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                       jax.device_get(tree_a), jax.device_get(tree_b))
  return max(jax.tree.leaves(diffs))


def run_steps(testbed: str, workdir: str) -> dict:
  """Losses and indices of NUM_STEPS steps, a checkpoint round trip, and the test detections.

  Detections use the initial parameters, bit-identical in every layout, so that the gathered
  detections can be compared exactly (trained ones differ by the all-reduce's rounding).
  """
  config = debug_config(testbed)
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    run = train.Run(config, workdir, mesh)
    state = train_state.create_train_state(config, run.model, run.tx, mesh)
    loader = run.data.train_feed(pipeline.DataPosition(), mesh)
    step_fn = train.jit_train_step(run.model, run.tx, config, mesh, state, loader)
    losses, indices = [], []
    for _ in range(NUM_STEPS):
      batch = next(loader)
      indices.append(sharding.local_rows(batch['index']).tolist())
      state, metrics = step_fn(state, batch)
      losses.append(float(jax.device_get(metrics['loss'])))
    loader.close()
    run.checkpoints.save(state, history.CheckpointRecord(loader.position))
    run.checkpoints.wait_until_finished()
    restored, record = run.checkpoints.restore_latest(state)
    initial = train_state.create_train_state(config, run.model, run.tx, mesh)
    detections, _ = run.evaluator.detect(initial.params, run.data.test.source,
                                         run.data.test.ground_truth.class_names)
    run.checkpoints.close()
    run.writer.close()
  return {'any_process': [stop_signals.any_process(jax.process_index() == 1),
                          stop_signals.any_process(False)],
          'losses': losses, 'indices': indices, 'detections': detections,
          'restored_step': int(restored.step), 'restored_position': record.position.to_dict(),
          'restored_difference': largest_difference(restored.params, state.params)}


def train_debug(testbed: str, workdir: str) -> dict:
  """The whole loop: epochs, evaluations, checkpoints, the final report."""
  config = thumos.get_config('debug')
  config.data.features_root = testbed
  state = train.train_and_evaluate(config, workdir)
  return {'step': int(state.step)}


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_integer('process_id', None, 'This process\'s index.', required=True)
  flags.DEFINE_integer('num_processes', None, 'How many processes take part.', required=True)
  flags.DEFINE_integer('port', None, 'The coordinator\'s port on 127.0.0.1.', required=True)
  flags.DEFINE_string('testbed', None, 'Folder of the synthetic testbed.', required=True)
  flags.DEFINE_string('workdir', None, 'The run\'s workdir.', required=True)
  flags.DEFINE_string('out', None, 'JSON file for what this process saw.', required=True)
  flags.DEFINE_bool('train', False, 'Run train.train_and_evaluate instead of two steps.')


def main(argv):
  del argv
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{FLAGS.port}',
                             num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
                             initialization_timeout=120)
  result = (train_debug if FLAGS.train else run_steps)(FLAGS.testbed, FLAGS.workdir)
  result['process_index'] = jax.process_index()
  result['local_devices'] = jax.local_device_count()
  with open(FLAGS.out, 'w') as f:
    json.dump(result, f)
  jax.distributed.shutdown()


if __name__ == '__main__':
  define_flags()
  app.run(main)
