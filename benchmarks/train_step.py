"""Benchmark of the whole training step: forward, BackTAL loss, gradients and the Adam update.

What is timed is `train.jit_train_step` as the training loop runs it: one jit on a 1-D 'data'
mesh over every device (Adam's update split over it), each call taking the state the previous
call returned. Inputs are random features with realistic labels: one or two action classes and 1-13
background clicks per video (THUMOS14 annotation A1: median 7 per video). Rows cover each dataset's
default shape (its config's batch and T), float32 and bfloat16 compute (config.model.dtype), and
optionally the matmul precision (jax.default_matmul_precision). With `--official_repo`, PyTorch and
a CUDA device, the official step (Network, BackTALLoss, backward, torch Adam) runs on the same
batch in the same process; JAX then allocates on demand instead of preallocating the GPU, so the
must-show rows come from runs without `--official_repo`.

FLOPs: 'analytic' counts the network's matmuls (forward, weight gradients, and input gradients
where the input depends on parameters) and gives TFLOP/s; 'xla' is the compiled step's
`cost_analysis()`, for comparison. Memory: the device's `peak_bytes_in_use` (the process's peak so
far; n/a on CPU) and XLA's compiled footprint (arguments + outputs + temporaries - donated aliases).

GPU (full shapes; the issue's must-show is the thumos14 rows):
  python -m benchmarks.train_step --shapes=thumos14 --json_out=train_step_gpu.json \
      [--official_repo=/path/to/BackTAL]
CPU (width 256, batch / 4):
  python -m benchmarks.train_step --small --json_out=train_step_cpu.json
"""

import json
import logging
import math
import os
import statistics
import sys
import time
from typing import Sequence

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np

from backtal_jax.core import sharding
from backtal_jax.core.labels import IGNORE_LABEL
from backtal_jax.run import optimizer
from backtal_jax.run import train
from backtal_jax.run import train_state
from benchmarks import affinity_kernel
from configs import activitynet12
from configs import hacs
from configs import thumos

DATASET_CONFIGS = {'thumos14': thumos.get_config, 'activitynet12': activitynet12.get_config,
                   'hacs': hacs.get_config}
OFFICIAL_YAML = {'thumos14': 'THUMOS14.yaml', 'activitynet12': 'ActivityNet1.2.yaml',
                 'hacs': 'HACS.yaml'}
DTYPES = ('float32', 'bfloat16')
PRECISIONS = ('default', 'highest')
OFFICIAL_WIDTH = 2048  # the official BaseModule hard-codes 2048 hidden and 512 filter channels
BACKGROUND_CLICKS = (1, 13)  # per video, uniform: THUMOS14 annotation A1 has a median of 7
ACTION_CLASSES = (1, 2)  # ground-truth classes per video, uniform


def benchmark_config(dataset: str, shape: tuple[int, int, int], dtype: str
                     ) -> ml_collections.ConfigDict:
  """The dataset's config (THUMOS14's for a 'BxT' shape) at the given batch, T and width.

  The filter and embedding hidden widths shrink with the width, so a small run keeps the full
  network's proportions.
  """
  batch, length, width = shape
  config = DATASET_CONFIGS.get(dataset, thumos.get_config)()
  scale = width / OFFICIAL_WIDTH
  config.model.feat_dim = config.data.feature_dim = config.model.hidden_dim = width
  config.model.filter_dim = max(round(config.model.filter_dim * scale), 1)
  config.model.embed_hidden_dim = max(round(config.model.embed_hidden_dim * scale), 1)
  config.model.dtype = dtype
  config.data.num_segments = length
  config.train.batch_size = batch
  return config


