"""Official state dicts and .pth files -> backtal_jax parameters."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from backtal_jax.data import pipeline
from backtal_jax.model import network
from backtal_jax.model import official_weights
from backtal_jax.run import checkpoint
from backtal_jax.run import history
from backtal_jax.run import train_state
from tests import reference


def state_dict():
  return reference.torch_state_dict(reference.load('model_thumos_small'))


def test_parameters_have_the_shapes_the_model_expects():
  fixture = reference.load('model_thumos_small')
  config = reference.config_for(fixture, 'float32')
  model = network.BackTAL(**config.model)
  features = np.zeros((1, 16, config.model.feat_dim), np.float32)
  expected = jax.eval_shape(model.init, jax.random.key(0), features)['params']
  params = official_weights.params_from_torch(state_dict())
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  for ours, ref in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    assert ours.shape == ref.shape


def test_module_prefix_and_torch_tensors_are_accepted():
  torch = pytest.importorskip('torch')
  plain = official_weights.params_from_torch(state_dict())
  wrapped = {f'module.{k}': torch.from_numpy(v) for k, v in state_dict().items()}
  ours_leaves = jax.tree.leaves(official_weights.params_from_torch(wrapped))
  for ours, ref in zip(ours_leaves, jax.tree.leaves(plain)):
    np.testing.assert_array_equal(ours, ref)


def test_every_problem_is_named():
  broken = state_dict()
  del broken['base_module.conv_2.weight']
  broken['base_module.conv_3.weight'] = np.zeros((2, 2, 3))
  with pytest.raises(official_weights.CheckpointError) as error:
    official_weights.params_from_torch(broken)
  assert 'missing parameter base_module.conv_2.weight' in str(error.value)
  assert 'unexpected parameter base_module.conv_3.weight' in str(error.value)


def test_mis_shaped_parameters_are_named():
  broken = state_dict()
  broken['classifier_module.conv.weight'] = np.zeros((21, 63, 1))
  broken['embedding_module.conv_1.bias'] = np.zeros(7)
  with pytest.raises(official_weights.CheckpointError) as error:
    official_weights.params_from_torch(broken)
  assert 'embedding_module.conv_1.bias has shape (7,)' in str(error.value)
  broken['embedding_module.conv_1.bias'] = state_dict()['embedding_module.conv_1.bias']
  with pytest.raises(official_weights.CheckpointError,
                     match='classifier_module.conv.weight reads 63'):
    official_weights.params_from_torch(broken)


@pytest.mark.parametrize('nested', [False, True])
def test_official_pth_file(tmp_path, nested):
  torch = pytest.importorskip('torch')
  tensors = {k: torch.from_numpy(v) for k, v in state_dict().items()}
  path = tmp_path / 'THUMOS14_best.pth'
  torch.save({'epoch': 12, 'state_dict': tensors} if nested else tensors, path)
  params = official_weights.load_official_checkpoint(path)
  expected = official_weights.params_from_torch(state_dict())
  for ours, ref in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(ours, ref)


def fixture_config():
  return reference.config_for(reference.load('model_thumos_small'), 'float32')


def params_like(config):
  """What restore_params restores into: the shapes of the config's model parameters."""
  return official_weights.model_param_shapes(config)


def test_restore_params_reads_official_pth_files(tmp_path):
  torch = pytest.importorskip('torch')
  path = tmp_path / 'best.pth'
  torch.save({'state_dict': {k: torch.from_numpy(v) for k, v in state_dict().items()}}, path)
  params = checkpoint.restore_params(str(path), params_like(fixture_config()))
  for ours, ref in zip(jax.tree.leaves(params), jax.tree.leaves(official_weights.params_from_torch(
      state_dict()))):
    np.testing.assert_array_equal(ours, ref)


def test_unreadable_pth_file_names_the_path(tmp_path):
  pytest.importorskip('torch')
  path = tmp_path / 'broken.pth'
  path.write_bytes(b'not a checkpoint')
  with pytest.raises(official_weights.CheckpointError, match='broken.pth'):
    official_weights.load_official_checkpoint(path)


def test_pth_widths_are_checked_against_the_config(tmp_path):
  torch = pytest.importorskip('torch')
  path = tmp_path / 'best.pth'
  torch.save({'state_dict': {k: torch.from_numpy(v) for k, v in state_dict().items()}}, path)
  config = fixture_config()
  found_hidden, feat = config.model.hidden_dim, config.model.feat_dim
  config.model.hidden_dim = found_hidden + 8
  with pytest.raises(official_weights.CheckpointError) as error:
    checkpoint.restore_params(str(path), params_like(config))
  assert str(error.value) == (
      f"{path}: parameter base_module.conv_1.weight has shape ({found_hidden}, {feat}, 3), but "
      f"the config's model expects ({found_hidden + 8}, {feat}, 3); the widths come from "
      'config.model (num_classes, feat_dim, hidden_dim, filter_dim, embed_hidden_dim, embed_dim)')


def test_orbax_widths_are_checked_before_restoring(tmp_path):
  saved_config, wider_config = fixture_config(), fixture_config()
  wider_config.model.embed_dim += 4

  def state(params):
    return train_state.TrainState(step=jnp.ones((), jnp.int32), params=params, opt_state=(),
                            rng=jnp.zeros(2, jnp.uint32))

  saved = state(jax.tree.map(jnp.asarray, official_weights.params_from_torch(state_dict())))
  wider = state(official_weights.model_param_shapes(wider_config))
  checkpoints = checkpoint.Checkpoints(str(tmp_path))
  checkpoints.save(saved, history.CheckpointRecord(pipeline.DataPosition(1, 0)), is_best=True)
  checkpoints.wait_until_finished()
  hidden, embed = saved_config.model.embed_hidden_dim, saved_config.model.embed_dim
  expected = (f'parameter embedding_module/conv_2/bias has shape ({embed},), but the '
              f"config's model expects ({embed + 4},)")
  with pytest.raises(official_weights.CheckpointError,
                     match=rf'checkpoints/1: {re.escape(expected)}'):
    checkpoints.restore_latest(wider)
  with pytest.raises(official_weights.CheckpointError,
                     match=rf'best/epoch_1 \(--checkpoint\): {re.escape(expected)}'):
    checkpoint.restore_params(str(tmp_path / 'best'), wider.params, flag='--checkpoint')
  restored, _ = checkpoints.restore_latest(
      state(official_weights.model_param_shapes(saved_config)))
  assert restored.params['embedding_module']['conv_2']['kernel'].shape == (3, hidden, embed)
  checkpoints.close()
