"""Trains and evaluates BackTAL; all settings come from the config file.

  python -m backtal_jax.main --config=configs/thumos.py:synthetic --workdir=/tmp/backtal
"""

if __name__ == '__main__':  # before the imports below: it may re-execute the command
  from backtal_jax.run import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.use_huge_pages()

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from backtal_jax.core import errors
from backtal_jax.reporting import logs
from backtal_jax.run import evaluate_only
from backtal_jax.run import train

FLAGS = flags.FLAGS


def define_flags() -> None:
  config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:variant]).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Checkpoints, logs and results (local or gs://).')
  flags.DEFINE_bool(
      'distributed', False, 'Call jax.distributed.initialize() first: on every host of a TPU pod '
      'slice (no other settings needed) or of a multi-node GPU job (SLURM supplies them).')
  flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logs.quiet_library_logs()
  if FLAGS.distributed:
    jax.distributed.initialize()
  logging.info('JAX process %d of %d; %d local devices of %d: %s', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices())
  if FLAGS.config.eval.only:
    evaluate_only.evaluate_checkpoint(FLAGS.config, FLAGS.workdir)
  else:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  define_flags()
  errors.run(main)
