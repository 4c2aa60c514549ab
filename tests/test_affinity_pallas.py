"""The fused Pallas affinity kernels, run in TPU interpret mode on the CPU, against the naive
definitions; the implementation each platform gets; a debug training through the kernel."""

import functools
import itertools

import hypothesis
from hypothesis import strategies as st
import jax
from jax.experimental import pallas as pl
import jax.numpy as jnp
import numpy as np
import pytest

from backtal_jax.core import sharding
from backtal_jax.data import pipeline
from backtal_jax.model import affinity as affinity_lib
from backtal_jax.model import affinity_pallas
from backtal_jax.model import affinity_select
from backtal_jax.model import network
from backtal_jax.run import train
from backtal_jax.run import train_state
from configs import thumos
from tests import test_parity

# Relative Frobenius error against the naive form in float32 at HIGHEST precision on the same
# (already rounded) inputs; bfloat16 at the tolerance of the bfloat16 model test.
TOLERANCE = {'float32': 1e-5, 'bfloat16': test_parity.BFLOAT16_OUTPUT_TOLERANCE}


def random_inputs(batch, length, c_in, c_out, dtype):
  """x, similarities (neighbour similarities plus noise, so no group's scale is special), the
  kernel at PyTorch's scale, and a cotangent; rounded to `dtype`."""
  keys = jax.random.split(jax.random.key(batch * 1000 + length + c_in), 5)
  x = jax.random.normal(keys[0], (batch, length, c_in))
  embedding = jax.random.normal(keys[1], (batch, length, 8))
  similarity = jax.vmap(affinity_lib.neighbour_similarity)(embedding)
  similarity = similarity + 0.3 * jax.random.normal(keys[2], similarity.shape)
  bound = 1 / np.sqrt(3 * c_in)
  kernel = jax.random.uniform(keys[3], (3, c_in, c_out), minval=-bound, maxval=bound)
  cotangent = jax.random.normal(keys[4], (batch, length, c_out))
  return [a.astype(dtype) for a in (x, similarity, kernel, cotangent)]


def output_and_grads(conv, x, similarity, kernel, cotangent):
  out, vjp = jax.vjp(conv, x, similarity, kernel)
  return (out, *vjp(cotangent))


def relative_errors(ours, reference):
  f64 = lambda a: np.asarray(a, np.float64)
  return [float(np.linalg.norm(f64(a) - f64(b)) / np.linalg.norm(f64(b)))
          for a, b in zip(ours, reference)]


# (affinity, dtype, B, T, I, O): T over one and several frame tiles (750 with halos, see
# TILINGS), widths that are and are not multiples of 3 and of 128, several channel tiles
# (384 = 3 x 128), batch 1 and 5 (five videos of T = 17 or 1 side by side in one block).
CASES = [
    ('official', 'float32', 1, 750, 128, 136),
    ('paper', 'float32', 5, 100, 12, 7),
    ('official', 'bfloat16', 5, 200, 384, 10),
    ('official', 'float32', 5, 17, 10, 5),
    ('paper', 'bfloat16', 1, 1, 5, 4),
]


# 'searched': the tiles geometries() picks (whole short videos side by side, one frame tile of
# T = 750 at these widths); 'small': the smallest it may pick, so that T = 750 spans three frame
# tiles (halos) and 384 channels three channel tiles.
TILINGS = {'searched': {}, 'small': {'ROW_TILES': (256,), 'CHANNEL_TILES': (128,)}}


@pytest.mark.parametrize('tiling', sorted(TILINGS))
@pytest.mark.parametrize('affinity,dtype,batch,length,c_in,c_out', CASES)
def test_kernel_and_its_three_gradients_match_the_naive_form(affinity, dtype, batch, length,
                                                             c_in, c_out, tiling, monkeypatch):
  for name, value in TILINGS[tiling].items():
    monkeypatch.setattr(affinity_pallas, name, value)
  inputs = random_inputs(batch, length, c_in, c_out, dtype)
  kernel = lambda x, s, w: affinity_pallas.fused_affinity_conv(x, s, w, affinity=affinity,
                                                               interpret=True)
  ours = jax.jit(lambda *a: output_and_grads(kernel, *a))(*inputs)
  reference = output_and_grads(affinity_lib.NAIVE[affinity],
                               *(a.astype(jnp.float32) for a in inputs))
  assert [a.dtype for a in ours] == [jnp.dtype(dtype)] * 4
  errors = relative_errors(ours, reference)
  assert max(errors) <= TOLERANCE[dtype], dict(zip(['out', 'dx', 'ds', 'dW'], errors))


