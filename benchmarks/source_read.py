"""Milliseconds to read one training video: the official npz files against the TFDS copy.

  python -m benchmarks.source_read [--videos=16] [--repeats=3]

Writes `--videos` THUMOS14-shaped training files (T = 750, F = 2048, 20 classes; random features,
official layout), builds the TFDS (ArrayRecord) copy of them with `backtal_jax.data.tfds_builder`
(needs the `tfds` extra), then reads every video once per repeat in a shuffled order, as training
does, through `pipeline.NpzSource` and `pipeline.TfdsSource`, alternating the two. The page cache
is warm: this measures decoding, not the disk.
"""

import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow_datasets as tfds

from backtal_jax.data import pipeline
from backtal_jax.data import tfds_builder
from tests import npz_files

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_integer('videos', 16, 'Training videos written and read.')
  flags.DEFINE_integer('repeats', 3, 'Shuffled passes per source.')


SHAPE = dict(num_segments=750, feature_dim=2048, num_classes=20)


def ms_per_video(source: pipeline.Source, order: np.ndarray) -> float:
  started = time.perf_counter()
  for index in order:
    source[int(index)]
  return 1000 * (time.perf_counter() - started) / len(order)


def main(argv):
  del argv
  root, data_dir = tempfile.mkdtemp(), tempfile.mkdtemp()
  npz_files.write_split(root, 'val', FLAGS.videos, train=True, **SHAPE)
  npz_files.write_split(root, 'test', 1, train=False, **SHAPE)
  config = tfds_builder.FeatureConfig(name='benchmark', **SHAPE)
  builder = tfds_builder.BacktalFeatures(config=config, data_dir=data_dir,
                                         file_format='array_record')
  started = time.perf_counter()
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=root))
  print(f'TFDS build: {time.perf_counter() - started:.1f} s for {FLAGS.videos + 1} videos')
  sources = {
      'npz': pipeline.NpzSource(root, 'val', num_classes=20, feature_dim=2048, num_segments=750,
                                require_clicks=True),
      'tfds': pipeline.TfdsSource(builder.as_data_source(split='val')),
  }
  rng = np.random.default_rng(0)
  times = {name: [] for name in sources}
  for _ in range(FLAGS.repeats):
    for name, source in sources.items():
      times[name].append(ms_per_video(source, rng.permutation(FLAGS.videos)))
  for name, values in times.items():
    print(f'{name}: {min(values):.1f} to {max(values):.1f} ms per video '
          f'(median {np.median(values):.1f})')


if __name__ == '__main__':
  define_flags()
  app.run(main)
