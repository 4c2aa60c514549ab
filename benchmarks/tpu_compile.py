"""The TPU compiler's own count of the train step, without a TPU (issue: accelerator speed, item 4).

With libtpu installed (`pip install 'jax[tpu]'`, no TPU needed) the TPU compiler runs on this CPU:
`jax.experimental.topologies.get_topology_desc` describes a slice, and the whole train step
(forward, loss, backward and the Adam update, `train.jit_train_step`) is lowered and compiled on a
mesh over the slice's chips, sharded exactly as a run on that slice would shard it. The compiled
program then tells, per chip: FLOPs and bytes accessed (`cost_analysis`), HBM use
(`memory_analysis`: arguments + temporaries + outputs, against the chip's capacity), and the
roofline estimate max(FLOPs / peak, bytes / bandwidth) from the published figures below.

  python -m benchmarks.tpu_compile --topologies=v5e:2x2,v4:2x2x1 --datasets=thumos14 \
      --json_out=/tmp/tpu.json [--set=model.dtype=bfloat16]

`launch/tpu_vm.sh preflight --accelerator-type=v5litepod-8` runs it for one slice, so that a user
learns the program compiles and fits before paying for the slice.
"""

import dataclasses
import functools
import json
import os
import pathlib
import time
from typing import Sequence

from absl import app
from absl import flags
import jax
import ml_collections