@pytest.mark.parametrize('tiling', sorted(TILINGS))
@pytest.mark.parametrize('affinity,dtype,batch,length,c_in,c_out', [CASES[0], CASES[2]])
def test_leaky_relu_in_the_kernel_is_leaky_relu_after_it(affinity, dtype, batch, length, c_in,
                                                         c_out, tiling, monkeypatch):
  """The activation the forward kernel applies before writing, and its gradient taken from the
  output's sign, against jax.nn.leaky_relu after the kernel: the same output and gradients (in
  float32 bit for bit; in bfloat16 within one rounding, the kernel rounding once, not twice)."""
  for name, value in TILINGS[tiling].items():
    monkeypatch.setattr(affinity_pallas, name, value)
  inputs = random_inputs(batch, length, c_in, c_out, dtype)
  conv = functools.partial(affinity_pallas.fused_affinity_conv, affinity=affinity,
                           interpret=True)
  fused = lambda x, s, w: conv(x, s, w, negative_slope=network.NEGATIVE_SLOPE)
  after = lambda x, s, w: jax.nn.leaky_relu(conv(x, s, w), network.NEGATIVE_SLOPE)
  ours, composed = (jax.jit(lambda *a, f=f: output_and_grads(f, *a))(*inputs)
                    for f in (fused, after))
  assert float(jnp.mean(ours[0] < 0)) > 0.3  # both slopes of the activation are exercised
  if dtype == 'float32':
    for a, b in zip(ours, composed):
      np.testing.assert_array_equal(a, b)
  else:
    assert max(relative_errors(ours, composed)) <= 2 ** -8


@pytest.mark.parametrize('affinity,dtype,batch,length,c_in,c_out',
                         [case for case in CASES if case[1] == 'float32'])
def test_float32_with_narrowed_weights_and_cotangent(affinity, dtype, batch, length, c_in, c_out,
                                                     monkeypatch):
  """The path a TPU takes in float32 (see affinity_pallas.narrows): the kernel and the cotangent
  read in bfloat16 and the scaled taps rounded to bfloat16 in VMEM, as the MXU rounds them. Here,
  where the CPU would multiply in float32, narrowing is forced, and the result is held against the
  naive form of the same rounded kernel and cotangent. dx and ds (products of the two narrowed
  operands alone) agree at the float32 tolerance; the output and dW keep the taps' rounding, 2^-9
  of each product at most, so their error stays under 2^-8 (a tap or halo out of place would be
  tens of percent)."""
  monkeypatch.setattr(affinity_pallas, 'narrows', lambda dtype, kernel_dtype, *_: True)
  x, similarity, kernel, cotangent = random_inputs(batch, length, c_in, c_out, dtype)
  conv = lambda x, s, w: affinity_pallas.fused_affinity_conv(x, s, w, affinity=affinity,
                                                             interpret=True)
  jaxpr = str(jax.make_jaxpr(conv)(x, similarity, kernel))
  assert f'bf16[3,{c_in},{c_out}]' in jaxpr  # the kernels read the weights narrowed
  ours = jax.jit(lambda *a: output_and_grads(conv, *a))(x, similarity, kernel, cotangent)
  rounded = lambda a: a.astype(jnp.bfloat16).astype(jnp.float32)
  reference = output_and_grads(affinity_lib.NAIVE[affinity], x, similarity, rounded(kernel),
                               rounded(cotangent))
  assert [a.dtype for a in ours] == [jnp.dtype(dtype)] * 4
  errors = dict(zip(['out', 'dx', 'ds', 'dW'], relative_errors(ours, reference)))
  assert max(errors['dx'], errors['ds']) <= TOLERANCE['float32'], errors
  assert max(errors['out'], errors['dW']) <= 2 ** -8, errors


def test_a_given_vmem_limit_bounds_the_tiles(monkeypatch):
  """vmem_limit_bytes reaches the tile search in place of the chip's (interpret mode: v4's)."""
  limits = []
  search = affinity_pallas.geometries
  monkeypatch.setattr(affinity_pallas, 'geometries',
                      lambda *args: limits.append(args[6]) or search(*args))
  x, similarity, kernel, _ = random_inputs(2, 9, 5, 4, 'float32')
  for given in (None, 2**20):
    jax.make_jaxpr(lambda *a, given=given: affinity_pallas.fused_affinity_conv(
        *a, interpret=True, vmem_limit_bytes=given))(x, similarity, kernel)
  assert limits == [affinity_pallas.VMEM_LIMIT_BYTES, 2**20]
  with pytest.raises(ValueError, match='vmem_limit_bytes must be positive, got 0'):
    affinity_pallas.fused_affinity_conv(x, similarity, kernel, interpret=True, vmem_limit_bytes=0)


def test_cpu_auto_is_the_xla_form_bit_for_bit():
  """'auto' off TPUs lowers to the XLA form alone (no kernel in the CPU program), with the same
  bits, for both affinities and for the gradients."""
  inputs = random_inputs(2, 9, 5, 4, 'float32')
  for affinity in affinity_lib.AFFINITIES:
    def conv(kind):
      return lambda x, s, w: affinity_select.affinity_conv(x, s, w, affinity_form=affinity,
                                                           affinity_kernel=kind)
    step = lambda kind: jax.jit(lambda *a: output_and_grads(conv(kind), *a))
    assert 'tpu_custom_call' not in step('auto').lower(*inputs).as_text()
    for auto, xla in zip(step('auto')(*inputs), step('xla')(*inputs)):
      np.testing.assert_array_equal(auto, xla)


