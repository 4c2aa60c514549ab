"""The train step compiles for a TPU slice on this CPU, when libtpu is installed.

CI does not install libtpu (a ~700 MB wheel for a check that TPU users run themselves with
`launch/tpu_vm.sh preflight`); the test runs wherever `pip install 'jax[tpu]'` was done.
"""

import importlib.util

import pytest

from benchmarks import tpu_compile

pytestmark = pytest.mark.skipif(importlib.util.find_spec('libtpu') is None,
                                reason="libtpu is not installed (pip install 'jax[tpu]')")


def test_debug_step_compiles_for_a_v5e_slice_fits_and_uses_the_tpu_formulations():
  devices = tpu_compile.topology_devices('v5e:2x2')
  assert len(devices) == 4 and devices[0].platform == 'tpu'
  compiled = tpu_compile.compile_train_step(tpu_compile.dataset_config('debug', ()), devices)
  row = tpu_compile.per_chip_report(compiled, tpu_compile.CHIPS['v5e'])
  assert row['fits'] and 0 < row['hbm_fraction'] < 0.01
  assert row['tflop'] > 0 and row['gb_accessed'] > 0
  assert row['roofline_ms'] == max(row['compute_ms'], row['memory_ms'])
  affinity_convolutions = [line for line in compiled.as_text().splitlines()
                           if 'affinity_conv' in line and 'conv_general_dilated' in line]
  assert affinity_convolutions  # 'official' affinity lowered per platform: convolutions on TPUs
  merge_ops = [line.split('op_name="')[1].split('"')[0] for line in compiled.as_text().splitlines()
               if 'base_module/' in line and 'op_name="' in line]
  assert any('/concatenate' in name for name in merge_ops)  # passes merged per device block
  assert not any('/stack' in name for name in merge_ops)  # not per video


def test_accelerator_types_name_known_slices():
  for accelerator, topology in tpu_compile.ACCELERATOR_TOPOLOGIES.items():
    chips = 1
    for size in topology.split(':')[1].split('x'):
      chips *= int(size)
    generation = topology.split(':')[0]
    assert accelerator.startswith(generation.replace('v5e', 'v5litepod')), accelerator
    per_chip = 2 if generation in ('v4', 'v5p') else 1  # TensorCores in the v4/v5p type names
    assert int(accelerator.split('-')[1]) == chips * per_chip, accelerator