from backtal_jax.core import sharding
from backtal_jax.reporting import logs
from backtal_jax.run import optimizer
from backtal_jax.run import train
from backtal_jax.run import train_state
from benchmarks import hlo_breakdown
from benchmarks import supervision_study
from configs import activitynet12
from configs import hacs
from configs import thumos


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip figures: peak dense bfloat16 FLOP/s, HBM bandwidth and capacity."""
  peak_flops: float  # FLOP/s, bfloat16 (the TPU's default precision for float32 matmuls)
  hbm_bandwidth: float  # bytes/s
  hbm_bytes: float  # capacity in bytes


# Cloud TPU documentation, "TPU versions" (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e),
# per chip: v4 275 TFLOP/s, 1228 GB/s, 32 GiB; v5e 197 TFLOP/s, 819 GB/s, 16 GiB;
# v5p 459 TFLOP/s, 2765 GB/s, 95 GiB; v6e (Trillium) 918 TFLOP/s, 1640 GB/s, 32 GiB.
CHIPS = {
    'v4': Chip(275e12, 1228e9, 32 * 2**30),
    'v5e': Chip(197e12, 819e9, 16 * 2**30),
    'v5p': Chip(459e12, 2765e9, 95 * 2**30),
    'v6e': Chip(918e12, 1640e9, 32 * 2**30),
}

# Cloud accelerator types (as `gcloud ... --accelerator-type` spells them) -> topology names.
ACCELERATOR_TOPOLOGIES = {
    'v4-8': 'v4:2x2x1', 'v4-16': 'v4:2x2x2', 'v4-32': 'v4:2x2x4',
    'v5litepod-4': 'v5e:2x2', 'v5litepod-8': 'v5e:2x4',
    'v5litepod-16': 'v5e:4x4',
    'v5p-8': 'v5p:2x2x1', 'v5p-16': 'v5p:2x2x2', 'v5p-32': 'v5p:2x2x4',
    'v6e-4': 'v6e:2x2', 'v6e-8': 'v6e:2x4', 'v6e-16': 'v6e:4x4',
}

DATASETS = {
    'thumos14': thumos.get_config,
    'activitynet12': activitynet12.get_config,
    'hacs': hacs.get_config,
    'debug': functools.partial(thumos.get_config, 'debug'),
}


def topology_devices(topology: str) -> list:
  """The chips of a slice, one JAX device per chip (v4 and v5p as megacore, as on a TPU VM).

  Compiling touches no chip, so several compiling processes may load libtpu at once (libtpu
  otherwise takes a machine-wide lock).
  """
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  two_cores = topology.split(':')[0] in ('v4', 'v5p')
  options = {'chip_config_name': 'megacore'} if two_cores else {}
  return topologies.get_topology_desc(topology_name=topology, platform='tpu', **options).devices


def abstract_inputs(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """Shape-and-sharding stand-ins for the train state and one global batch."""
  model = train_state.make_model(config)
  tx = optimizer.official_adam(config.train)
  state = jax.eval_shape(functools.partial(train_state.create_train_state, config, model, tx, mesh))
  state = jax.tree.map(lambda x, where: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=where),
                       state, train_state.state_shardings(state, mesh))
  data = sharding.batch_sharding(mesh)
  b, t, c = config.train.batch_size, config.data.num_segments, config.model.num_classes
  batch = {
      'features': jax.ShapeDtypeStruct((b, t, config.model.feat_dim), 'float32', sharding=data),
      'video_labels': jax.ShapeDtypeStruct((b, c), 'float32', sharding=data),
      'click_labels': jax.ShapeDtypeStruct((b, t), 'int32', sharding=data),
      'mask': jax.ShapeDtypeStruct((b,), 'float32', sharding=data),
  }
  return model, tx, state, batch


def compile_train_step(config: ml_collections.ConfigDict, devices: Sequence) -> jax.stages.Compiled:
  """The whole train step, compiled for `devices` with the shardings a real run uses."""
  mesh = sharding.make_mesh(devices)
  with jax.set_mesh(mesh):
    model, tx, state, batch = abstract_inputs(config, mesh)
    step = train.jit_train_step(model, tx, config, mesh, state)
    return step.lower(state, batch).compile()


def per_chip_report(compiled: jax.stages.Compiled, chip: Chip, text: str) -> dict:
  """FLOPs, bytes, HBM and the roofline of one chip's program (SPMD: every chip runs the same);
  `text`: its compiled.as_text(), which the callers print once (it takes seconds)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  memory = compiled.memory_analysis()
  flops, accessed = float(cost['flops']), float(cost['bytes accessed'])
  instructions = hlo_breakdown.parse(text)
  in_hbm = sum(i.hbm_bytes for i in instructions)
  hbm = (memory.argument_size_in_bytes + memory.temp_size_in_bytes +
         memory.output_size_in_bytes - memory.alias_size_in_bytes)
  return {
      'tflop': flops / 1e12,
      'gb_accessed': accessed / 1e9,
      'hbm_mib': {'arguments': memory.argument_size_in_bytes / 2**20,
                  'temporaries': memory.temp_size_in_bytes / 2**20,
                  'outputs': memory.output_size_in_bytes / 2**20,
                  'aliased': memory.alias_size_in_bytes / 2**20,
                  'total': hbm / 2**20},
      'hbm_fraction': hbm / chip.hbm_bytes,
      'fits': hbm <= chip.hbm_bytes,
      'compute_ms': flops / chip.peak_flops * 1e3,
      'memory_ms': accessed / chip.hbm_bandwidth * 1e3,
      'roofline_ms': max(flops / chip.peak_flops, accessed / chip.hbm_bandwidth) * 1e3,
      # The compiler's count adds up every memory; read from the program, HBM's share alone
      # (the kernels' at their tiles' traffic) sets a memory-bound step's time.
      'gb_hbm': in_hbm / 1e9,
      'gb_on_chip': sum(i.alternate_bytes for i in instructions) / 1e9,
      'hbm_roofline_ms': max(flops / chip.peak_flops, in_hbm / chip.hbm_bandwidth) * 1e3,
  }


def dataset_config(dataset: str, overrides: Sequence[str]) -> ml_collections.ConfigDict:
  if dataset not in DATASETS:
    raise ValueError(f'--datasets: unknown dataset {dataset!r}, expected one of {list(DATASETS)}')
  config = DATASETS[dataset]()
  for item in overrides:
    supervision_study.apply_override(config, item)
  return config


