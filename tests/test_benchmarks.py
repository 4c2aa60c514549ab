"""The affinity-kernel benchmark's code path at a tiny shape: no timing is asserted, only that it
runs end to end, writes its JSON, and refuses to time a formulation that disagrees with the naive
one."""

import json
import pathlib
import subprocess
import sys

import jax.numpy as jnp

from backtal_jax.model import affinity as affinity_lib
from benchmarks import affinity_kernel
from benchmarks import hlo_breakdown

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_main_runs_at_a_tiny_shape_and_writes_json(tmp_path):
  out = tmp_path / 'affinity_lib.json'
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.affinity_kernel', '--shapes=2x9', '--width=7',
       '--affinity=official', '--precisions=highest,bfloat16', '--formulations=naive,fast',
       '--warmup=1', '--repeats=1', '--json_out=%s' % out],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  written = json.loads(out.read_text())
  assert written['environment']['jax_version']
  rows = written['results']
  assert {(r['mode'], r['precision'], r['formulation']) for r in rows} == {
      (mode, precision, name) for mode in affinity_kernel.MODES
      for precision in ('highest', 'bfloat16') for name in ('naive', 'fast')}
  assert all(r['correct'] and r['ms'] > 0 and r['fraction_of_dense'] > 0 for r in rows)


def test_the_kernel_row_is_checked_and_timed_when_named_and_left_out_on_cpus_otherwise():
  """Off TPUs the kernel runs interpreted: named, its row is checked like any form (here both
  gradients' paths, with a batch of short videos); unnamed, it is not run at all."""
  rows = affinity_kernel.run_benchmark(
      [('tiny', (3, 5, 6))], ['paper'], ['forward_backward'], ['highest'],
      ['kernel', 'kernel_16mib'], warmup=1, repeats=1)
  assert [row['formulation'] for row in rows] == ['kernel', 'kernel_16mib']
  for row in rows:
    assert row['correct'] and row['ms'] > 0
    assert row['relative_error'] <= affinity_kernel.TOLERANCE['highest']
  assert affinity_kernel.default_formulations(['kernel']) == ['kernel']
  assert not {'kernel', 'kernel_16mib'} & set(affinity_kernel.default_formulations([]))
  assert 'convolution' in affinity_kernel.default_formulations([])


def test_estimated_cycles_sums_the_instructions_estimates():
  hlo = ('%a = f32[2] add(...), backend_config={"estimated_cycles":"120"}\n'
         '%k = f32[2] custom-call(...), custom_call_target="tpu_custom_call"\n'
         '%b = f32[2] fusion(...), backend_config={"x":1,"estimated_cycles":"7"}')
  assert affinity_kernel.estimated_cycles(hlo) == 127


def with_wrong_formulation(affinity):
  """The real formulations plus 'paper' affinity passed off as 'official' (a plausible bug)."""
  found = dict(affinity_kernel.formulations(affinity))
  found['wrong'] = lambda x, s, k, precision: affinity_lib.affinity_conv(x, s, k, affinity='paper')
  return found


def test_a_wrong_formulation_is_rejected_and_not_timed():
  rows = affinity_kernel.run_benchmark(
      [('tiny', (2, 9, 6))], ['official'], ['forward'], ['highest'], ['fast', 'wrong'],
      warmup=1, repeats=1, formulations_of=with_wrong_formulation)
  by_name = {row['formulation']: row for row in rows}
  assert by_name['fast']['correct'] and by_name['fast']['ms'] is not None
  assert not by_name['wrong']['correct']
  assert by_name['wrong']['ms'] is None and by_name['wrong']['relative_error'] > 1e-2
  assert 'REJECTED' in affinity_kernel.format_table(rows)


def test_flops_count_the_unfolded_product_and_three_for_the_backward():
  assert affinity_kernel.forward_flops(16, 750, 2048, 2048) == 2 * 16 * 750 * 3 * 2048 * 2048
  assert affinity_kernel.mode_flops('forward_backward', 1, 2, 3, 4) == 3 * 2 * 1 * 2 * 9 * 4


