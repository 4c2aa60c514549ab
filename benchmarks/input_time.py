"""Host time per training step spent on input: streamed from npz files vs device-resident.

For each dataset's official batch shape (THUMOS14 16 x 750, ActivityNet1.2 128 x 100, HACS 64 x
200; 2048 features), writes one batch worth of videos in the official npz layout, then times what
the host does per step until the step's inputs are global jax.Arrays: streaming reads the videos
(`config.data.readers` threads) and places the batch; device-resident sends only the B indices
(the split was placed once, not timed here). Median over the steps of two epochs.

  python -m benchmarks.input_time --json_out=/tmp/input_time.json [--widths=2048,128]
"""

import json
import pathlib
import statistics
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

from backtal_jax.core import sharding
from backtal_jax.data import feeds
from backtal_jax.data import pipeline
from configs import activitynet12
from configs import hacs
from configs import thumos

CONFIGS = {'thumos14': thumos.get_config, 'activitynet12': activitynet12.get_config,
           'hacs': hacs.get_config}


def write_videos(folder: pathlib.Path, count: int, spec: pipeline.BatchSpec) -> None:
  """`count` training videos in the official layout (channels-first halves, point labels)."""
  rng = np.random.default_rng(0)
  (folder / 'train').mkdir(parents=True)
  half = spec.feature_dim // 2
  for i in range(count):
    np.savez(folder / 'train' / f'video_{i:05d}.npz',
             feat_spa=rng.normal(size=(half, spec.num_segments)).astype(np.float32),
             feat_tem=rng.normal(size=(half, spec.num_segments)).astype(np.float32),
             cls_label=np.eye(spec.num_classes, dtype=np.float32)[i % spec.num_classes],
             vid_name=np.array(f'video_{i:05d}'),
             point_label=np.full(spec.num_segments, -100, np.int64))


def host_ms_per_step(feed, steps: int) -> list[float]:
  times = []
  for _ in range(steps):
    started = time.perf_counter()
    inputs = next(feed)
    jax.block_until_ready(inputs)
    times.append((time.perf_counter() - started) * 1e3)
  return times


def measure(dataset: str, width: int, mode: str, root: pathlib.Path, readers: int) -> dict:
  config = CONFIGS[dataset]()
  config.data.resident = mode
  config.data.readers = readers
  config.data.prefetch = 0  # time the reading itself, not a prefetch thread hiding it
  config.data.feature_dim = config.model.feat_dim = width
  batch = config.train.batch_size
  spec = pipeline.BatchSpec(config.data.num_segments, width, config.model.num_classes)
  folder = root / f'{dataset}_{width}'
  if not folder.exists():
    write_videos(folder, batch, spec)
  source = pipeline.NpzSource(folder, 'train', num_classes=spec.num_classes, feature_dim=width,
                              num_segments=spec.num_segments, require_clicks=True)
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    feed = feeds.train_feed(source, config, spec, pipeline.DataPosition(), mesh)
    times = host_ms_per_step(feed, 2 * feed.steps_per_epoch + 4)
    feed.close()
  return {'dataset': dataset, 'batch': batch, 'segments': spec.num_segments, 'width': width,
          'mode': mode, 'readers': readers if mode == 'never' else 0,
          'median_ms': statistics.median(times), 'max_ms': max(times)}


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_list('datasets', list(CONFIGS), 'Official shapes.')
  flags.DEFINE_list('widths', ['2048', '128'], 'Feature widths (2048: official).')
  flags.DEFINE_list('readers', ['1', '4'], 'Reader threads of the streamed rows.')
  flags.DEFINE_string('json_out', '', 'Write the rows here.')


def main(argv):
  del argv
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for dataset in FLAGS.datasets:
      for width in map(int, FLAGS.widths):
        runs = [('never', int(r)) for r in FLAGS.readers] + [('always', 0)]
        for mode, readers in runs:
          rows.append(measure(dataset, width, mode, pathlib.Path(tmp), readers))
          r = rows[-1]
          print(f"{r['dataset']:14s} B={r['batch']:3d} T={r['segments']:3d} F={r['width']:4d} "
                f"{'resident' if mode == 'always' else f'streamed, {readers} readers':20s} "
                f"{r['median_ms']:9.2f} ms (max {r['max_ms']:.2f})", flush=True)
  if FLAGS.json_out:
    pathlib.Path(FLAGS.json_out).write_text(json.dumps(rows, indent=1) + '\n')


if __name__ == '__main__':
  define_flags()
  app.run(main)