def measure(topology: str, dataset: str, overrides: Sequence[str] = (), hlo_dir: str = '') -> dict:
  """One row of the table: the compiled step of `dataset` on the slice `topology`."""
  generation = topology.split(':')[0]
  if generation not in CHIPS:
    raise ValueError(f'topology {topology!r}: expected a name like v5e:2x2 with one of '
                     f'{list(CHIPS)}')
  config = dataset_config(dataset, overrides)
  devices = topology_devices(topology)
  sharding.check_global_batch_size(config.train.batch_size, len(devices))
  if hlo_dir:  # made (or refused) before a compile of minutes, not after it
    pathlib.Path(hlo_dir).mkdir(parents=True, exist_ok=True)
  started = time.monotonic()
  compiled = compile_train_step(config, devices)
  compile_s = time.monotonic() - started
  text = compiled.as_text()
  if hlo_dir:
    name = '_'.join([topology.replace(':', '_'), dataset, *overrides]).replace('=', '-')
    (pathlib.Path(hlo_dir) / f'{name}.txt').write_text(text)
  return {
      'topology': topology, 'dataset': dataset, 'overrides': list(overrides),
      'chips': len(devices), 'hosts': len({d.process_index for d in devices}),
      'batch': config.train.batch_size, 'segments': config.data.num_segments,
      'width': config.model.feat_dim, 'compile_s': compile_s,
      **per_chip_report(compiled, CHIPS[generation], text),
  }


def markdown(rows: Sequence[dict]) -> str:
  lines = ['| slice | chips (hosts) | dataset B x T | overrides | TFLOP | GB accessed | GB in HBM '
           '(on chip) | HBM MiB (args + temps + outs) | of HBM | compute ms | memory ms | roofline '
           'ms | roofline ms by HBM bytes |',
           '|' + ' --- |' * 13]
  for r in rows:
    hbm = r['hbm_mib']
    lines.append(
        f"| {r['topology']} | {r['chips']} ({r['hosts']}) | {r['dataset']} {r['batch']} x "
        f"{r['segments']} | {' '.join(r['overrides']) or '-'} | {r['tflop']:.3f} | "
        f"{r['gb_accessed']:.2f} | {r['gb_hbm']:.2f} ({r['gb_on_chip']:.2f}) | "
        f"{hbm['total']:.0f} ({hbm['arguments']:.0f} + "
        f"{hbm['temporaries']:.0f} + {hbm['outputs']:.0f} - {hbm['aliased']:.0f} aliased) | "
        f"{r['hbm_fraction']:.1%} | {r['compute_ms']:.2f} | {r['memory_ms']:.2f} | "
        f"{r['roofline_ms']:.2f} | {r['hbm_roofline_ms']:.2f} |")
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_list('topologies', ['v5e:2x2', 'v4:2x2x1'], 'TPU slices, as topology names.')
  flags.DEFINE_string('accelerator_type', '',
                      f'A Cloud accelerator type instead ({", ".join(ACCELERATOR_TOPOLOGIES)}).')
  flags.DEFINE_list('datasets', ['thumos14', 'activitynet12', 'hacs'],
                    f'Official shapes to compile ({", ".join(DATASETS)}).')
  flags.DEFINE_list('set', [], 'Config overrides, key=value (e.g. model.dtype=bfloat16).')
  flags.DEFINE_string('json_out', '', 'Append the rows to this JSON file.')
  flags.DEFINE_string('hlo_dir', '', 'Write each optimized program here too (for '
                      'benchmarks/hlo_breakdown.py).')


def main(argv):
  del argv
  logs.quiet_library_logs()
  topologies_ = FLAGS.topologies
  if FLAGS.accelerator_type:
    if FLAGS.accelerator_type not in ACCELERATOR_TOPOLOGIES:
      raise app.UsageError(f'--accelerator_type={FLAGS.accelerator_type!r}: expected one of '
                           f'{", ".join(ACCELERATOR_TOPOLOGIES)}')
    topologies_ = [ACCELERATOR_TOPOLOGIES[FLAGS.accelerator_type]]
  rows = []
  for topology in topologies_:
    for dataset in FLAGS.datasets:
      rows.append(measure(topology, dataset, FLAGS.set, FLAGS.hlo_dir))
      print(markdown(rows[-1:]).splitlines()[-1], f"(compiled in {rows[-1]['compile_s']:.0f} s)",
            flush=True)
      if FLAGS.json_out:
        path = pathlib.Path(FLAGS.json_out)
        previous = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(previous + rows[-1:], indent=1) + '\n')
  print(markdown(rows))
  if not all(r['fits'] for r in rows):
    raise SystemExit('Some programs do not fit in the chip\'s HBM (see "of HBM").')


if __name__ == '__main__':
  define_flags()
  app.run(main)
