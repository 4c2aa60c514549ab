"""The BackTAL network in Flax linen, channels-last ([B, T, F] in, [B, T, C+1] CAS out).

Parameter names follow the official PyTorch modules (filter_module/conv_1, base_module/conv_2, ...)
so that official checkpoints map onto them one to one (see official_weights.params_from_torch).
Initialisers reproduce PyTorch's Conv1d defaults, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights
and biases, since the official recipe (Adam at 1e-4 without a schedule) was tuned for that scale.
"""

from collections.abc import Sequence
import functools
from typing import Any

import flax
from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp

from backtal_jax.core import batch_rows
from backtal_jax.core import fields
from backtal_jax.model import affinity
from backtal_jax.model import affinity_select
from backtal_jax.model import topk

torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')
NEGATIVE_SLOPE = 0.01  # of every LeakyReLU: PyTorch's default, which the official modules keep


# config.model: what each field may hold (core/fields.py), checked before the first step
CONFIG_FIELDS = {
    'model.num_classes': fields.integer(1),
    'model.feat_dim': fields.integer(1),
    'model.hidden_dim': fields.integer(1),
    'model.filter_dim': fields.integer(1),
    'model.embed_hidden_dim': fields.integer(1),
    'model.embed_dim': fields.integer(1),
    'model.topk_ratio': fields.number(0, 1, low_open=True),
    'model.dropout_rate': fields.number(0, 1, high_open=True),
    'model.dtype': fields.choice('float32', 'bfloat16'),
    **affinity.CONFIG_FIELDS, **affinity_select.CONFIG_FIELDS,
}


def torch_bias_init(fan_in: int):
  """PyTorch's Conv1d bias initialiser, which depends on the layer's fan-in."""
  bound = 1.0 / fan_in**0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


@flax.struct.dataclass
class BackTALOutputs:
  """What BackTAL computes; readable by attribute or by key (outputs['cas_base'])."""
  score_base: jax.Array  # [B, C+1] top-k mean of cas_base, before softmax
  score_supp: jax.Array  # [B, C+1] top-k mean of cas_supp, before softmax
  cas_base: jax.Array  # [B, T, C+1] CAS of the plain pass
  cas_supp: jax.Array  # [B, T, C+1] CAS of the background-suppressed pass
  embedding: jax.Array  # [B, T, E] L2-normalised embedding
  fore_weights: jax.Array  # [B, T, 1] filter-module foreground weights
  feature_supp_1: jax.Array  # [B, T, H] first affinity conv of the suppressed pass

  def __getitem__(self, key: str) -> jax.Array:
    return getattr(self, key)


def pointwise(features: int, fan_in: int, name: str, use_bias: bool = True, **kwargs) -> nn.Dense:
  """A kernel-1 Conv1d, i.e. a Dense over channels."""
  return nn.Dense(features, use_bias=use_bias, kernel_init=torch_kernel_init,
                  bias_init=torch_bias_init(fan_in), name=name, **kwargs)


class FilterModule(nn.Module):
  """Foreground weights in (0, 1) per frame: [B, T, F] -> [B, T, 1]."""
  filter_dim: int
  dtype: Any

  @nn.compact
  def __call__(self, x_BxTxF):
    hidden = pointwise(self.filter_dim, x_BxTxF.shape[-1], 'conv_1', dtype=self.dtype)(x_BxTxF)
    logit = pointwise(1, self.filter_dim, 'conv_2', dtype=self.dtype)(
        nn.leaky_relu(hidden, NEGATIVE_SLOPE))
    return nn.sigmoid(logit)


class EmbeddingModule(nn.Module):
  """The L2-normalised embedding whose neighbour similarities drive the affinity convolution."""
  embed_hidden_dim: int
  embed_dim: int
  dtype: Any

  def conv3(self, features: int, fan_in: int, name: str) -> nn.Conv:
    return nn.Conv(features, kernel_size=(3,), padding=((1, 1),), kernel_init=torch_kernel_init,
                   bias_init=torch_bias_init(3 * fan_in), dtype=self.dtype, name=name)

  @nn.compact
  def __call__(self, x_BxTxF):
    hidden = self.conv3(self.embed_hidden_dim, x_BxTxF.shape[-1], 'conv_1')(x_BxTxF)
    out = self.conv3(self.embed_dim, self.embed_hidden_dim, 'conv_2')(
        nn.leaky_relu(hidden, NEGATIVE_SLOPE))
    norm = jnp.linalg.norm(out, axis=-1, keepdims=True)
    return out / jnp.maximum(norm, 1e-12)


