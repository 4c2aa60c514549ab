"""Seconds for the pre-flight scan of every feature file of a dataset (backtal_jax.run.preflight).

  python -m backtal_jax.data.synthetic --dataset=thumos14 --out=/tmp/scan_thumos --half_width=1024
  python -m benchmarks.preflight_scan --dataset=thumos14 --features_root=/tmp/scan_thumos

Times `preflight.data_problems` twice: cold (the files evicted from the page cache first, with
posix_fadvise, as after a reboot or on first use) and warm. The trees of the synthetic builder at
the official width (2048) have the official file count, layout and sizes.
"""

import os
import pathlib
import time

from absl import app
from absl import flags

from backtal_jax.run import preflight
from configs import activitynet12
from configs import thumos

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_enum('dataset', 'thumos14', ['thumos14', 'activitynet12'], 'Its config.')
  flags.DEFINE_string('features_root', None, 'Folder of <split>/*.npz.', required=True)


def evict(paths) -> None:
  """Drops the files' pages from the page cache, so the next read comes from the disk."""
  for path in paths:
    fd = os.open(path, os.O_RDONLY)
    try:
      os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
      os.close(fd)


def main(argv):
  del argv
  config = (thumos if FLAGS.dataset == 'thumos14' else activitynet12).get_config()
  config.data.features_root = FLAGS.features_root
  root = pathlib.Path(FLAGS.features_root)
  paths = sorted(root.glob('*/*.npz'))
  size = sum(p.stat().st_size for p in paths)
  evict(paths)
  for label in ('cold', 'warm'):
    started = time.monotonic()
    problems = preflight.data_problems(config, root)
    print(f'{FLAGS.dataset}: {len(paths)} files, {size / 1e9:.2f} GB, {label}: '
          f'{time.monotonic() - started:.2f} s, {len(problems)} problems')


if __name__ == '__main__':
  define_flags()
  app.run(main)
