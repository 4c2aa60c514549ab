"""Microbenchmark of the affinity convolution against a dense matmul of equal FLOPs.

Every formulation (the naive unfold-and-tile one mirroring the official code, the fast one of
backtal_jax.model.affinity, and the alternatives below) is first checked against the naive one on
fresh random inputs at the precision being timed; a formulation outside that precision's tolerance
is reported as rejected, never timed. Then each is timed forward and forward+backward (gradients
with respect to x, similarity and kernel) and compared with a dense [B*T, 3I] x [3I, O] matmul
measured in the same run at the same precision.

GPU (full shapes, all datasets):
  python -m benchmarks.affinity_kernel --json_out=affinity_gpu.json
CPU (width 256, batch / 4):
  python -m benchmarks.affinity_kernel --small --json_out=affinity_cpu.json
TPU (adds the rows 'kernel', the fused Pallas kernel of backtal_jax.model.affinity_pallas, and
'kernel_16mib', the same with smaller tiles; off TPUs they run only when named in --formulations,
interpreted, for their check, not for their speed):
  python -m benchmarks.affinity_kernel --json_out=affinity_tpu.json
The TPU compiler's count on a CPU with libtpu (`pip install 'jax[tpu]'`): per TPU generation and
form, one chip's bytes, FLOPs, estimated cycles and roofline, compiled and not run:
  python -m benchmarks.affinity_kernel --tpu_counts --shapes=thumos14 --json_out=counts.json
"""

import datetime
import json
import logging
import platform
import re
import statistics
import sys
import time
import types
from typing import Any
from typing import Callable
from typing import Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from backtal_jax.core import sharding
from backtal_jax.model import affinity as affinity_lib
from backtal_jax.model import affinity_pallas

DATASET_SHAPES = {'thumos14': (16, 750), 'activitynet12': (128, 100), 'hacs': (64, 200)}
MODES = ('forward', 'forward_backward')
PRECISIONS = {
    'highest': (jnp.float32, jax.lax.Precision.HIGHEST),
    'default': (jnp.float32, jax.lax.Precision.DEFAULT),
    'bfloat16': (jnp.bfloat16, jax.lax.Precision.DEFAULT),
}
# Relative Frobenius error against the naive formulation evaluated in float32 at HIGHEST on the same
# (already cast) inputs. tf32 rounds the operands to 10 mantissa bits (~5e-4); in bfloat16 the
# naive formulation itself is 8e-3 off in its gradients at I=256 on the CPU (outputs and sums
# rounded to 8 bits); an affinity mistake is of order 1 (official vs paper: 1.1).
TOLERANCE = {'highest': 1e-5, 'default': 5e-3, 'bfloat16': 3e-2}
SMALL_WIDTH = 256
SMALL_BATCH_DIVISOR = 4

Formulation = Callable[..., jax.Array]  # (x_BxTxI, similarity_BxTx3, kernel_KxIxO, precision)


def tap_group_ranges(channels: int, tap: int) -> list[tuple[int, int, int]]:
  """(group, first, end) channel ranges of one tap in the official grouping, in channel order.

  Along the channels of a fixed tap k the group floor((3c + k) / I) never decreases, so each group
  owns one contiguous range and the scale of the shifted input is a concatenation of broadcasts.
  """
  group_I = (np.arange(channels) * affinity_lib.KERNEL_SIZE + tap) // channels
  ranges = []
  for g in range(affinity_lib.KERNEL_SIZE):
    first, end = np.searchsorted(group_I, [g, g + 1])
    if end > first:
      ranges.append((g, int(first), int(end)))
  return ranges


def scaled_taps(x_TxI, similarity_Tx3, affinity):
  """The three shifted inputs, each scaled by its similarity at the output frame t: [T, I] each.

  The similarity is taken at the output frame t, i.e. at the row of the unfolded input, so scaling
  before the product is exact for both forms.
  """
  length, channels = x_TxI.shape
  taps = []
  for k in range(affinity_lib.KERNEL_SIZE):
    if affinity == 'paper':
      scale_TxI = similarity_Tx3[:, k:k + 1]
    else:
      scale_TxI = jnp.concatenate(
          [jnp.broadcast_to(similarity_Tx3[:, g:g + 1], (length, end - first))
           for g, first, end in tap_group_ranges(channels, k)], axis=-1)
    taps.append(affinity_lib._shift(x_TxI, k - 1) * scale_TxI)
  return taps


