"""The frame-specific affinity convolution of BackTAL.

A kernel-3 temporal convolution whose output at frame t mixes the three taps x[t-1], x[t], x[t+1]
with cosine similarities s_k(t) of the embedding at t and at t+k-1 (k = 0, 1, 2; similarity with
the zero padding beyond either end is 0). Two forms (`affinity`):

- 'paper': tap k is weighted by its own similarity:
    out[t] = sum_k s_k(t) * (x[t+k-1] @ W[k]).
- 'official': what the released AttentionConv1d computes. It unfolds the input channel-major
  (entry i = 3c + k) but lays the similarity tile out tap-major, so entry i is scaled by
  s_{floor(i / I)}(t): input channel c, tap k belongs to group g(c, k) = floor((3c + k) / I), and
    out[t] = sum_g s_g(t) * sum_{(c, k) in group g} x[t+k-1, c] * W[k, c].
  When I is not a multiple of 3 the boundary channel's taps fall into two groups.

Weights use the Flax kernel layout W[k, c_in, c_out] (PyTorch's Conv1d weight is [c_out, c_in, k]).
The fast formulations are written for one video ([T, I]) and vmapped over the batch; neither builds
the [T, 3I] unfolded input. The naive ones mirror the definitions literally, for tests and
benchmarks only.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from backtal_jax.core import fields

AFFINITIES = ('official', 'paper')
CONFIG_FIELDS = {'model.affinity': fields.choice(*AFFINITIES)}
KERNEL_SIZE = 3


def neighbour_similarity(embedding_TxE: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Cosine similarity of each frame's embedding with frames t-1, t, t+1: [T, 3].

  Norms are clamped at `eps` separately, as torch.nn.CosineSimilarity does; the zero padding
  beyond either end has similarity 0.
  """
  norm_T = jnp.maximum(jnp.linalg.norm(embedding_TxE, axis=-1), eps)
  unit_TxE = embedding_TxE / norm_T[:, None]
  next_T = jnp.sum(unit_TxE[:-1] * unit_TxE[1:], axis=-1)
  zero_1 = jnp.zeros((1,), embedding_TxE.dtype)
  previous_T = jnp.concatenate([zero_1, next_T])
  following_T = jnp.concatenate([next_T, zero_1])
  itself_T = jnp.sum(unit_TxE * unit_TxE, axis=-1)
  return jnp.stack([previous_T, itself_T, following_T], axis=-1)


def _shift(y_TxO: jax.Array, offset: int) -> jax.Array:
  """y[t + offset] with zeros outside [0, T): the tap at `offset` of a kernel-3 conv."""
  if offset == 0:
    return y_TxO
  pad = [(max(-offset, 0), max(offset, 0))] + [(0, 0)] * (y_TxO.ndim - 1)
  padded = jnp.pad(y_TxO, pad)
  start = max(offset, 0)
  return jax.lax.slice_in_dim(padded, start, start + y_TxO.shape[0], axis=0)


def _paper_one_video(x_TxI, similarity_Tx3, kernel_KxIxO, precision):
  """One [T, I] x [I, 3O] product, then the similarity-weighted sum of the shifted taps."""
  c_out = kernel_KxIxO.shape[-1]
  kernel_IxKO = jnp.transpose(kernel_KxIxO, (1, 0, 2)).reshape(kernel_KxIxO.shape[1], -1)
  taps_TxKxO = jnp.dot(x_TxI, kernel_IxKO, precision=precision).reshape(-1, KERNEL_SIZE, c_out)
  out_TxO = 0
  for k in range(KERNEL_SIZE):
    out_TxO = out_TxO + similarity_Tx3[:, k:k + 1] * _shift(taps_TxKxO[:, k], k - 1)
  return out_TxO


def official_groups(channels: int) -> list[tuple[int, int, np.ndarray]]:
  """For each similarity group g: (first channel, end channel, tap mask [3, end - first]).

  Group g holds the (channel c, tap k) pairs with floor((3c + k) / I) == g; its channels form a
  contiguous range, and ranges of neighbouring groups share at most the boundary channel.
  """
  index_IxK = np.arange(channels)[:, None] * KERNEL_SIZE + np.arange(KERNEL_SIZE)[None, :]
  group_IxK = index_IxK // channels
  groups = []
  for g in range(KERNEL_SIZE):
    rows = np.nonzero((group_IxK == g).any(axis=1))[0]
    first, end = int(rows[0]), int(rows[-1]) + 1
    groups.append((first, end, (group_IxK[first:end] == g).T))
  return groups


def _official_one_video(x_TxI, similarity_Tx3, kernel_KxIxO, precision):
  """Per group: one product over the group's (tap, channel) slice, scaled by s_g at the output."""
  out_TxO = 0
  for g, (first, end, mask_KxG) in enumerate(official_groups(x_TxI.shape[-1])):
    x_TxG = x_TxI[:, first:end]
    taps_TxKG = jnp.concatenate([_shift(x_TxG, k - 1) for k in range(KERNEL_SIZE)], axis=-1)
    kernel_KxGxO = kernel_KxIxO[:, first:end] * jnp.asarray(mask_KxG, kernel_KxIxO.dtype)[..., None]
    kernel_KGxO = kernel_KxGxO.reshape(-1, kernel_KxIxO.shape[-1])
    group_TxO = jnp.dot(taps_TxKG, kernel_KGxO, precision=precision)
    out_TxO = out_TxO + similarity_Tx3[:, g:g + 1] * group_TxO
  return out_TxO


