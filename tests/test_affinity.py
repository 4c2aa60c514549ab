"""The fast affinity kernels against their literal definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from backtal_jax.model import affinity as affinity_lib


def random_inputs(seed, batch, length, c_in, c_out, embed=8):
  keys = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(keys[0], (batch, length, c_in), jnp.float64)
  embedding = jax.random.normal(keys[1], (batch, length, embed), jnp.float64)
  kernel = jax.random.normal(keys[2], (3, c_in, c_out), jnp.float64) / np.sqrt(3 * c_in)
  return x, jax.vmap(affinity_lib.neighbour_similarity)(embedding), kernel


def paper_by_loops(x, similarity, kernel):
  """out[b, t] = sum_k s_k(b, t) * x[b, t+k-1] @ W[k], frame by frame in numpy."""
  x, similarity, kernel = map(np.asarray, (x, similarity, kernel))
  batch, length, _ = x.shape
  out = np.zeros((batch, length, kernel.shape[-1]))
  for b in range(batch):
    for t in range(length):
      for k in range(3):
        if 0 <= t + k - 1 < length:
          out[b, t] += similarity[b, t, k] * x[b, t + k - 1] @ kernel[k]
  return out


def official_by_loops(x, similarity, kernel):
  """out[b, t] = sum_{c,k} s_{floor((3c+k)/C)}(b, t) * x[b, t+k-1, c] * W[k, c]."""
  x, similarity, kernel = map(np.asarray, (x, similarity, kernel))
  batch, length, channels = x.shape
  out = np.zeros((batch, length, kernel.shape[-1]))
  for t in range(length):
    for k in range(3):
      if not 0 <= t + k - 1 < length:
        continue
      for c in range(channels):
        group = (3 * c + k) // channels
        out[:, t] += (similarity[:, t, group] * x[:, t + k - 1, c])[:, None] * kernel[k, c]
  return out


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


@pytest.mark.parametrize('c_in', [1, 4, 5, 9])
@pytest.mark.parametrize('affinity', affinity_lib.AFFINITIES)
def test_fast_kernel_equals_definition(affinity, c_in):
  x, similarity, kernel = random_inputs(c_in, 2, 7, c_in, 5)
  by_loops = {'official': official_by_loops, 'paper': paper_by_loops}[affinity]
  expected = by_loops(x, similarity, kernel)
  fast = affinity_lib.affinity_conv(x, similarity, kernel, affinity=affinity)
  naive = affinity_lib.NAIVE[affinity](x, similarity, kernel)
  np.testing.assert_allclose(fast, expected, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(naive, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('affinity', affinity_lib.AFFINITIES)
def test_fast_gradient_equals_naive_gradient(affinity):
  x, similarity, kernel = random_inputs(3, 2, 9, 8, 6)

  def loss(fn):
    return lambda *args: jnp.sum(jnp.sin(fn(*args)))

  fast = jax.grad(loss(lambda *a: affinity_lib.affinity_conv(*a, affinity=affinity)), (0, 1, 2))
  naive = jax.grad(loss(affinity_lib.NAIVE[affinity]), (0, 1, 2))
  for ours, ref in zip(fast(x, similarity, kernel), naive(x, similarity, kernel)):
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_affinity_forms_differ_unless_similarities_are_equal():
  x, similarity, kernel = random_inputs(0, 1, 6, 6, 4)
  official = affinity_lib.affinity_conv(x, similarity, kernel, affinity='official')
  paper = affinity_lib.affinity_conv(x, similarity, kernel, affinity='paper')
  assert not np.allclose(official, paper)
  ones = jnp.ones_like(similarity)
  official = affinity_lib.affinity_conv(x, ones, kernel, affinity='official')
  paper = affinity_lib.affinity_conv(x, ones, kernel, affinity='paper')
  np.testing.assert_allclose(official, paper, rtol=1e-12)


def test_similarity_is_zero_beyond_either_end_and_one_with_itself():
  embedding = jax.random.normal(jax.random.key(1), (5, 4), jnp.float64)
  similarity = np.asarray(affinity_lib.neighbour_similarity(embedding))
  assert similarity[0, 0] == 0 and similarity[-1, 2] == 0
  np.testing.assert_allclose(similarity[:, 1], 1.0, rtol=1e-12)
  unit = embedding / np.linalg.norm(embedding, axis=1, keepdims=True)
  np.testing.assert_allclose(similarity[1:, 0], np.sum(unit[1:] * unit[:-1], axis=1), rtol=1e-12)
  np.testing.assert_allclose(similarity[:-1, 2], similarity[1:, 0], rtol=1e-12)


def test_official_groups_split_the_boundary_channel():
  groups = affinity_lib.official_groups(4)
  # (c, k) -> floor((3c + k) / 4): channel 1 has taps in groups 0 and 1, channel 2 in 1 and 2.
  assert [(first, end) for first, end, _ in groups] == [(0, 2), (1, 3), (2, 4)]
  assert groups[0][2].T.tolist() == [[True, True, True], [True, False, False]]
  total = sum(mask.sum() for _, _, mask in groups)
  assert total == 3 * 4


def test_unknown_affinity_is_an_error():
  x, similarity, kernel = random_inputs(0, 1, 4, 3, 2)
  with pytest.raises(ValueError, match='paper'):
    affinity_lib.affinity_conv(x, similarity, kernel, affinity='papr')


@pytest.mark.parametrize('c_in', [1, 4, 5, 9])
def test_convolution_formulation_equals_definition(c_in):
  """The formulation TPUs lower 'official' to, checked here on the CPU with its gradients."""
  x, similarity, kernel = random_inputs(c_in, 2, 7, c_in, 5)
  np.testing.assert_allclose(affinity_lib.official_by_convolution(x, similarity, kernel),
                             official_by_loops(x, similarity, kernel), rtol=1e-12, atol=1e-12)

  def loss(fn):
    return lambda *args: jnp.sum(jnp.sin(fn(*args)))

  ours = jax.grad(loss(affinity_lib.official_by_convolution), (0, 1, 2))(x, similarity, kernel)
  ref = jax.grad(loss(affinity_lib.naive_official), (0, 1, 2))(x, similarity, kernel)
  for got, expected in zip(ours, ref):
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