def test_tap_group_ranges_cover_each_tap_once_in_official_groups():
  for channels in (1, 4, 5, 9):
    for tap in range(affinity_lib.KERNEL_SIZE):
      ranges = affinity_kernel.tap_group_ranges(channels, tap)
      assert [first for _, first, _ in ranges][0] == 0 and ranges[-1][2] == channels
      assert all(a[2] == b[1] for a, b in zip(ranges, ranges[1:]))
      for g, first, end in ranges:
        assert all((3 * c + tap) // channels == g for c in range(first, end))


def test_small_preset_and_explicit_shapes():
  args = affinity_kernel.with_small_preset({'small': True, 'width': 2048, 'batch_divisor': 1})
  shapes = dict(affinity_kernel.resolve_shapes(['thumos14', '3x5'], args['width'],
                                               args['batch_divisor']))
  assert shapes == {'thumos14': (4, 750, 256), '3x5': (3, 5, 256)}
  assert jnp.dtype(affinity_kernel.PRECISIONS['bfloat16'][0]) == jnp.bfloat16


HLO = '\n'.join([
    'HloModule step',
    '',
    'ENTRY %main (p.1: f32[4,8], p.2: bf16[2,128]) -> f32[4,8] {',
    '  %p.1 = f32[4,8]{1,0} parameter(0)',
    '  %p.2 = bf16[2,128]{1,0:T(8,128)(2,1)} parameter(1)',
    '  %copy-start.1 = (f32[4,8]{1,0}, f32[4,8]{1,0:S(1)}, u32[]{:S(2)}) copy-start(%p.1)',
    '  %copy-done.1 = f32[4,8]{1,0:S(1)} copy-done(%copy-start.1)',
    '  %slice-start.1 = ((bf16[2,128]{1,0}), bf16[1,128]{1,0:S(1)}, s32[]{:S(2)}) '
    'slice-start(%p.2), slice={[0:1], [0:128]}',
    '  %slice-done.1 = bf16[1,128]{1,0:S(1)} slice-done(%slice-start.1)',
    '  %custom-call.1 = bf16[1,128]{1,0:S(1)} custom-call(%slice-done.1), '
    'custom_call_target="ConcatBitcast"',
    '  %fusion.1 = f32[4,8]{1,0} fusion(%copy-done.1, %p.1), kind=kLoop, calls=%f, '
    'metadata={op_name="jit(step)/jvp(Net)/add"}, backend_config={"estimated_cycles":"70"}',
    '  %kernel.1 = f32[4,8]{1,0} custom-call(%fusion.1), custom_call_target="tpu_custom_call", '
    'backend_config={"cost_estimate":{"flops":"1","bytes_accessed":"1000"}}',
    '  ROOT %tuple.1 = (f32[4,8]{1,0}) tuple(%kernel.1)',
    '}',
])


def test_hlo_breakdown_counts_each_memory_as_the_compiler_does():
  """Bytes per instruction of the entry computation: an asynchronous copy reads its source's
  memory and writes its destination's, a slice moves only its part, a fusion reads its operands
  and writes its result, a Pallas kernel counts its own estimate; names, tuples and a view of
  slices laid side by side (ConcatBitcast) move nothing."""
  found = {i.name: i for i in hlo_breakdown.parse(HLO)}
  assert set(found) == {'copy-start.1', 'slice-start.1', 'fusion.1', 'kernel.1'}
  assert (found['copy-start.1'].hbm_bytes, found['copy-start.1'].alternate_bytes) == (128, 128)
  assert (found['slice-start.1'].hbm_bytes, found['slice-start.1'].alternate_bytes) == (256, 256)
  assert (found['fusion.1'].hbm_bytes, found['fusion.1'].alternate_bytes) == (256, 128)
  assert found['fusion.1'].cycles == 70 and found['fusion.1'].source == 'jvp(Net)/add'
  assert (found['kernel.1'].hbm_bytes, found['kernel.1'].alternate_bytes) == (1000, 0)
  [(source, sums)] = [row for row in hlo_breakdown.by_source(list(found.values()), 2)
                      if row[0] == 'jvp(Net)/add']
  assert sums['hbm'] == 256 and sums['count'] == 1