def official_by_convolution(x_BxTxI, similarity_BxTx3, kernel_KxIxO, precision=None):
  """Per group: the compiler's own kernel-3 convolution over the group's channels with the taps
  outside the group masked out, scaled by s_g at the output. A TPU convolution reads the three
  taps in place, where the concatenated shifted copies of `_official_one_video` are written to
  and read back from memory."""
  out_BxTxO = 0
  for g, (first, end, mask_KxG) in enumerate(official_groups(x_BxTxI.shape[-1])):
    kernel_KxGxO = kernel_KxIxO[:, first:end] * jnp.asarray(mask_KxG, kernel_KxIxO.dtype)[..., None]
    group_BxTxO = jax.lax.conv_general_dilated(
        x_BxTxI[..., first:end], kernel_KxGxO, window_strides=(1,), padding=((1, 1),),
        dimension_numbers=('NWC', 'WIO', 'NWC'), precision=precision)
    out_BxTxO = out_BxTxO + similarity_BxTx3[..., g:g + 1] * group_BxTxO
  return out_BxTxO


_ONE_VIDEO = {'official': _official_one_video, 'paper': _paper_one_video}


def check_affinity(affinity: str) -> None:
  fields.check('model.affinity', affinity, CONFIG_FIELDS)


@functools.partial(jax.jit, static_argnames=('affinity', 'precision'))
def affinity_conv(x_BxTxI: jax.Array, similarity_BxTx3: jax.Array, kernel_KxIxO: jax.Array, *,
                  affinity: str = 'official', precision=None) -> jax.Array:
  """The affinity convolution of a batch: [B, T, I] -> [B, T, O].

  'official' is lowered per platform: on TPUs as `official_by_convolution` (by the TPU compiler's
  count it moves fewer bytes, see benchmarks/RESULTS.md), elsewhere as the per-video products,
  measured faster on CPUs and on an H100.
  """
  check_affinity(affinity)
  one_video = functools.partial(_ONE_VIDEO[affinity], precision=precision)
  by_products = lambda *args: jax.vmap(one_video, in_axes=(0, 0, None))(*args)
  if affinity == 'paper':
    return by_products(x_BxTxI, similarity_BxTx3, kernel_KxIxO)
  return jax.lax.platform_dependent(
      x_BxTxI, similarity_BxTx3, kernel_KxIxO, default=by_products,
      tpu=functools.partial(official_by_convolution, precision=precision))


def naive_official(x_BxTxI, similarity_BxTx3, kernel_KxIxO):
  """AttentionConv1d step by step: unfold (channel-major), tile (tap-major), multiply, matmul."""
  batch, length, channels = x_BxTxI.shape
  x_BxIxT = jnp.transpose(x_BxTxI, (0, 2, 1))
  padded = jnp.pad(x_BxIxT, ((0, 0), (0, 0), (1, 1)))
  unfolded_BxIxKxT = jnp.stack([padded[:, :, k:k + length] for k in range(KERNEL_SIZE)], axis=2)
  unfolded_BxIKxT = unfolded_BxIxKxT.reshape(batch, channels * KERNEL_SIZE, length)
  similarity_Bx3xT = jnp.transpose(similarity_BxTx3, (0, 2, 1))
  tile_BxKIxT = jnp.repeat(similarity_Bx3xT, channels, axis=1)
  weighted_BxIKxT = unfolded_BxIKxT * tile_BxKIxT
  weight_OxIK = jnp.transpose(kernel_KxIxO, (2, 1, 0)).reshape(kernel_KxIxO.shape[-1], -1)
  out_BxOxT = jnp.einsum('oi,bit->bot', weight_OxIK, weighted_BxIKxT,
                         precision=jax.lax.Precision.HIGHEST)
  return jnp.transpose(out_BxOxT, (0, 2, 1))


def naive_paper(x_BxTxI, similarity_BxTx3, kernel_KxIxO):
  """The paper's definition, one tap at a time: sum_k s_k(t) * W[k]^T x[t+k-1]."""
  length = x_BxTxI.shape[1]
  padded = jnp.pad(x_BxTxI, ((0, 0), (1, 1), (0, 0)))
  out = 0
  for k in range(KERNEL_SIZE):
    neighbour_BxTxI = padded[:, k:k + length]
    out = out + similarity_BxTx3[..., k:k + 1] * jnp.einsum(
        'btc,co->bto', neighbour_BxTxI, kernel_KxIxO[k], precision=jax.lax.Precision.HIGHEST)
  return out


NAIVE = {'official': naive_official, 'paper': naive_paper}