def _scaled_unfold_one_video(x_TxI, similarity_Tx3, kernel_KxIxO, precision, affinity):
  """One [T, 3I] x [3I, O] product of the concatenated scaled taps (materialises [T, 3I])."""
  unfolded_TxKI = jnp.concatenate(scaled_taps(x_TxI, similarity_Tx3, affinity), axis=-1)
  kernel_KIxO = kernel_KxIxO.reshape(-1, kernel_KxIxO.shape[-1])
  return jnp.dot(unfolded_TxKI, kernel_KIxO, precision=precision)


def _scaled_taps_one_video(x_TxI, similarity_Tx3, kernel_KxIxO, precision, affinity):
  """Three [T, I] x [I, O] products of the scaled taps, summed (no [T, 3I] concatenation)."""
  taps = scaled_taps(x_TxI, similarity_Tx3, affinity)
  return sum(jnp.dot(tap_TxI, kernel_IxO, precision=precision)
             for tap_TxI, kernel_IxO in zip(taps, kernel_KxIxO))


def _shifted_outputs_one_video(x_TxI, similarity_Tx3, kernel_KxIxO, precision):
  """Official affinity, per group: [T, G] x [G, 3O], then the shifted sum of the three taps."""
  c_out = kernel_KxIxO.shape[-1]
  out_TxO = 0
  for g, (first, end, mask_KxG) in enumerate(affinity_lib.official_groups(x_TxI.shape[-1])):
    kernel_KxGxO = kernel_KxIxO[:, first:end] * jnp.asarray(mask_KxG, kernel_KxIxO.dtype)[..., None]
    kernel_GxKO = jnp.transpose(kernel_KxGxO, (1, 0, 2)).reshape(end - first, -1)
    taps_TxKxO = jnp.dot(x_TxI[:, first:end], kernel_GxKO, precision=precision).reshape(
        -1, affinity_lib.KERNEL_SIZE, c_out)
    summed_TxO = sum(affinity_lib._shift(taps_TxKxO[:, k], k - 1)
                     for k in range(affinity_lib.KERNEL_SIZE))
    out_TxO = out_TxO + similarity_Tx3[:, g:g + 1] * summed_TxO
  return out_TxO


def _grouped_conv(x_BxTxI, similarity_BxTx3, kernel_KxIxO, precision):
  """Official affinity as one grouped convolution (3 groups -> 3O channels), then weights.

  The groups' channel ranges (which share the boundary channels when I % 3 != 0) are copied side
  by side and zero-padded to equal width, so XLA sees feature_group_count=3.
  """
  groups = affinity_lib.official_groups(x_BxTxI.shape[-1])
  width = max(end - first for first, end, _ in groups)
  inputs, kernels = [], []
  for first, end, mask_KxG in groups:
    pad = width - (end - first)
    inputs.append(jnp.pad(x_BxTxI[..., first:end], ((0, 0), (0, 0), (0, pad))))
    masked_KxGxO = kernel_KxIxO[:, first:end] * jnp.asarray(mask_KxG, kernel_KxIxO.dtype)[..., None]
    kernels.append(jnp.pad(masked_KxGxO, ((0, 0), (0, pad), (0, 0))))
  out_BxTx3O = jax.lax.conv_general_dilated(
      jnp.concatenate(inputs, axis=-1), jnp.concatenate(kernels, axis=-1), window_strides=(1,),
      padding=((1, 1),), dimension_numbers=('NWC', 'WIO', 'NWC'), feature_group_count=3,
      precision=precision)
  batch, length, _ = x_BxTxI.shape
  out_BxTx3xO = out_BxTx3O.reshape(batch, length, affinity_lib.KERNEL_SIZE, -1)
  return jnp.einsum('btgo,btg->bto', out_BxTx3xO, similarity_BxTx3.astype(out_BxTx3xO.dtype))


