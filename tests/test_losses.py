"""Loss behaviour beyond the fixtures: masks, missing clicks, action clicks, a single compile."""

import jax
import jax.numpy as jnp
import numpy as np

from backtal_jax.core.labels import IGNORE_LABEL
from backtal_jax.model import losses
from backtal_jax.model import network
from backtal_jax.model import official_weights
from tests import reference


def fixture_model(name='model_anet_small'):
  fixture = reference.load(name)
  config = reference.config_for(fixture, 'float32')
  model = network.BackTAL(**config.model)
  params = official_weights.params_from_torch(reference.torch_state_dict(fixture))
  features = jnp.asarray(reference.channels_last(fixture['input/features']), jnp.float32)
  labels = jnp.asarray(fixture['input/label'], jnp.float32)
  clicks = jnp.asarray(fixture['input/click_label'], jnp.int32)
  return config, model, params, features, labels, clicks


def test_batch_without_any_click_gives_finite_loss_and_gradients():
  config, model, params, features, labels, clicks = fixture_model()
  no_clicks = jnp.full_like(clicks, IGNORE_LABEL)

  def loss_fn(p):
    outputs = model.apply({'params': p}, features)
    return losses.backtal_loss(outputs, labels, no_clicks, config)

  (total, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  assert np.isfinite(total)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(grads))
  assert terms['click'] == 0 and terms['separation'] == 0 and terms['embedding'] == 0
  _, with_clicks = losses.backtal_loss(model.apply({'params': params}, features), labels, clicks,
                                       config)
  for name in ('base', 'supp', 'norm'):  # the terms that never read a click are unchanged
    np.testing.assert_array_equal(terms[name], with_clicks[name], err_msg=name)


def test_padded_batch_gives_the_official_loss_of_the_real_videos():
  """The official loss over 4 videos (fixture) equals ours over them plus 3 masked padding rows."""
  fixture = reference.load('model_anet_small')
  with jax.enable_x64(True):
    config = reference.config_for(fixture, 'float64')
    model = network.BackTAL(**config.model)
    params = official_weights.params_from_torch(reference.torch_state_dict(fixture))
    features = jnp.asarray(reference.channels_last(fixture['input/features']))
    labels = jnp.asarray(fixture['input/label'])
    clicks = jnp.asarray(fixture['input/click_label'], jnp.int32)
    pad = 3
    padded_features = jnp.concatenate([features, jnp.zeros((pad,) + features.shape[1:])])
    padded_labels = jnp.concatenate([labels, jnp.zeros((pad, labels.shape[1]))])
    padded_clicks = jnp.concatenate([clicks, jnp.full((pad, clicks.shape[1]), IGNORE_LABEL)])
    mask = jnp.concatenate([jnp.ones(len(features)), jnp.zeros(pad)])
    outputs = model.apply({'params': params}, padded_features)
    total, terms = losses.backtal_loss(outputs, padded_labels, padded_clicks, config, mask)
    np.testing.assert_allclose(total, fixture['loss/total'], rtol=1e-10)
    np.testing.assert_allclose(terms['embedding'], fixture['loss/affinity'], rtol=1e-10)
    unmasked, _ = losses.backtal_loss(outputs, padded_labels, padded_clicks, config)
    assert abs(float(unmasked) - float(fixture['loss/total'])) > 1e-3  # the mask matters


def test_click_loss_counts_action_clicks_with_their_class():
  cas = jnp.log(jnp.asarray([[[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]]))
  clicks = jnp.asarray([[0, IGNORE_LABEL, 2]])
  loss = losses.click_loss(cas, clicks, jnp.ones(1))
  np.testing.assert_allclose(loss, -(np.log(0.7) + np.log(0.6)) / 2, rtol=1e-6)


def test_affinity_counts_a_frame_once_per_class_that_selects_it():
  cas = jnp.asarray([[[5., 5., 0.], [1., 0., 0.], [0., 1., 0.], [0., 0., 0.]]])
  counts = losses.topk_frame_counts(cas, jnp.asarray([[1., 1.]]), k=2)
  np.testing.assert_array_equal(counts, [[2, 1, 1, 0]])
  counts_one_class = losses.topk_frame_counts(cas, jnp.asarray([[0., 1.]]), k=2)
  np.testing.assert_array_equal(counts_one_class, [[1, 0, 1, 0]])


def test_loss_and_gradient_compile_once_per_shape():
  config, model, params, features, labels, clicks = fixture_model()
  traces = []

  @jax.jit
  def loss_and_grad(p, x, y, c):
    traces.append(None)
    loss_fn = lambda q: losses.backtal_loss(model.apply({'params': q}, x), y, c, config)[0]
    return jax.value_and_grad(loss_fn)(p)

  for step in range(3):
    loss_and_grad(params, features + step, labels, clicks)
  assert len(traces) == 1
  loss_and_grad(params, features[:2], labels[:2], clicks[:2])
  assert len(traces) == 2
