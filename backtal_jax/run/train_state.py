"""The state a run trains and checkpoints, and how it is first built on the mesh."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from backtal_jax.core import sharding
from backtal_jax.model import network


class TrainState(flax.struct.PyTreeNode):
  """Everything a resumed run needs besides the data position."""
  step: jax.Array  # optimiser steps taken
  params: Any
  opt_state: optax.OptState
  rng: jax.Array  # raw key data; the dropout key of step s is fold_in(rng, s)


def make_model(config: ml_collections.ConfigDict) -> network.BackTAL:
  return network.BackTAL(**config.model)


def abstract_params(config: ml_collections.ConfigDict, model: network.BackTAL,
                    mesh: jax.sharding.Mesh) -> Any:
  """Shapes, dtypes and replicated shardings of the parameters: a restore target for evaluation
  and prediction, built without initialising anything."""
  features = jax.ShapeDtypeStruct((1, config.data.num_segments, config.model.feat_dim),
                                  jnp.float32)
  shapes = jax.eval_shape(lambda rng: model.init(rng, jnp.zeros(features.shape))['params'],
                          jax.random.key(0))
  replicated = sharding.replicated_sharding(mesh)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                      shapes)


def create_train_state(config: ml_collections.ConfigDict, model: network.BackTAL,
                       tx: optax.GradientTransformation, mesh: jax.sharding.Mesh) -> TrainState:
  """Initialised state, built directly with its shardings (the big_vision way)."""
  features_shape = (1, config.data.num_segments, config.model.feat_dim)

  def init(rng):
    params_rng, dropout_rng = jax.random.split(rng)
    params = model.init(params_rng, jnp.zeros(features_shape, jnp.float32))['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.key_data(dropout_rng))

  rng = jax.random.key(config.train.seed)
  return jax.jit(init, out_shardings=state_shardings(jax.eval_shape(init, rng), mesh))(rng)


def state_shardings(state: TrainState, mesh: jax.sharding.Mesh) -> TrainState:
  """Where each part of the state (or of its shapes) lives: the optimiser's moments split as its
  update is (sharding.update_spec), everything else replicated."""
  replicated = sharding.replicated_sharding(mesh)
  return TrainState(
      step=replicated, params=jax.tree.map(lambda _: replicated, state.params),
      opt_state=jax.tree.map(lambda x: sharding.update_sharding(x.shape, mesh), state.opt_state),
      rng=replicated)


def check_layout(state: TrainState, mesh: jax.sharding.Mesh) -> None:
  """Raises if an array of `state` is not laid out as state_shardings says (a state built by hand
  with replicated moments, say), naming the first such field, before the step is compiled."""
  wanted = jax.tree.leaves(state_shardings(state, mesh))
  for (path, leaf), want in zip(jax.tree_util.tree_flatten_with_path(state)[0], wanted):
    have = getattr(leaf, 'sharding', None)
    if have is not None and not have.is_equivalent_to(want, len(leaf.shape)):
      raise ValueError(
          f'state{jax.tree_util.keystr(path)} is laid out as {have.spec}; the train step takes it '
          f'as {want.spec} (Adam\'s moments split over the devices, everything else replicated). '
          'Build the state with train_state.create_train_state, or restore a checkpoint into one.')