def _vmapped(one_video: Callable, **kwargs) -> Formulation:
  def formulation(x_BxTxI, similarity_BxTx3, kernel_KxIxO, precision):
    fn = lambda x, s: one_video(x, s, kernel_KxIxO, precision=precision, **kwargs)
    return jax.vmap(fn)(x_BxTxI, similarity_BxTx3)
  return formulation


def formulations(affinity: str, interpret_kernel: bool | None = None) -> dict[str, Formulation]:
  """Name -> formulation for one affinity form; 'naive' first, since it is the reference.

  The kernel is interpreted unless it runs (or is compiled, interpret_kernel=False) for a TPU.
  """
  interpret = not on_tpu() if interpret_kernel is None else interpret_kernel
  found = {
      'naive': lambda x, s, k, precision: affinity_lib.NAIVE[affinity](x, s, k),
      'fast': lambda x, s, k, precision: affinity_lib.affinity_conv(
          x, s, k, affinity=affinity, precision=precision),
      'scaled_unfold': _vmapped(_scaled_unfold_one_video, affinity=affinity),
      'scaled_taps': _vmapped(_scaled_taps_one_video, affinity=affinity),
  }
  if affinity == 'official':
    found['shifted_outputs'] = _vmapped(_shifted_outputs_one_video)
    found['grouped_conv'] = _grouped_conv
    found['convolution'] = affinity_lib.official_by_convolution  # what TPUs got before 'kernel'
  found['kernel'] = lambda x, s, k, precision: affinity_pallas.fused_affinity_conv(
      x, s, k, affinity=affinity, precision=precision, interpret=interpret)
  # The same kernel with tiles chosen within v4's 16 MiB: smaller blocks, more re-reads, shorter
  # pipeline fill. On a TPU its time beside 'kernel' says which tiling the chip prefers.
  found['kernel_16mib'] = lambda x, s, k, precision: affinity_pallas.fused_affinity_conv(
      x, s, k, affinity=affinity, precision=precision, interpret=interpret,
      vmem_limit_bytes=affinity_pallas.VMEM_LIMIT_BYTES)
  return found


def on_tpu() -> bool:
  return jax.default_backend() == 'tpu'


def default_formulations(named: list[str]) -> list[str]:
  """The formulations to run: those named, else all but the kernels off TPUs (interpreted there,
  they would be timed at the interpreter's speed)."""
  if named or on_tpu():
    return named
  return [name for name in formulations('official') if not name.startswith('kernel')]


def forward_flops(batch: int, length: int, c_in: int, c_out: int) -> int:
  """The unfolded product [B*T, 3I] x [3I, O]; the similarity weighting is O(B*T*3I) besides."""
  return 2 * batch * length * affinity_lib.KERNEL_SIZE * c_in * c_out


def mode_flops(mode: str, batch: int, length: int, c_in: int, c_out: int) -> int:
  """The backward adds two products of the forward's size (gradients of input and kernel)."""
  return forward_flops(batch, length, c_in, c_out) * (1 if mode == 'forward' else 3)


def random_inputs(key: jax.Array, batch: int, length: int, c_in: int, c_out: int, dtype):
  """x, neighbour similarities of a random embedding, kernel at PyTorch's scale, and a cotangent."""
  keys = jax.random.split(key, 4)
  x_BxTxI = jax.random.normal(keys[0], (batch, length, c_in))
  embedding_BxTxE = jax.random.normal(keys[1], (batch, length, 32))
  similarity_BxTx3 = jax.vmap(affinity_lib.neighbour_similarity)(embedding_BxTxE)
  bound = 1.0 / np.sqrt(affinity_lib.KERNEL_SIZE * c_in)
  kernel_KxIxO = jax.random.uniform(keys[2], (affinity_lib.KERNEL_SIZE, c_in, c_out), minval=-bound,
                                    maxval=bound)
  cotangent_BxTxO = jax.random.normal(keys[3], (batch, length, c_out))
  return tuple(a.astype(dtype) for a in (x_BxTxI, similarity_BxTx3, kernel_KxIxO, cotangent_BxTxO))


