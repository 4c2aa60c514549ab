"""The train step compiles for a TPU slice on this CPU, when libtpu is installed.

CI does not install libtpu (a ~700 MB wheel for a check that TPU users run themselves with
`launch/tpu_vm.sh preflight`); the test runs wherever `pip install 'jax[tpu]'` was done.
"""

import importlib.util

import jax
import pytest

from backtal_jax.core import sharding
from backtal_jax.model import affinity_pallas
from benchmarks import tpu_compile

pytestmark = pytest.mark.skipif(importlib.util.find_spec('libtpu') is None,
                                reason="libtpu is not installed (pip install 'jax[tpu]')")


def test_debug_step_compiles_for_a_v5e_slice_fits_and_uses_the_tpu_formulations():
  devices = tpu_compile.topology_devices('v5e:2x2')
  assert len(devices) == 4 and devices[0].platform == 'tpu'
  compiled = tpu_compile.compile_train_step(tpu_compile.dataset_config('debug', ()), devices)
  text = compiled.as_text()
  row = tpu_compile.per_chip_report(compiled, tpu_compile.CHIPS['v5e'], text)
  assert row['fits'] and 0 < row['hbm_fraction'] < 0.01
  assert row['tflop'] > 0 and row['gb_accessed'] > 0
  assert row['roofline_ms'] == max(row['compute_ms'], row['memory_ms'])
  hlo = text.splitlines()
  kernels = [line.split(' = ')[0].strip().lstrip('%').split('.')[0] for line in hlo
             if 'custom_call_target="tpu_custom_call"' in line]
  # Both affinity convolutions through the fused kernels ('auto' on TPUs): forward, dx with ds, dW.
  assert sorted(kernels) == sorted(['affinity_forward', 'affinity_input_grad',
                                    'affinity_kernel_grad'] * 2)
  # Their products are inside the kernels: no convolution or product of the base module is left
  # in the program to write a [B, T, O] group output to memory.
  base_products = [line for line in hlo if 'base_module/' in line and
                   (' convolution(' in line or ' dot(' in line or 'kind=kOutput' in line)]
  assert not base_products, base_products[:3]
  merge_ops = [line.split('op_name="')[1].split('"')[0] for line in hlo
               if 'base_module/' in line and 'op_name="' in line]
  assert any('/concatenate' in name for name in merge_ops)  # passes merged per device block
  assert not any('/stack' in name for name in merge_ops)  # not per video


def test_the_kernels_weight_gradients_are_reduce_scattered_into_the_update_shares():
  """THUMOS14's step on v5e:2x2 in bfloat16: each affinity kernel's float32 weight gradient is
  summed into the chips' quarters of Adam's update by one reduce-scatter; no whole one is
  all-reduced. (At the debug config's widths the compiler all-reduces such small arrays.)"""
  config = tpu_compile.dataset_config('thumos14', ['model.dtype=bfloat16'])
  hlo = tpu_compile.compile_train_step(config, tpu_compile.topology_devices('v5e:2x2')).as_text()
  h = config.model.hidden_dim
  scattered = [line for line in hlo.splitlines() if ' reduce-scatter(' in line]
  assert len(scattered) == 2 and all(f'f32[3,{h // 4},{h}]' in line for line in scattered)
  assert not [line for line in hlo.splitlines()
              if ' all-reduce(' in line and f'f32[3,{h},{h}]' in line]


def test_forcing_xla_on_tpus_gives_the_group_convolutions():
  config = tpu_compile.dataset_config('debug', ['model.affinity_kernel=xla'])
  compiled = tpu_compile.compile_train_step(config, tpu_compile.topology_devices('v5e:2x2'))
  hlo = compiled.as_text()
  assert 'tpu_custom_call' not in hlo
  assert any('affinity_conv' in line and 'conv_general_dilated' in line
             for line in hlo.splitlines())  # 'official' as per-group convolutions on TPUs


def test_accelerator_types_name_known_slices():
  for accelerator, topology in tpu_compile.ACCELERATOR_TOPOLOGIES.items():
    chips = 1
    for size in topology.split(':')[1].split('x'):
      chips *= int(size)
    generation = topology.split(':')[0]
    assert accelerator.startswith(generation.replace('v5e', 'v5litepod')), accelerator
    per_chip = 2 if generation in ('v4', 'v5p') else 1  # TensorCores in the v4/v5p type names
    assert int(accelerator.split('-')[1]) == chips * per_chip, accelerator


# Each generation's VMEM in whole MiB, as its compiler reports it when a kernel asks for more.
VMEM_MIB = {'v4:2x2x1': 16, 'v5e:2x2': 128, 'v5p:2x2x1': 63, 'v6e:2x2': 127}


@pytest.mark.parametrize('topology', sorted(VMEM_MIB))
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_the_kernels_tiles_fit_the_vmem_of_each_generation(topology, dtype):
  """THUMOS14's per-chip shape through the kernels and their gradients, on a one-chip mesh of the
  generation: the tiles geometries() picks for its VMEM limit (the chip's whole VMEM) compile, and
  the kernels' cost estimates are their tiles' traffic."""
  device = tpu_compile.topology_devices(topology)[0]
  mesh = sharding.make_mesh([device])
  limit = affinity_pallas.vmem_limit(device.device_kind)
  assert limit == VMEM_MIB[topology] * 2**20
  with jax.set_mesh(mesh):
    videos, whole = sharding.batch_sharding(mesh), sharding.replicated_sharding(mesh)
    array = lambda *shape, where=videos: jax.ShapeDtypeStruct(shape, dtype, sharding=where)

    def output_and_grads(x, s, w, g):
      out, vjp = jax.vjp(affinity_pallas.fused_affinity_conv, x, s, w)
      return out, vjp(g)

    compiled = jax.jit(output_and_grads).lower(
        array(8, 750, 2048), array(8, 750, 3), array(3, 2048, 2048, where=whole),
        array(8, 750, 2048)).compile()
  geos = affinity_pallas.shard_geometries(
      jax.ShapeDtypeStruct((8, 750, 2048), dtype), jax.ShapeDtypeStruct((3, 2048, 2048), dtype),
      affinity='official', precision=None, interpret=False, limit=limit)
  hlo = compiled.as_text()
  for plan in affinity_pallas.plans(geos):
    assert f'"bytes_accessed":"{plan.moved_bytes()}"' in hlo
    assert plan.vmem_bytes() <= limit