def random_batch(seed: int, config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """A host batch as the pipeline yields it: features, multi-hot labels, background clicks."""
  rng = np.random.default_rng(seed)
  batch, length = config.train.batch_size, config.data.num_segments
  num_classes = config.model.num_classes
  video_labels_BxC = np.zeros((batch, num_classes), np.float32)
  click_labels_BxT = np.full((batch, length), IGNORE_LABEL, np.int32)
  for b in range(batch):
    classes = rng.choice(num_classes, rng.integers(ACTION_CLASSES[0], ACTION_CLASSES[1] + 1),
                         replace=False)
    video_labels_BxC[b, classes] = 1
    clicks = min(rng.integers(BACKGROUND_CLICKS[0], BACKGROUND_CLICKS[1] + 1), length)
    click_labels_BxT[b, rng.choice(length, clicks, replace=False)] = num_classes
  return {
      'features': rng.standard_normal((batch, length, config.model.feat_dim), np.float32),
      'video_labels': video_labels_BxC,
      'click_labels': click_labels_BxT,
      'mask': np.ones(batch, np.float32),
  }


def matmul_layers(config: ml_collections.ConfigDict) -> list[tuple[str, int, int, bool]]:
  """(layer, K, N, input needs a gradient) of every matmul of the step, taps folded into K.

  The base module runs twice (plain and foreground-weighted input), the classifier too. An input
  that depends on no parameter (the features) needs no input gradient.
  """
  m = config.model
  return [
      ('filter/conv_1', m.feat_dim, m.filter_dim, False),
      ('filter/conv_2', m.filter_dim, 1, True),
      ('embedding/conv_1', 3 * m.feat_dim, m.embed_hidden_dim, False),
      ('embedding/conv_2', 3 * m.embed_hidden_dim, m.embed_dim, True),
      ('base/conv_1 plain', 3 * m.feat_dim, m.hidden_dim, False),
      ('base/conv_2 plain', 3 * m.hidden_dim, m.hidden_dim, True),
      ('base/conv_1 suppressed', 3 * m.feat_dim, m.hidden_dim, True),
      ('base/conv_2 suppressed', 3 * m.hidden_dim, m.hidden_dim, True),
      ('classifier plain', m.hidden_dim, m.num_classes + 1, True),
      ('classifier suppressed', m.hidden_dim, m.num_classes + 1, True),
  ]


def analytic_step_flops(config: ml_collections.ConfigDict) -> int:
  """2·(B·T)·K·N per product: forward and weight gradient, plus the input gradient if needed.

  Element-wise work, top-k and the loss's T x T similarities (stop-gradient, 2·B·T²·E) are left
  out: below 1% at the datasets' shapes.
  """
  rows = config.train.batch_size * config.data.num_segments
  return sum(2 * rows * k * n * (3 if input_grad else 2)
             for _, k, n, input_grad in matmul_layers(config))


def xla_flops(compiled) -> float | None:
  """XLA's own count for the compiled step; None where the backend gives none."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get('flops')
  return float(flops) if flops is not None and flops >= 0 else None


def xla_footprint_bytes(compiled) -> int | None:
  """Arguments + outputs + temporaries - donated aliases, as XLA planned them."""
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes +
             stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def device_peak_bytes() -> int | None:
  """The first device's peak allocation so far in this process; None on CPU (no allocator stats)."""
  stats = jax.devices()[0].memory_stats()
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


def timed_steps(step_fn, state, batch, warmup: int, repeats: int):
  """Seconds of each timed step, the last state and metrics.

  Every call takes the state the previous call returned, as in training.
  """
  for _ in range(warmup):
    state, metrics = step_fn(state, batch)
  jax.block_until_ready(state)
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, metrics = step_fn(state, batch)
    jax.block_until_ready((state, metrics))
    seconds.append(time.perf_counter() - start)
  return seconds, state, metrics


def jax_step_row(dataset: str, shape, dtype: str, precision: str, host_batch: dict,
                 warmup: int, repeats: int) -> dict:
  """Compiles backtal_jax's step under the matmul precision, then times it."""
  config = benchmark_config(dataset, shape, dtype)
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh), jax.default_matmul_precision(precision):
    model = train_state.make_model(config)
    tx = optimizer.official_adam(config.train)
    state = train_state.create_train_state(config, model, tx, mesh)
    batch = sharding.to_global_batch(host_batch, sharding.batch_sharding(mesh))
    start = time.perf_counter()
    compiled = train.jit_train_step(model, tx, config, mesh, state).lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    seconds, state, metrics = timed_steps(compiled, state, batch, warmup, repeats)
  row = base_row('backtal_jax', dataset, shape, dtype, precision, config)
  row.update(xla_flops=xla_flops(compiled), xla_bytes=xla_footprint_bytes(compiled),
             peak_bytes=device_peak_bytes(), compile_s=compile_s,
             loss=float(jax.device_get(metrics['loss'])))
  return with_timing(row, seconds)


def base_row(implementation: str, dataset: str, shape, dtype: str, precision: str, config) -> dict:
  batch, length, width = shape
  return dict(implementation=implementation, dataset=dataset, batch=batch, length=length,
              width=width, dtype=dtype, precision=precision, status='ok',
              analytic_flops=analytic_step_flops(config), xla_flops=None, ms=None,
              steps_per_s=None, step_ms=None, tflops=None, peak_bytes=None, xla_bytes=None,
              compile_s=None, loss=None)


def with_timing(row: dict, seconds: list[float]) -> dict:
  """ms is the median step; TFLOP/s divides the analytic count by it."""
  ms = 1e3 * statistics.median(seconds)
  row.update(ms=ms, steps_per_s=1e3 / ms, tflops=row['analytic_flops'] / ms * 1e-9,
             step_ms=[1e3 * s for s in seconds])
  return row