def jitted(formulation: Formulation, mode: str, precision) -> Callable:
  """jit of the forward (x, s, W) -> out, or of the backward (x, s, W, g) -> (dx, ds, dW)."""
  def forward(x, s, w):
    return formulation(x, s, w, precision=precision)

  def forward_backward(x, s, w, cotangent):
    _, vjp = jax.vjp(forward, x, s, w)
    return vjp(cotangent)

  return jax.jit(forward if mode == 'forward' else forward_backward)


def relative_error(ours, reference) -> float:
  """Worst relative Frobenius error over the outputs (one array, or the three gradients)."""
  errors = [np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)) /
            max(np.linalg.norm(np.asarray(b, np.float64)), 1e-30)
            for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference))]
  return float(max(errors))


def naive_reference(affinity: str, mode: str, args: tuple):
  """The naive formulation in float32 at HIGHEST on the same (already cast) inputs, so that only a
  formulation's own rounding counts against it."""
  naive = formulations(affinity)['naive']
  return jitted(naive, mode, jax.lax.Precision.HIGHEST)(*(a.astype(jnp.float32) for a in args))


def warm_up(fn: Callable, args: tuple, warmup: int) -> None:
  """Compiles and runs `warmup` times, so the timed calls see neither compile nor first-run cost."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))


def call_seconds(fn: Callable, args: tuple) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def paired_ms(fn: Callable, args: tuple, dense_fn: Callable, dense_args: tuple, warmup: int,
              repeats: int) -> tuple[float, float, float]:
  """Median ms of fn, of the dense matmul, and median of their per-pair ratio dense / fn.

  The two are called alternately, so a neighbour's load on a shared machine slows both members of
  a pair alike and the ratio stays meaningful when the absolute times drift.
  """
  warm_up(fn, args, warmup)
  warm_up(dense_fn, dense_args, warmup)
  pairs = [(call_seconds(fn, args), call_seconds(dense_fn, dense_args)) for _ in range(repeats)]
  ours, dense = zip(*pairs)
  return (1e3 * statistics.median(ours), 1e3 * statistics.median(dense),
          statistics.median(d / o for o, d in pairs))


def dense_matmul(mode: str, precision) -> Callable:
  """The reference of equal FLOPs: [B*T, 3I] x [3I, O], and its vjp for forward+backward."""
  def forward(a, b):
    return jnp.dot(a, b, precision=precision)

  def forward_backward(a, b, cotangent):
    _, vjp = jax.vjp(forward, a, b)
    return vjp(cotangent)

  return jax.jit(forward if mode == 'forward' else forward_backward)


def dense_inputs(mode: str, precision_name: str, shape) -> tuple:
  dtype, _ = PRECISIONS[precision_name]
  batch, length, width = shape
  keys = jax.random.split(jax.random.key(0), 3)
  rows, depth = batch * length, affinity_lib.KERNEL_SIZE * width
  a = jax.random.normal(keys[0], (rows, depth), dtype)
  b = jax.random.normal(keys[1], (depth, width), dtype)
  return (a, b) if mode == 'forward' else (a, b, jax.random.normal(keys[2], (rows, width), dtype))


def resolve_shapes(names: list[str], width: int, batch_divisor: int):
  """'thumos14' -> ('thumos14', (B / divisor, T, width)); '2x9' -> ('2x9', (2, 9, width))."""
  shapes = []
  for name in names:
    if name in DATASET_SHAPES:
      batch, length = DATASET_SHAPES[name]
      batch = max(batch // batch_divisor, 1)
    else:
      batch, length = (int(n) for n in name.split('x'))
    shapes.append((name, (batch, length, width)))
  return shapes


def run_benchmark(shapes, affinity_names, modes, precision_names, formulation_names=None,
                  warmup: int = 2, repeats: int = 5, seed: int = 0,
                  formulations_of: Callable = formulations) -> list[dict]:
  """One row per (shape, mode, precision, affinity, formulation); rejected rows carry no time.

  Each formulation is checked on fresh random inputs (the run's seed) before it is timed on them;
  the checking call also compiles it.
  """
  rows = []
  for dataset, shape in shapes:
    batch, length, width = shape
    for mode in modes:
      flops = mode_flops(mode, batch, length, width, width)
      for precision_name in precision_names:
        dtype, precision = PRECISIONS[precision_name]
        dense_fn = dense_matmul(mode, precision)
        dense_args = dense_inputs(mode, precision_name, shape)
        inputs = random_inputs(jax.random.key(seed), batch, length, width, width, dtype)
        args = inputs if mode == 'forward_backward' else inputs[:3]
        for affinity in affinity_names:
          reference = naive_reference(affinity, mode, args)
          for name, formulation in formulations_of(affinity).items():
            if formulation_names and name not in formulation_names:
              continue
            fn = jitted(formulation, mode, precision)
            error = relative_error(fn(*args), reference)
            row = dict(dataset=dataset, batch=batch, length=length, width=width, mode=mode,
                       precision=precision_name, affinity=affinity, formulation=name,
                       relative_error=error, tolerance=TOLERANCE[precision_name],
                       correct=error <= TOLERANCE[precision_name], flops=flops, ms=None,
                       tflops=None, dense_ms=None, fraction_of_dense=None)
            if row['correct']:
              ms, dense_ms, fraction = paired_ms(fn, args, dense_fn, dense_args, warmup, repeats)
              row.update(ms=ms, tflops=flops / ms * 1e-9, dense_ms=dense_ms,
                         fraction_of_dense=fraction)
            else:
              logging.error('%s/%s rejected at %s %s: relative error %.2e > %.0e', affinity, name,
                            mode, precision_name, error, TOLERANCE[precision_name])
            logging.info('%s', format_row(row))
            rows.append(row)
  return rows


TPU_GENERATIONS = {'v5e': 'v5e:2x2', 'v4': 'v4:2x2x1', 'v5p': 'v5p:2x2x1', 'v6e': 'v6e:2x2'}
COUNTED = ('fast', 'convolution', 'kernel', 'kernel_16mib')  # --tpu_counts' default forms


def estimated_cycles(hlo_text: str) -> int:
  """The TPU compiler's own estimate, summed over the program's instructions. A Mosaic kernel
  carries none (the compiler does not look inside it), so a form with kernels is undercounted."""
  return sum(int(n) for n in re.findall(r'"estimated_cycles":"(\d+)"', hlo_text))


def count_one(fn: Callable, args: tuple, chip) -> dict:
  """One chip's program of fn(*args): tpu_compile's per-chip report, plus estimated cycles."""
  from benchmarks import tpu_compile  # pylint: disable=g-import-not-at-top (libtpu's users only)
  compiled = jax.jit(fn).lower(*args).compile()
  text = compiled.as_text()
  report = tpu_compile.per_chip_report(compiled, chip, text)
  return dict(gflop=report['tflop'] * 1e3, gb_accessed=report['gb_accessed'],
              estimated_cycles=estimated_cycles(text), has_kernel='tpu_custom_call' in text,
              compute_ms=report['compute_ms'], memory_ms=report['memory_ms'],
              roofline_ms=report['roofline_ms'])


def tpu_counts(shapes, affinity_names, modes, precision_names, formulation_names,
               generations) -> list[dict]:
  """Each form (and the dense matmul) compiled for one chip of each TPU generation, counted; on a
  one-chip mesh, as a run has, so that the kernel takes that generation's VMEM for its tiles."""
  from benchmarks import tpu_compile  # pylint: disable=g-import-not-at-top
  rows = []
  for generation in generations:
    device = tpu_compile.topology_devices(TPU_GENERATIONS[generation])[0]
    chip = tpu_compile.CHIPS[generation]
    mesh = sharding.make_mesh([device])
    rows += _counts_on(mesh, chip, generation, shapes, affinity_names, modes, precision_names,
                       formulation_names)
  return rows


def _counts_on(mesh, chip, generation, shapes, affinity_names, modes, precision_names,
               formulation_names) -> list[dict]:
  rows = []
  videos, whole = sharding.batch_sharding(mesh), sharding.replicated_sharding(mesh)
  with jax.set_mesh(mesh):
    for dataset, shape in shapes:
      batch, length, width = shape
      for mode in modes:
        for precision_name in precision_names:
          dtype, precision = PRECISIONS[precision_name]
          abstract = lambda *dims, where=videos: jax.ShapeDtypeStruct(dims, dtype, sharding=where)
          args = (abstract(batch, length, width), abstract(batch, length, 3),
                  abstract(affinity_lib.KERNEL_SIZE, width, width, where=whole),
                  abstract(batch, length, width))
          args = args if mode == 'forward_backward' else args[:3]
          depth = affinity_lib.KERNEL_SIZE * width
          dense_args = (abstract(batch * length, depth), abstract(depth, width, where=whole),
                        abstract(batch * length, width))
          dense_args = dense_args if mode == 'forward_backward' else dense_args[:2]
          base = dict(generation=generation, dataset=dataset, batch=batch, length=length,
                      width=width, mode=mode, precision=precision_name)
          rows.append(dict(base, affinity='-', formulation='dense', **count_one(
              dense_matmul(mode, precision), dense_args, chip)))
          for affinity in affinity_names:
            for name, formulation in formulations(affinity, interpret_kernel=False).items():
              if name in (formulation_names or COUNTED):
                counted = count_one(jitted(formulation, mode, precision), args, chip)
                rows.append(dict(base, affinity=affinity, formulation=name, **counted))
                logging.info('%s', format_count(rows[-1]))
  return rows


def format_count(row: dict) -> str:
  return '%-4s %-34s %-16s %-8s %-8s %-12s %8.1f %8.3f %12d %9.3f %s' % (
      row['generation'], '%s B=%d T=%d C=O=%d' % (row['dataset'], row['batch'], row['length'],
                                                  row['width']),
      row['mode'], row['precision'], row['affinity'], row['formulation'], row['gflop'],
      row['gb_accessed'], row['estimated_cycles'], row['roofline_ms'],
      'memory' if row['memory_ms'] >= row['compute_ms'] else 'compute')


def format_counts(rows: list[dict]) -> str:
  header = '%-4s %-34s %-16s %-8s %-8s %-12s %8s %8s %12s %9s %s' % (
      'chip', 'shape', 'mode', 'precision', 'affinity', 'formulation', 'GFLOP', 'GB', 'est. cycles',
      'roofline', 'bound')
  return '\n'.join([header] + [format_count(row) for row in rows])


def format_row(row: dict) -> str:
  shape = '%s B=%d T=%d C=O=%d' % (row['dataset'], row['batch'], row['length'], row['width'])
  if not row['correct']:
    timing = '%9s %8s %9s %7s' % ('REJECTED', '-', '-', '-')
  else:
    timing = '%9.3f %8.3f %9.3f %6.0f%%' % (row['ms'], row['tflops'], row['dense_ms'],
                                            100 * row['fraction_of_dense'])
  return '%-34s %-16s %-8s %-8s %-15s %s %8.1e' % (
      shape, row['mode'], row['precision'], row['affinity'], row['formulation'], timing,
      row['relative_error'])


def format_table(rows: list[dict]) -> str:
  header = '%-34s %-16s %-8s %-8s %-15s %9s %8s %9s %7s %8s' % (
      'shape', 'mode', 'precision', 'affinity', 'formulation', 'ms', 'TFLOP/s', 'dense ms',
      'of dense', 'rel err')
  return '\n'.join([header] + [format_row(row) for row in rows])


def environment() -> dict:
  """What the numbers were measured on."""
  device = jax.devices()[0]
  return dict(device=device.device_kind, platform=device.platform,
              device_count=jax.device_count(), processor=cpu_model(), jax_version=jax.__version__,
              python=platform.python_version(),
              date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))


