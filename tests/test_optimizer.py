"""The official optimiser: torch.optim.Adam with weight_decay, i.e. L2 coupled into the gradient."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from backtal_jax.run import optimizer


def torch_adam_by_hand(param, grads, lr, b1, b2, eps, wd):
  """torch.optim.Adam's documented update, step by step."""
  m = v = np.zeros_like(param)
  for t, g in enumerate(grads, start=1):
    g = g + wd * param
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    param = param - lr * m_hat / (np.sqrt(v_hat) + eps)
  return param


def test_official_adam_matches_the_hand_computation():
  config = ml_collections.ConfigDict(dict(learning_rate=1e-2, b1=0.9, b2=0.999, eps=1e-8,
                                          weight_decay=5e-4))
  rng = np.random.default_rng(0)
  param = rng.normal(size=(5,)).astype(np.float64)
  grads = [rng.normal(size=(5,)) for _ in range(4)]
  tx = optimizer.official_adam(config)
  with jax.enable_x64(True):
    ours, state = jnp.asarray(param), tx.init(jnp.asarray(param))
    for g in grads:
      updates, state = tx.update(jnp.asarray(g), state, ours)
      ours = optax.apply_updates(ours, updates)
  expected = torch_adam_by_hand(param, grads, 1e-2, 0.9, 0.999, 1e-8, 5e-4)
  np.testing.assert_allclose(ours, expected, rtol=1e-12)
  decoupled = torch_adam_by_hand(param, grads, 1e-2, 0.9, 0.999, 1e-8, 0.0) * (1 - 1e-2 * 5e-4)
  assert not np.allclose(expected, decoupled, rtol=1e-9)  # coupled L2 is not AdamW


def test_matches_torch_adam_when_available():
  torch = pytest.importorskip('torch')
  config = ml_collections.ConfigDict(dict(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8,
                                          weight_decay=5e-4))
  rng = np.random.default_rng(1)
  param = rng.normal(size=(7,))
  grads = [rng.normal(size=(7,)) for _ in range(3)]
  weight = torch.nn.Parameter(torch.tensor(param))
  adam = torch.optim.Adam([weight], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=5e-4)
  for g in grads:
    weight.grad = torch.tensor(g)
    adam.step()
  tx = optimizer.official_adam(config)
  ours, state = jnp.asarray(param, jnp.float32), tx.init(jnp.asarray(param, jnp.float32))
  for g in grads:
    updates, state = tx.update(jnp.asarray(g, jnp.float32), state, ours)
    ours = optax.apply_updates(ours, updates)
  np.testing.assert_allclose(ours, weight.detach().numpy(), rtol=1e-5)
