"""Which implementation of the affinity convolution runs where (`model.affinity_kernel`).

- 'auto' (the default): on TPUs the fused Pallas kernel (backtal_jax.model.affinity_pallas), which
  writes no group outputs; on CPUs and GPUs the XLA form (backtal_jax.model.affinity), the one every
  published CPU number was trained with.
- 'xla': the XLA form everywhere (on TPUs too, for comparison).
- 'pallas': the kernel everywhere; off TPUs it runs in TPU interpret mode, exact but slow: for
  tests on the CPU, not for training.

float64 always takes the XLA form: the kernel accumulates in float32 (and TPUs have no float64).
So does a batch that is not split over a mesh of several devices (the network's initialisation on
a one-video dummy batch): the kernel runs per device on its own videos.
The choice per platform is made when the program is lowered (`jax.lax.platform_dependent`), so
that a step compiled on a CPU host for a TPU slice (benchmarks/tpu_compile.py) gets the kernel.
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from backtal_jax.core import batch_rows
from backtal_jax.core import fields
from backtal_jax.model import affinity
from backtal_jax.model import affinity_pallas

AFFINITY_KERNELS = ('auto', 'xla', 'pallas')
CONFIG_FIELDS = {'model.affinity_kernel': fields.choice(*AFFINITY_KERNELS)}


def check_affinity_kernel(affinity_kernel: str) -> None:
  fields.check('model.affinity_kernel', affinity_kernel, CONFIG_FIELDS)


def _replicated_on_a_mesh(x_BxTxI: jax.Array) -> bool:
  mesh = jax.typeof(x_BxTxI).sharding.mesh
  return not mesh.empty and mesh.size > 1 and batch_rows.batch_shards(x_BxTxI) == 1


def fused_on(affinity_kernel: str, platform: str) -> bool:
  """Whether `affinity_kernel` picks the fused kernel on `platform` ('tpu', 'cpu', 'gpu') for a
  float32 or bfloat16 batch split over the mesh."""
  return affinity_kernel == 'pallas' or (affinity_kernel == 'auto' and platform == 'tpu')


def _is_reduced(x: jax.Array) -> bool:
  return bool(jax.typeof(x).sharding.spec.reduced)


def affinity_conv(x_BxTxI: jax.Array, similarity_BxTx3: jax.Array, kernel_KxIxO: jax.Array, *,
                  affinity_form: str = 'official', affinity_kernel: str = 'auto',
                  precision=None, negative_slope: float | None = None) -> jax.Array:
  """The affinity convolution of a batch, [B, T, I] -> [B, T, O], by the chosen implementation;
  with `negative_slope`, followed by LeakyReLU (inside the kernel, or after the XLA form)."""
  check_affinity_kernel(affinity_kernel)

  def xla(x_BxTxI, similarity_BxTx3, kernel_KxIxO):
    # A reduced kernel (network.BackTAL.reduced_weights: when the fused kernel was expected) as
    # the replicated one the XLA form's element-wise products need: correct, but its gradient is
    # then all-reduced here, and summed again where the train step sums the kernel's.
    kernel_KxIxO = jax.reshard(kernel_KxIxO, P()) if _is_reduced(kernel_KxIxO) else kernel_KxIxO
    out = affinity.affinity_conv(x_BxTxI, similarity_BxTx3, kernel_KxIxO, affinity=affinity_form,
                                 precision=precision)
    return out if negative_slope is None else jax.nn.leaky_relu(out, negative_slope)

  if (not fused_on(affinity_kernel, 'tpu') or x_BxTxI.dtype == jnp.float64 or
      _replicated_on_a_mesh(x_BxTxI)):
    return xla(x_BxTxI, similarity_BxTx3, kernel_KxIxO)
  fused = functools.partial(affinity_pallas.fused_affinity_conv, affinity=affinity_form,
                            precision=precision, negative_slope=negative_slope)
  # CPUs and GPUs alike (fused_on says the same for both): the kernel interpreted, or the XLA form.
  elsewhere = functools.partial(fused, interpret=True) if fused_on(affinity_kernel, 'cpu') else xla
  return jax.lax.platform_dependent(x_BxTxI, similarity_BxTx3, kernel_KxIxO, default=elsewhere,
                                    tpu=fused)