def cpu_model() -> str:
  """The host CPU's model name (lscpu's), which jax's device_kind does not give on CPU."""
  try:
    with open('/proc/cpuinfo') as cpuinfo:
      for line in cpuinfo:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('shapes', ','.join(DATASET_SHAPES),
                      'comma-separated dataset names (%s) or BxT' % ', '.join(DATASET_SHAPES))
  flags.DEFINE_integer('width', 2048, 'I = O of the affinity convolution')
  flags.DEFINE_integer('batch_divisor', 1, 'divide the datasets\' B')
  flags.DEFINE_bool('small', False, 'CPU preset: --width=%d --batch_divisor=%d' % (
      SMALL_WIDTH, SMALL_BATCH_DIVISOR))
  flags.DEFINE_string('affinity', ','.join(affinity_lib.AFFINITIES),
                      'comma-separated affinity forms')
  flags.DEFINE_string('modes', ','.join(MODES), 'comma-separated modes')
  flags.DEFINE_string('precisions', ','.join(PRECISIONS), 'comma-separated precisions')
  flags.DEFINE_string('formulations', '', 'comma-separated names; empty: all')
  flags.DEFINE_integer('warmup', 2, 'untimed runs first')
  flags.DEFINE_integer('repeats', 5, 'timed runs; the median is reported')
  flags.DEFINE_integer('seed', 0, 'of the random inputs')
  flags.DEFINE_string('json_out', '', 'write environment and rows as JSON here')
  flags.DEFINE_bool('tpu_counts', False, 'with libtpu, on any machine: compile each form for one '
                    'chip of each of --generations and print the compiler\'s counts (no timing)')
  flags.DEFINE_string('generations', ','.join(TPU_GENERATIONS), 'TPU generations of --tpu_counts')


