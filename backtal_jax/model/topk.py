"""The video-level score: the mean of the top-k CAS values over time, and how k is chosen."""

import functools

import jax
import jax.numpy as jnp


def topk_mean_over_time(cas_BxTxC1: jax.Array, k: int) -> jax.Array:
  """Video-level score: mean of the k largest CAS values of each class over time.

  The same score and gradient everywhere; on TPUs the gradient is written without a scatter
  (`_topk_mean_dense_grad`). Elsewhere autodiff's scatter stays, so that CPU runs keep their bits
  (the other form changes how XLA fuses the step around it).
  """
  return jax.lax.platform_dependent(
      cas_BxTxC1, default=functools.partial(_topk_mean, k=k),
      tpu=functools.partial(_topk_mean_dense_grad, k=k))


def _topk_mean_and_positions(cas_BxTxC1, k):
  top_BxC1xk, position_BxC1xk = jax.lax.top_k(jnp.swapaxes(cas_BxTxC1, 1, 2), k)
  return jnp.mean(top_BxC1xk, axis=-1), position_BxC1xk


def _topk_mean(cas_BxTxC1, k):
  return _topk_mean_and_positions(cas_BxTxC1, k)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _topk_mean_dense_grad(cas_BxTxC1, k):
  return _topk_mean(cas_BxTxC1, k)


def _topk_mean_forward(cas_BxTxC1, k):
  score_BxC1, position_BxC1xk = _topk_mean_and_positions(cas_BxTxC1, k)
  return score_BxC1, (position_BxC1xk, cas_BxTxC1.shape[1])


def _topk_mean_backward(k, residuals, grad_BxC1):
  """g / k at each top-k position, as a dense comparison instead of autodiff's scatter: on chips
  with SparseCores (v5p, v6e) that scatter is offloaded, and the TPU compiler counts 3.5 GB per call
  at the ActivityNet1.2 shape (benchmarks/RESULTS.md). The same values: the k positions are
  distinct, so the scatter adds g / k to zero once per position."""
  position_BxC1xk, length = residuals
  chosen_BxC1xT = jnp.any(position_BxC1xk[..., None] == jnp.arange(length), axis=-2)
  grad_BxC1xT = jnp.where(chosen_BxC1xT, (grad_BxC1 / k)[..., None], 0)
  return (jnp.swapaxes(grad_BxC1xT, 1, 2).astype(grad_BxC1.dtype),)


_topk_mean_dense_grad.defvjp(_topk_mean_forward, _topk_mean_backward)


def num_topk(length: int, ratio: float) -> int:
  """k = int(T * ratio), as the official code; at least 1 so short inputs still work."""
  return max(int(length * ratio), 1)
