"""backtal_jax against the official PyTorch BackTAL: outputs, every loss term, every gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from backtal_jax.model import losses
from backtal_jax.model import network
from backtal_jax.model import official_weights
from tests import reference

OUTPUTS = ('score_base', 'score_supp', 'cas_base', 'cas_supp', 'embedding', 'fore_weights')
LOSS_TERMS = {'base': 'loss/loss_base', 'supp': 'loss/loss_supp', 'norm': 'loss/loss_norm',
              'click': 'loss/click', 'separation': 'loss/separation', 'embedding': 'loss/affinity'}
TOLERANCE = {'float64': 1e-8, 'float32': 1e-4}


def relative_error(ours, ref) -> float:
  """The larger of the norm-relative error and the largest element's error relative to the
  largest reference element, so that neither a few bad elements nor a bad norm pass."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, (ours.shape, ref.shape)
  by_norm = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
  by_element = np.max(np.abs(ours - ref)) / np.max(np.abs(ref))
  return float(max(by_norm, by_element))


def run_model(fixture, dtype):
  """Outputs, loss terms and parameter gradients of backtal_jax on the fixture's inputs."""
  config = reference.config_for(fixture, dtype)
  model = network.BackTAL(**config.model)
  params = jax.tree.map(lambda p: jnp.asarray(p, dtype),
                        official_weights.params_from_torch(reference.torch_state_dict(fixture)))
  features = jnp.asarray(reference.channels_last(fixture['input/features']), dtype)
  labels = jnp.asarray(fixture['input/label'], dtype)
  clicks = jnp.asarray(fixture['input/click_label'], jnp.int32)

  def loss_fn(p):
    outputs = model.apply({'params': p}, features, deterministic=True)
    total, terms = losses.backtal_loss(outputs, labels, clicks, config)
    return total, (outputs, terms)

  (total, (outputs, terms)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  return total, outputs, terms, grads


@pytest.fixture(params=['float64', 'float32'])
def dtype(request):
  with jax.enable_x64(request.param == 'float64'):
    yield request.param


@pytest.mark.parametrize('name', reference.FIXTURES)
def test_matches_official(name, dtype):
  fixture = reference.load(name)
  total, outputs, terms, grads = run_model(fixture, dtype)
  tol = TOLERANCE[dtype]
  errors = {}
  for key in OUTPUTS:
    ref = fixture[f'output/{key}']
    ref_BxTxX = ref if ref.ndim == 2 else reference.channels_last(ref)
    errors[key] = relative_error(outputs[key], ref_BxTxX)
  errors['eval/feature_supp_1'] = relative_error(
      outputs.feature_supp_1, reference.channels_last(fixture['eval/feature_supp_1']))
  errors['eval/score_supp_softmax'] = relative_error(
      jax.nn.softmax(outputs.score_supp, axis=-1), fixture['eval/score_supp_softmax'])
  for term, key in LOSS_TERMS.items():
    errors[key] = relative_error(terms[term], fixture[key])
  errors['loss/total'] = relative_error(total, fixture['loss/total'])
  ref_grads = official_weights.params_from_torch(reference.torch_state_dict(fixture, 'grad/'))
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    ref_grad = ref_grads
    for entry in path:
      ref_grad = ref_grad[entry.key]
    errors['grad' + jax.tree_util.keystr(path)] = relative_error(grad, ref_grad)
  too_far = {key: err for key, err in errors.items() if not err <= tol}
  assert not too_far, f'relative error above {tol}: {too_far}'


# bfloat16 keeps 8 significant bits (a relative step of 2**-8); the network's outputs pass through a
# few such roundings, while the losses are computed in float32 from them.
BFLOAT16_OUTPUT_TOLERANCE = 8 * 2**-8
BFLOAT16_LOSS_TOLERANCE = 2**-9


@pytest.mark.parametrize('name', reference.FIXTURES)
def test_bfloat16_compute_stays_near_the_official_float32(name):
  fixture = reference.load(name)
  config = reference.config_for(fixture, 'bfloat16')
  model = network.BackTAL(**config.model)
  params = official_weights.params_from_torch(reference.torch_state_dict(fixture))  # float32
  features = jnp.asarray(reference.channels_last(fixture['input/features']), jnp.float32)
  outputs = model.apply({'params': params}, features, deterministic=True)
  assert outputs.feature_supp_1.dtype == jnp.bfloat16  # the base module computes in bfloat16
  _, terms = losses.backtal_loss(outputs, jnp.asarray(fixture['input/label'], jnp.float32),
                                 jnp.asarray(fixture['input/click_label'], jnp.int32), config)
  errors = {}
  for key in OUTPUTS:
    ref = fixture[f'output/{key}']
    ref_BxTxX = ref if ref.ndim == 2 else reference.channels_last(ref)
    errors[key] = relative_error(outputs[key], ref_BxTxX)
  too_far = {k: e for k, e in errors.items() if not e <= BFLOAT16_OUTPUT_TOLERANCE}
  too_far.update({term: relative_error(terms[term], fixture[key])
                  for term, key in LOSS_TERMS.items()
                  if not relative_error(terms[term], fixture[key]) <= BFLOAT16_LOSS_TOLERANCE})
  assert not too_far, too_far