def with_small_preset(values: dict[str, Any]) -> dict[str, Any]:
  """--small: the CPU preset's width and batch divisor in place of the given ones."""
  if values['small']:
    values = dict(values, width=SMALL_WIDTH, batch_divisor=SMALL_BATCH_DIVISOR)
  return values


def arguments(command: types.ModuleType, argv: Sequence[str]) -> types.SimpleNamespace:
  """The command's flags (those its define_flags defined, in order), --small applied."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  values = {flag.name: flag.value for flag in FLAGS.get_flags_for_module(command)}
  return types.SimpleNamespace(**with_small_preset(values))


def main(argv: Sequence[str]) -> int:
  """Runs, prints the table, writes JSON; exit status 1 when a formulation was rejected."""
  args = arguments(sys.modules[__name__], argv)
  split = lambda s: [item for item in s.split(',') if item]
  shapes = resolve_shapes(split(args.shapes), args.width, args.batch_divisor)
  if args.tpu_counts:
    rows = tpu_counts(shapes, split(args.affinity), split(args.modes), split(args.precisions),
                      split(args.formulations), split(args.generations))
    print(format_counts(rows))
    if args.json_out:
      with open(args.json_out, 'w') as f:
        json.dump(dict(arguments=vars(args), counts=rows), f, indent=1)
    return 0
  rows = run_benchmark(shapes, split(args.affinity), split(args.modes), split(args.precisions),
                       default_formulations(split(args.formulations)), args.warmup, args.repeats,
                       args.seed)
  env = environment()
  print('# %s (%s), jax %s, %s; median of %d runs after %d warm-up' % (
      env['device'], env['processor'], env['jax_version'], env['date'], args.repeats, args.warmup))
  print(format_table(rows))
  if args.json_out:
    with open(args.json_out, 'w') as f:
      json.dump(dict(environment=env, arguments=vars(args), results=rows), f, indent=1)
  return 0 if all(row['correct'] for row in rows) else 1


if __name__ == '__main__':
  define_flags()
  app.run(main)
