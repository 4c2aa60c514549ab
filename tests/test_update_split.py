"""The optimiser's update split over the devices: each updates its share, and no bit changes."""

import functools

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest

from backtal_jax.core import sharding
from backtal_jax.run import checkpoint
from backtal_jax.run import history
from backtal_jax.run import optimizer
from backtal_jax.run import train
from backtal_jax.run import train_state
from benchmarks import train_step as train_step_benchmark
from tests import devices

DEVICE_COUNTS = [pytest.param(1, marks=pytest.mark.one_device), 4]


@hypothesis.given(shape=st.lists(st.integers(1, 12), max_size=4), num_devices=st.integers(1, 8))
def test_the_update_splits_the_first_axis_that_divides(shape, num_devices):
  spec = sharding.update_spec(shape, num_devices)
  divides = [size % num_devices == 0 for size in shape]
  if not any(divides) or num_devices == 1:
    assert spec == P()
  else:
    axis = divides.index(True)
    assert spec == P(*(None,) * axis, 'data')


@pytest.mark.parametrize('num_devices', DEVICE_COUNTS)
def test_an_unreduced_gradient_is_summed_into_the_shares_by_one_reduce_scatter(num_devices):
  """The gradient of reduced weights, summed into each device's share, equals the share of the
  replicated weights' gradient; the program sums it with a reduce-scatter, not an all-reduce."""
  mesh = sharding.make_mesh(devices.first_devices(num_devices))
  loss = lambda w, x: jnp.sum(jnp.tanh(x @ w))

  def summed_share(w, x):
    unreduced = jax.grad(loss)(sharding.reduced_over_data(w), x)
    assert jax.typeof(unreduced).sharding.spec.unreduced == {'data'}
    return sharding.update_share(unreduced, num_devices)

  with jax.set_mesh(mesh):
    x = jax.device_put(jax.random.normal(jax.random.key(0), (8, 6)), P('data'))
    w = jax.device_put(jax.random.normal(jax.random.key(1), (6, 8)), P())
    summed = jax.jit(summed_share)(w, x)
    sliced = jax.jit(lambda w, x: sharding.update_share(jax.grad(loss)(w, x), num_devices))(w, x)
    hlo = jax.jit(summed_share).lower(w, x).compile().as_text()
  # Split along axis 1 on four devices (6 does not divide), whole on one.
  for result in (summed, sliced):
    assert result.sharding.is_equivalent_to(sharding.update_sharding((6, 8), mesh), 2)
  assert {s.data.shape for s in summed.addressable_shards} == {(6, 8 // num_devices)}
  np.testing.assert_allclose(summed, sliced, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(summed, jax.grad(loss)(np.asarray(w), np.asarray(x)), rtol=1e-6,
                             atol=1e-6)
  if num_devices > 1:
    assert hlo.count(' reduce-scatter(') == 1 and ' all-reduce(' not in hlo


def small_config(batch: int):
  """THUMOS14's model at width 64 on 16 frames."""
  return train_step_benchmark.benchmark_config('thumos14', (batch, 16, 64), 'float32')


def replicated_update(state, batch, *, model, tx, config):
  """The step as it was before the update was split: every device updates every parameter."""
  loss_fn = functools.partial(train.step_loss, state=state, batch=batch, model=model,
                              config=config)
  (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state), {'loss': loss, 'grad_norm': optax.tree.norm(grads)}


@pytest.mark.parametrize('platform', ['cpu', 'tpu'])
@pytest.mark.parametrize('num_devices', DEVICE_COUNTS)
def test_the_split_update_gives_the_replicated_updates_bits(num_devices, platform):
  """Two steps of train.train_step against the unsplit update, bit for bit: parameters, moments
  and loss. 'tpu' takes the affinity kernels' weights reduced (as where the fused kernel runs),
  here through the XLA form on the CPU. Each device holds its share of the moments only."""
  config = small_config(batch=4)
  mesh = sharding.make_mesh(devices.first_devices(num_devices))
  with jax.set_mesh(mesh):
    model = train_state.make_model(config)
    tx = optimizer.official_adam(config.train)
    state = train_state.create_train_state(config, model, tx, mesh)
    reference = jax.device_put(state, sharding.replicated_sharding(mesh))
    split_step = jax.jit(lambda s, b: train.train_step(
        s, b, model=model, tx=tx, config=config, num_devices=num_devices, platform=platform))
    reference_step = jax.jit(lambda s, b: replicated_update(s, b, model=model, tx=tx,
                                                            config=config))
    for seed in range(2):
      batch = sharding.to_global_batch(train_step_benchmark.random_batch(seed, config),
                                       sharding.batch_sharding(mesh))
      state, metrics = split_step(state, batch)
      reference, reference_metrics = reference_step(reference, batch)
      assert float(metrics['loss']) == float(reference_metrics['loss'])
  for new, old in zip(jax.tree.leaves((state.params, state.opt_state)),
                      jax.tree.leaves((reference.params, reference.opt_state))):
    np.testing.assert_array_equal(new, old)
  assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state.params))
  moments = state.opt_state[1].mu['base_module']['conv_1']['kernel']  # [3, 64, 64]: axis 1
  assert moments.sharding.is_equivalent_to(sharding.update_sharding(moments.shape, mesh), 3)
  assert {s.data.shape for s in moments.addressable_shards} == {(3, 64 // num_devices, 64)}


def test_a_checkpoint_of_split_moments_resumes_on_another_device_count(tmp_path):
  """Saved with the moments split over four devices, restored over two: the same values, each
  moment split as two devices split it."""
  config = small_config(batch=4)
  model = train_state.make_model(config)
  tx = optimizer.official_adam(config.train)
  states = {}
  for count in (4, 2):
    mesh = sharding.make_mesh(devices.first_devices(count))
    with jax.set_mesh(mesh):
      state = train_state.create_train_state(config, model, tx, mesh)
      saver = checkpoint.Checkpoints(str(tmp_path))
      if count == 4:
        batch = sharding.to_global_batch(train_step_benchmark.random_batch(0, config),
                                         sharding.batch_sharding(mesh))
        state, _ = train.jit_train_step(model, tx, config, mesh, state)(state, batch)
        saver.save(state, history.CheckpointRecord())
        saver.wait_until_finished()
      else:
        state, _ = saver.restore_latest(state)
      saver.close()
    states[count] = state
  for saved, restored in zip(jax.tree.leaves(states[4]), jax.tree.leaves(states[2])):
    np.testing.assert_array_equal(saved, restored)
  moments = states[2].opt_state[1].nu['base_module']['conv_2']['kernel']
  assert float(jnp.abs(moments).max()) > 0  # a step was taken: not the zeros of a fresh state
  assert {s.data.shape for s in moments.addressable_shards} == {(3, 32, 64)}


def test_a_state_with_replicated_moments_is_refused_naming_the_field():
  config = small_config(batch=4)
  mesh = sharding.make_mesh(devices.first_devices(4))
  with jax.set_mesh(mesh):
    model = train_state.make_model(config)
    tx = optimizer.official_adam(config.train)
    state = train_state.create_train_state(config, model, tx, mesh)
    train.jit_train_step(model, tx, config, mesh, state)  # the state as built: accepted
    replicated = jax.device_put(state, sharding.replicated_sharding(mesh))
    with pytest.raises(ValueError, match=r"state\.opt_state\[1\]\.mu\['base_module'\]\['conv_1'\]"
                       r"\['kernel'\] is laid out as P\(\); the train step takes it as "
                       r"P\(None, 'data'\)"):
      train.jit_train_step(model, tx, config, mesh, replicated)