def test_float64_stays_on_the_xla_form():
  with jax.enable_x64(True):
    inputs = [a.astype(jnp.float64) for a in random_inputs(2, 9, 5, 4, 'float32')[:3]]
    forced = jax.jit(lambda x, s, w: affinity_select.affinity_conv(
        x, s, w, affinity_kernel='pallas'))
    jaxpr = jax.make_jaxpr(forced)(*inputs)
    assert 'pallas_call' not in str(jaxpr) and jaxpr.out_avals[0].dtype == jnp.float64


def test_unknown_affinity_kernel_is_an_error():
  with pytest.raises(ValueError, match="config.model.affinity_kernel is 'mosaic'"):
    network.BackTAL(num_classes=2, feat_dim=4, affinity_kernel='mosaic').init(
        jax.random.key(0), jnp.zeros((1, 4, 4)))


def epoch_losses(config, workdir, epochs):
  """Mean loss terms of each epoch of the debug training on four CPU devices."""
  mesh = sharding.make_mesh(jax.devices()[:4])
  with jax.set_mesh(mesh):
    run = train.Run(config, str(workdir), mesh)
    state = train_state.create_train_state(config, run.model, run.tx, mesh)
    loader = run.data.train_feed(pipeline.DataPosition(), mesh)
    step_fn = train.jit_train_step(run.model, run.tx, config, mesh, state, loader)
    losses = []
    for _ in range(epochs):
      metrics = []
      for _ in range(loader.steps_per_epoch):
        state, step_metrics = step_fn(state, next(loader))
        metrics.append(jax.device_get(step_metrics))
      losses.append(train.mean_metrics(metrics))
    loader.close()
    run.checkpoints.close()
  return losses


def test_debug_training_through_the_kernel_has_the_xla_forms_losses(tmp_path):
  """configs/thumos.py:debug with the kernel forced (interpreted on the CPU) against the XLA form,
  on four devices (each runs the kernel on its own videos): the same losses in every epoch,
  within float32 rounding."""
  losses = {}
  for kind in ('xla', 'pallas'):
    config = thumos.get_config('debug')
    config.data.features_root = str(tmp_path / 'testbed')
    config.model.affinity_kernel = kind
    losses[kind] = epoch_losses(config, tmp_path / kind, config.train.num_epochs)
  assert len(losses['xla']) == 2
  for xla, kernel in zip(losses['xla'], losses['pallas']):
    for key in ('loss', 'grad_norm'):
      np.testing.assert_allclose(kernel[key], xla[key], rtol=2e-6, err_msg=key)


@hypothesis.given(grid=st.lists(st.integers(1, 4), min_size=1, max_size=4), data=st.data())
def test_block_copies_counts_what_the_pipeline_fetches(grid, data):
  """The closed form against stepping through the grid: a block is fetched at the first step
  and whenever its index differs from the step before."""
  read = data.draw(st.lists(st.sampled_from(range(len(grid))), unique=True))
  spec = pl.BlockSpec((1,) * len(read), lambda *step: tuple(step[a] for a in read))
  fetched, previous = 0, None
  for step in itertools.product(*map(range, grid)):
    index = spec.index_map(*step)
    fetched += index != previous
    previous = index
  assert affinity_pallas.block_copies(tuple(grid), spec) == fetched


@pytest.mark.parametrize('limit_mib', [16, 64])
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('batch,length', [(8, 750), (64, 100), (32, 200)])
def test_tiles_move_fewer_bytes_than_fixed_tiles_within_the_vmem_budget(batch, length, dtype,
                                                                        limit_mib):
  """Per chip at each dataset's shape (width 2048, both passes): each kernel's searched tiles
  fit the VMEM budget and move no more HBM bytes than the fixed tiles used before the search
  (blocks of 512 rows, a long video cut 512 + remainder; 256 float32 or 512 bfloat16 channels),
  which the search may pick again (ActivityNet1.2's shape in bfloat16 at 16 MiB)."""
  itemsize = jnp.dtype(dtype).itemsize
  limit = limit_mib * 2**20
  geos = affinity_pallas.geometries(batch, length, 2048, 2048, 'official', itemsize, limit)
  frames = min(512, -(-length // 16) * 16)
  channels = 1024 // itemsize
  fixed = (affinity_pallas.Geometry(batch, length, 2048, 2048, 'official',
                                    min(batch, 512 // frames), frames, channels, channels,
                                    itemsize),) * 3
  for searched, before in zip(affinity_pallas.plans(geos), affinity_pallas.plans(fixed)):
    assert searched.vmem_bytes() <= affinity_pallas.VMEM_BUDGET_SHARE * limit
    assert searched.moved_bytes() <= before.moved_bytes()
  for geo in geos:
    assert geo.frame_tiles * geo.frame_tile - length < geo.frame_tiles * affinity_pallas.FRAME_ALIGN
    assert batch % geo.batch_tile == 0
