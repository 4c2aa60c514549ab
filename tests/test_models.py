"""The base module's two passes as one call (same outputs and dropout draws as two calls), and
what model.dtype='bfloat16' computes in bfloat16."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from backtal_jax import models


class BasePasses(nn.Module):
  """The base module over two passes, called once per pass (as before) or once for both."""
  one_call: bool

  @nn.compact
  def __call__(self, x_BxTxF, weighted_BxTxF, similarity_BxTx3):
    base = models.BaseModule(hidden_dim=6, dropout_rate=0.5, semantics='official',
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


def test_bfloat16_computes_the_base_module_only_in_bfloat16():
  model = models.BackTAL(num_classes=3, feat_dim=8, hidden_dim=8, filter_dim=4,
                         embed_hidden_dim=4, embed_dim=4, dtype='bfloat16')
  x = jax.random.normal(jax.random.key(0), (2, 9, 8))
  params = model.init(jax.random.key(1), x)
  outputs = model.apply(params, x)
  assert outputs.feature_supp_1.dtype == jnp.bfloat16  # the affinity convolutions
  for name in ('cas_base', 'cas_supp', 'score_base', 'embedding', 'fore_weights'):
    assert outputs[name].dtype == jnp.float32, name