class AffinityConv(nn.Module):
  """Kernel-3, bias-free convolution whose taps are weighted by embedding similarities, then
  LeakyReLU (one module, so that the TPU kernel applies it before writing its output)."""
  features: int
  affinity: str
  dtype: Any
  affinity_kernel: str = 'auto'

  @nn.compact
  def __call__(self, x_BxTxI, similarity_BxTx3):
    kernel = self.param('kernel', torch_kernel_init, (affinity.KERNEL_SIZE, x_BxTxI.shape[-1],
                                                      self.features))
    x_BxTxI, similarity_BxTx3, kernel = nn.dtypes.promote_dtype(
        x_BxTxI, similarity_BxTx3, kernel, dtype=self.dtype)
    return affinity_select.affinity_conv(x_BxTxI, similarity_BxTx3, kernel,
                                         affinity_form=self.affinity,
                                         affinity_kernel=self.affinity_kernel,
                                         negative_slope=NEGATIVE_SLOPE)


class Dropout(nn.Module):
  """Inverted dropout whose mask is drawn with the input's sharding.

  flax.linen.Dropout draws an unsharded mask, which explicit-sharding meshes reject when the
  input is split over 'data'; PyTorch's nn.Dropout behaviour otherwise (scale by 1 / keep).
  """
  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or self.rate == 0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, x.shape,
                                out_sharding=jax.typeof(x).sharding)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class BaseModule(nn.Module):
  """Two affinity convolutions, each with its LeakyReLU, then dropout; shared by both passes.

  The passes (plain and foreground-weighted features) run as one call over their concatenated
  batches, so each weight is read once per step instead of once per pass; dropout then draws one
  mask per pass, in pass order, the same draws as one call per pass.
  """
  hidden_dim: int
  dropout_rate: float
  affinity: str
  dtype: Any
  affinity_kernel: str = 'auto'

  @nn.compact
  def __call__(self, passes_x_BxTxF: Sequence[jax.Array], similarity_BxTx3,
               deterministic: bool) -> list[tuple[jax.Array, jax.Array]]:
    conv = functools.partial(AffinityConv, self.hidden_dim, self.affinity, self.dtype,
                             self.affinity_kernel)
    num_passes = len(passes_x_BxTxF)
    x_PBxTxF = merge_passes(passes_x_BxTxF)
    similarity_PBxTx3 = merge_passes([similarity_BxTx3] * num_passes)
    feature_1 = conv(name='conv_1')(x_PBxTxF, similarity_PBxTx3)
    feature_2 = conv(name='conv_2')(feature_1, similarity_PBxTx3)
    dropout = Dropout(self.dropout_rate)
    return [(feature_1_BxTxH, dropout(feature_2_BxTxH, deterministic=deterministic))
            for feature_1_BxTxH, feature_2_BxTxH in zip(split_passes(feature_1, num_passes),
                                                        split_passes(feature_2, num_passes))]


def merge_passes(passes_Bx___: Sequence[jax.Array]) -> jax.Array:
  """The passes' batches as one batch in which each device keeps its own rows.

  Row order per platform: on TPUs each device's rows of one pass are a whole block, since the
  per-video order costs the TPU compiler copies through a [B, P, T, F] layout (about 14% of the
  step's estimated cycles, benchmarks/RESULTS.md); elsewhere per video, the order that every
  published CPU number was trained with (the weight gradients sum the rows in this order).
  """
  return jax.lax.platform_dependent(*passes_Bx___, default=_merge_per_video,
                                    tpu=_merge_per_device_block)


def split_passes(x_PBx___: jax.Array, num_passes: int) -> list[jax.Array]:
  """The inverse of merge_passes: one [B, ...] array per pass."""
  return jax.lax.platform_dependent(
      x_PBx___, default=functools.partial(_split_per_video, num_passes=num_passes),
      tpu=functools.partial(_split_per_device_block, num_passes=num_passes))


def _merge_per_video(*passes_Bx___):
  x_BxPx___ = jnp.stack(passes_Bx___, axis=1)
  return batch_rows.reshape_rows(x_BxPx___, (-1,) + x_BxPx___.shape[2:])


def _split_per_video(x_BPx___, num_passes):
  x_BxPx___ = batch_rows.reshape_rows(x_BPx___, (-1, num_passes) + x_BPx___.shape[1:])
  return [x_BxPx___[:, p] for p in range(num_passes)]


def _merge_per_device_block(*passes_Bx___):
  shards = batch_rows.batch_shards(passes_Bx___[0])
  blocks = [batch_rows.reshape_rows(x, (shards, -1) + x.shape[1:]) for x in passes_Bx___]
  merged = jnp.concatenate(blocks, axis=1)
  return batch_rows.reshape_rows(merged, (-1,) + merged.shape[2:])


