"""The base module's two passes as one call (same outputs and dropout draws as two calls, each
device keeping its own rows), the top-k score's gradient, and what model.dtype='bfloat16' computes
in bfloat16."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from backtal_jax.core import sharding
from backtal_jax.model import network
from backtal_jax.model import topk
from tests import devices


class BasePasses(nn.Module):
  """The base module over two passes, called once per pass (as before) or once for both."""
  one_call: bool

  @nn.compact
  def __call__(self, x_BxTxF, weighted_BxTxF, similarity_BxTx3):
    base = network.BaseModule(hidden_dim=6, dropout_rate=0.5, affinity='official',
                             dtype='float32', name='base')
    if self.one_call:
      return base([x_BxTxF, weighted_BxTxF], similarity_BxTx3, False)
    plain = base([x_BxTxF], similarity_BxTx3, False)
    return plain + base([weighted_BxTxF], similarity_BxTx3, False)


def test_passes_in_one_call_equal_one_call_each_with_the_same_dropout():
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, 9, 5))
  weighted = x * jax.random.uniform(keys[1], (2, 9, 1))
  similarity = jax.random.uniform(keys[2], (2, 9, 3))
  params = BasePasses(one_call=False).init(jax.random.key(1), x, weighted, similarity)
  outputs = {one_call: BasePasses(one_call).apply(params, x, weighted, similarity,
                                                  rngs={'dropout': jax.random.key(7)})
             for one_call in (False, True)}
  for (first_a, dropped_a), (first_b, dropped_b) in zip(outputs[False], outputs[True]):
    np.testing.assert_array_equal(first_a, first_b)
    np.testing.assert_array_equal(dropped_a, dropped_b)
    assert 0.3 < (np.asarray(dropped_a) == 0).mean() < 0.7  # dropout did draw, per pass
  assert not np.array_equal(outputs[True][0][1] == 0, outputs[True][1][1] == 0)  # two draws


@pytest.mark.parametrize('order', ['per_video', 'per_device_block'])
@pytest.mark.parametrize('num_devices', [pytest.param(1, marks=pytest.mark.one_device), 4])
def test_merged_passes_stay_on_each_devices_rows(num_devices, order):
  merge = getattr(network, f'_merge_{order}')
  split = getattr(network, f'_split_{order}')
  mesh = sharding.make_mesh(devices.first_devices(num_devices))
  rows = 2 * mesh.size
  passes = [np.arange(rows * 3, dtype=np.float32).reshape(rows, 3) + 1000 * p for p in range(2)]
  with jax.set_mesh(mesh):
    placed = [jax.device_put(x, sharding.batch_sharding(mesh)) for x in passes]
    merged = jax.jit(merge)(*placed)
    hlo = jax.jit(merge).lower(*placed).compile().as_text()
    back = jax.jit(lambda x: split(x, 2))(merged)
  assert merged.sharding.spec[0] == 'data'
  for shard in merged.addressable_shards:  # device d: only its own rows of both passes
    own = [next(s.data for s in x.addressable_shards if s.device == shard.device) for x in placed]
    expected = np.concatenate(own) if order == 'per_device_block' else np.stack(own, 1)
    np.testing.assert_array_equal(shard.data, expected.reshape(shard.data.shape))
  for name in ('all-to-all', 'collective-permute', 'all-gather'):
    assert name not in hlo
  for x, x_back in zip(passes, back):
    assert x_back.sharding.spec[0] == 'data'  # what the losses' vmaps over rows expect
    np.testing.assert_array_equal(x_back, x)


def test_the_cpu_merges_per_video():
  passes = [np.full((2, 3), p, np.float32) for p in range(2)]
  np.testing.assert_array_equal(network.merge_passes(passes)[:, 0], [0, 1, 0, 1])
  for p, x in enumerate(network.split_passes(network.merge_passes(passes), 2)):
    np.testing.assert_array_equal(x, passes[p])


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_tpus_topk_score_gradient_is_autodiffs_of_top_k_bit_for_bit(dtype):
  cas = jax.random.normal(jax.random.key(0), (3, 40, 5), dtype).at[0, :6, 0].set(1)  # with ties
  weights = jax.random.normal(jax.random.key(1), (3, 5))

  def autodiff_of_top_k(x, k):
    return jnp.mean(jax.lax.top_k(jnp.swapaxes(x, 1, 2), k)[0], axis=-1)

  for k in (1, 5, 40):
    grads = [jax.grad(lambda x: (score(x, k).astype('float32') * weights).sum())(cas)
             for score in (topk._topk_mean_dense_grad, autodiff_of_top_k)]
    assert grads[0].dtype == cas.dtype
    np.testing.assert_array_equal(grads[0], grads[1])
    assert int((grads[0] != 0).sum()) == 3 * 5 * k  # k positions per video and class


def test_bfloat16_computes_the_base_module_only_in_bfloat16():
  model = network.BackTAL(num_classes=3, feat_dim=8, hidden_dim=8, filter_dim=4,
                         embed_hidden_dim=4, embed_dim=4, dtype='bfloat16')
  x = jax.random.normal(jax.random.key(0), (2, 9, 8))
  params = model.init(jax.random.key(1), x)
  outputs = model.apply(params, x)
  assert outputs.feature_supp_1.dtype == jnp.bfloat16  # the affinity convolutions
  for name in ('cas_base', 'cas_supp', 'score_base', 'embedding', 'fore_weights'):
    assert outputs[name].dtype == jnp.float32, name