def official_skip_reason(dataset: str, shape) -> str | None:
  """Why the official step cannot run here, or None.

  Its loss calls .cuda() unconditionally and its BaseModule hard-codes 2048 channels, so it needs
  a CUDA device and the datasets' full shapes.
  """
  if dataset not in OFFICIAL_YAML:
    return 'official step only at the datasets\' shapes (its T comes from the yaml)'
  if shape[2] != OFFICIAL_WIDTH:
    return 'official widths are fixed at %d (run without --small)' % OFFICIAL_WIDTH
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return 'torch is not importable'
  if not torch.cuda.is_available():
    return 'no CUDA device: the official BackTALLoss calls .cuda() unconditionally'
  return None


def check_official_repo(repo: str) -> None:
  """Fails early on a path that is not a BackTAL checkout, whatever the device."""
  if not os.path.isfile(os.path.join(repo, 'lib', 'models', 'network.py')):
    raise FileNotFoundError('--official_repo=%s: no lib/models/network.py there; pass the root '
                            'of a BackTAL checkout' % repo)


def load_official(repo: str, dataset: str):
  """(Network, BackTALLoss, cfg) imported from the checkout, cfg updated from the dataset's yaml.

  The official modules are imported as the official tools/ scripts import them, with lib/ on
  sys.path; nothing of them is copied or patched.
  """
  lib = os.path.join(repo, 'lib')
  if lib not in sys.path:
    sys.path.insert(0, lib)
  # pylint: disable=g-import-not-at-top
  from config import default
  from criterion.loss import BackTALLoss
  from models.network import Network
  # pylint: enable=g-import-not-at-top
  default.update_config(os.path.join(repo, 'experiments', OFFICIAL_YAML[dataset]))
  return Network, BackTALLoss, default.config


def official_inputs(host_batch: dict):
  """The host batch in the official layout on the GPU: features [B, F, T], labels, clicks."""
  import torch  # pylint: disable=g-import-not-at-top
  features_BxFxT = np.ascontiguousarray(np.swapaxes(host_batch['features'], 1, 2))
  return (torch.from_numpy(features_BxFxT).cuda(),
          torch.from_numpy(host_batch['video_labels']).cuda(),
          torch.from_numpy(host_batch['click_labels']).long().cuda())


def official_step_row(repo: str, dataset: str, shape, host_batch: dict, warmup: int,
                      repeats: int) -> dict:
  """The official train() loop body on the same batch: forward, loss, backward, Adam step.

  float32 at PyTorch's default precision (matmuls without tf32 unless the process enables it,
  cuDNN convolutions with tf32); the official run also sets cuDNN deterministic, which this leaves
  at PyTorch's default.
  """
  config = benchmark_config(dataset, shape, 'float32')
  row = base_row('official', dataset, shape, 'float32', 'torch default', config)
  reason = official_skip_reason(dataset, shape)
  if reason:
    row['status'] = 'skipped: ' + reason
    return row
  import torch  # pylint: disable=g-import-not-at-top
  network_cls, loss_cls, cfg = load_official(repo, dataset)
  torch.manual_seed(0)
  model = network_cls(cfg).cuda().train()
  adam = torch.optim.Adam(model.parameters(), lr=cfg.TRAIN.LR, betas=cfg.TRAIN.BETAS,
                          weight_decay=cfg.TRAIN.WEIGHT_DECAY)
  criterion = loss_cls(cfg)
  features, labels, clicks = official_inputs(host_batch)
  names = ['video_%d' % b for b in range(shape[0])]

  def step():
    outputs = model(features, is_train=True)
    loss, _ = criterion(cfg, *outputs, labels, clicks, names)
    adam.zero_grad()
    loss.backward()
    adam.step()
    return loss

  for _ in range(warmup):
    step()
  torch.cuda.synchronize()
  torch.cuda.reset_peak_memory_stats()
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    loss = step()
    torch.cuda.synchronize()
    seconds.append(time.perf_counter() - start)
  row.update(peak_bytes=int(torch.cuda.max_memory_allocated()), loss=float(loss.item()),
             precision='torch default (matmul tf32 %s)' % torch.backends.cuda.matmul.allow_tf32)
  return with_timing(row, seconds)


def run_benchmark(shapes, dtypes, precisions, warmup: int = 2, repeats: int = 5, seed: int = 0,
                  official_repo: str = '') -> list[dict]:
  """One row per (shape, dtype, precision) of backtal_jax, then the official row per shape."""
  rows = []
  for dataset, shape in shapes:
    host_batch = random_batch(seed, benchmark_config(dataset, shape, 'float32'))
    for dtype in dtypes:
      for precision in precisions:
        rows.append(jax_step_row(dataset, shape, dtype, precision, host_batch, warmup, repeats))
        logging.info('%s', format_row(rows[-1]))
    if official_repo:
      rows.append(official_step_row(official_repo, dataset, shape, host_batch, warmup, repeats))
      logging.info('%s', format_row(rows[-1]))
  return rows