def _split_per_device_block(x_PBx___, num_passes):
  shards = batch_rows.batch_shards(x_PBx___)
  blocks = batch_rows.reshape_rows(x_PBx___, (shards, num_passes, -1) + x_PBx___.shape[1:])
  return [batch_rows.reshape_rows(blocks[:, p], (-1,) + x_PBx___.shape[1:])
          for p in range(num_passes)]


class ClassifierModule(nn.Module):
  """Bias-free kernel-1 convolution to C actions plus the background class."""
  num_outputs: int
  hidden_dim: int
  dtype: Any

  @nn.compact
  def __call__(self, feature_BxTxH):
    return pointwise(self.num_outputs, self.hidden_dim, 'conv', use_bias=False,
                     dtype=self.dtype)(feature_BxTxH)


class BackTAL(nn.Module):
  """BackTAL: a filter module, an embedding, a shared base module applied to x and to the
  foreground-weighted x, and a classifier producing the CAS of C actions plus background."""
  num_classes: int
  feat_dim: int = 2048
  hidden_dim: int = 2048
  filter_dim: int = 512
  embed_hidden_dim: int = 512
  embed_dim: int = 32
  topk_ratio: float = 0.125
  dropout_rate: float = 0.7
  affinity: str = 'official'
  dtype: Any = 'float32'
  affinity_kernel: str = 'auto'  # see backtal_jax.model.affinity_select

  def setup(self):
    affinity.check_affinity(self.affinity)
    affinity_select.check_affinity_kernel(self.affinity_kernel)
    compute_dtype = jnp.dtype(self.dtype)
    # Only the base module (most of the FLOPs and bytes) computes in bfloat16: trained with the
    # filter, embedding and classifier in bfloat16 too, the testbed loses 2-4 points of mAP
    # (benchmarks/RESULTS.md, "bfloat16 vs float32").
    at_least_f32 = jnp.promote_types(compute_dtype, jnp.float32)
    self.filter_module = FilterModule(self.filter_dim, at_least_f32)
    self.embedding_module = EmbeddingModule(self.embed_hidden_dim, self.embed_dim, at_least_f32)
    self.base_module = BaseModule(self.hidden_dim, self.dropout_rate, self.affinity, compute_dtype,
                                  self.affinity_kernel)
    self.classifier_module = ClassifierModule(self.num_classes + 1, self.hidden_dim, at_least_f32)

  def reduced_weights(self, params: Any, platform: str) -> Any:
    """True for the parameters this model also takes typed *reduced* over the batch's mesh axis
    on `platform`: the affinity convolutions' kernels (most of the parameters) where the fused
    kernel runs, whose gradient then stays each device's partial sum (the kernel's own) until the
    train step sums it into each device's share of the update. The XLA form reduces the gradient
    itself, and flax's Dense and Conv add biases to sharded activations, which JAX's types do not
    allow for reduced weights: those take replicated parameters."""
    fused = affinity_select.fused_on(self.affinity_kernel, platform)
    return traverse_util.path_aware_map(
        lambda path, _: fused and path[0] == 'base_module' and path[-1] == 'kernel', params)

  def __call__(self, features_BxTxF: jax.Array, deterministic: bool = True) -> BackTALOutputs:
    if features_BxTxF.shape[-1] != self.feat_dim:
      raise ValueError(f'BackTAL expects {self.feat_dim} feature channels (model.feat_dim), '
                       f'got input of shape {features_BxTxF.shape}')
    x_BxTxF = features_BxTxF.astype(jnp.promote_types(self.dtype, jnp.float32))
    fore_weights_BxTx1 = self.filter_module(x_BxTxF)
    embedding_BxTxE = self.embedding_module(x_BxTxF)
    similarity_BxTx3 = jax.vmap(affinity.neighbour_similarity)(embedding_BxTxE)

    (_, feature_base_2), (feature_supp_1, feature_supp_2) = self.base_module(
        [x_BxTxF, x_BxTxF * fore_weights_BxTx1], similarity_BxTx3, deterministic)
    cas_base = self.classifier_module(feature_base_2)
    cas_supp = self.classifier_module(feature_supp_2)

    k = topk.num_topk(features_BxTxF.shape[1], self.topk_ratio)
    return BackTALOutputs(
        score_base=topk.topk_mean_over_time(cas_base, k),
        score_supp=topk.topk_mean_over_time(cas_supp, k),
        cas_base=cas_base,
        cas_supp=cas_supp,
        embedding=embedding_BxTxE,
        fore_weights=fore_weights_BxTx1,
        feature_supp_1=feature_supp_1,
    )
