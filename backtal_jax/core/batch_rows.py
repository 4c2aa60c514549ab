"""Rows of a batch-sharded array: how many blocks its first axis is split into, and reshapes that
keep that split. The network needs these to lay out its passes, without knowing about the mesh."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np


def batch_shards(x: jax.Array) -> int:
  """How many blocks of rows the first axis of `x` is split into (1 outside a mesh)."""
  typed = jax.typeof(x).sharding
  axes = typed.spec[0] if typed.spec else None
  if axes is None:
    return 1
  axes = axes if isinstance(axes, tuple) else (axes,)
  return int(np.prod([typed.mesh.shape[axis] for axis in axes]))


def reshape_rows(x: jax.Array, shape: Sequence[int]) -> jax.Array:
  """`x` reshaped with its first axis's sharding kept on the first axis.

  Left to itself, explicit sharding moves the split to the next axis when the first one has
  size 1 (a one-device mesh), and drops it when such an axis is merged back.
  """
  rows = jax.typeof(x).sharding.spec
  if not rows or rows[0] is None:
    return x.reshape(shape)
  return jnp.reshape(x, shape, out_sharding=P(rows[0]))