def mebibytes(size: int | None) -> str:
  return 'n/a' if size is None else '%.0f' % (size / 2**20)


def format_row(row: dict) -> str:
  shape = '%s B=%d T=%d W=%d' % (row['dataset'], row['batch'], row['length'], row['width'])
  head = '%-12s %-32s %-9s %-9s' % (row['implementation'], shape, row['dtype'],
                                    row['precision'][:9])
  if row['status'] != 'ok':
    return '%s %s' % (head, row['status'])
  xla = 'n/a' if row['xla_flops'] is None else '%.2f' % (row['xla_flops'] * 1e-9)
  compile_s = '-' if row['compile_s'] is None else '%.1f' % row['compile_s']
  return '%s %9.2f %8.2f %10.2f %9s %8.3f %9s %8s %8s %10.4f' % (
      head, row['ms'], row['steps_per_s'], row['analytic_flops'] * 1e-9, xla, row['tflops'],
      mebibytes(row['peak_bytes']), mebibytes(row['xla_bytes']), compile_s, row['loss'])


def format_table(rows: list[dict]) -> str:
  header = '%-12s %-32s %-9s %-9s %9s %8s %10s %9s %8s %9s %8s %8s %10s' % (
      'impl', 'shape', 'dtype', 'precision', 'ms', 'steps/s', 'GFLOP', 'XLA GFLOP', 'TFLOP/s',
      'peak MiB', 'XLA MiB', 'compile', 'loss')
  return '\n'.join([header] + [format_row(row) for row in rows])


def share_gpu_with_torch() -> None:
  """Stops JAX from preallocating 75% of the GPU, which would leave the official step in the same
  process without memory. Takes effect only before JAX's first use of the device, as in main."""
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('shapes', ','.join(affinity_kernel.DATASET_SHAPES),
                      'comma-separated dataset names (%s) or BxT' %
                      ', '.join(affinity_kernel.DATASET_SHAPES))
  flags.DEFINE_integer('width', OFFICIAL_WIDTH,
                       'feature and hidden width; filter and embedding widths scale with it')
  flags.DEFINE_integer('batch_divisor', 1, 'divide the datasets\' B')
  flags.DEFINE_bool('small', False, 'CPU preset: --width=%d --batch_divisor=%d' % (
      affinity_kernel.SMALL_WIDTH, affinity_kernel.SMALL_BATCH_DIVISOR))
  flags.DEFINE_string('dtypes', ','.join(DTYPES), 'compute dtypes (model.dtype)')
  flags.DEFINE_string('precisions', 'default',
                      'comma-separated jax.default_matmul_precision values: %s' %
                      ', '.join(PRECISIONS))
  flags.DEFINE_integer('warmup', 2, 'untimed steps after compiling')
  flags.DEFINE_integer('repeats', 5, 'timed steps; the median is reported')
  flags.DEFINE_integer('seed', 0, 'of the random batch')
  flags.DEFINE_string('official_repo', '',
                      'root of an official BackTAL checkout: also time its step (CUDA only)')
  flags.DEFINE_string('json_out', '', 'write environment and rows as JSON here')


def main(argv: Sequence[str]) -> int:
  """Runs, prints the table, writes JSON; exit status 1 when a step's loss is not finite."""
  args = affinity_kernel.arguments(sys.modules[__name__], argv)
  split = lambda s: [item for item in s.split(',') if item]
  if args.official_repo:
    check_official_repo(args.official_repo)
    share_gpu_with_torch()
  shapes = affinity_kernel.resolve_shapes(split(args.shapes), args.width, args.batch_divisor)
  rows = run_benchmark(shapes, split(args.dtypes), split(args.precisions), args.warmup,
                       args.repeats, args.seed, args.official_repo)
  env = affinity_kernel.environment()
  env['xla_python_client_preallocate'] = os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE', '')
  print('# %s (%s, %d devices), jax %s, %s; median of %d steps after compile + %d warm-up' % (
      env['device'], env['processor'], env['device_count'], env['jax_version'], env['date'],
      args.repeats, args.warmup))
  print(format_table(rows))
  if args.json_out:
    with open(args.json_out, 'w') as f:
      json.dump(dict(environment=env, arguments=vars(args), flops_counted='analytic (TFLOP/s); '
                     'xla_flops from compiled.cost_analysis()', results=rows), f, indent=1)
  timed = [row for row in rows if row['status'] == 'ok']
  return 0 if all(math.isfinite(row['loss']) for row in timed) else 1


if __name__ == '__main__':
  define_flags()
  app.run(main)
