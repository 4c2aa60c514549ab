"""Official state dicts and .pth files -> backtal_jax parameters."""

import jax
import numpy as np
import pytest

from backtal_jax import checkpoint, models
from tests import reference


def state_dict():
  return reference.torch_state_dict(reference.load('model_thumos_small'))


def test_parameters_have_the_shapes_the_model_expects():
  fixture = reference.load('model_thumos_small')
  config = reference.config_for(fixture, 'float32')
  model = models.BackTAL(**config.model)
  features = np.zeros((1, 16, config.model.feat_dim), np.float32)
  expected = jax.eval_shape(model.init, jax.random.key(0), features)['params']
  params = checkpoint.params_from_torch(state_dict())
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  for ours, ref in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    assert ours.shape == ref.shape


def test_module_prefix_and_torch_tensors_are_accepted():
  torch = pytest.importorskip('torch')
  plain = checkpoint.params_from_torch(state_dict())
  wrapped = {f'module.{k}': torch.from_numpy(v) for k, v in state_dict().items()}
  ours_leaves = jax.tree.leaves(checkpoint.params_from_torch(wrapped))
  for ours, ref in zip(ours_leaves, jax.tree.leaves(plain)):
    np.testing.assert_array_equal(ours, ref)


def test_every_problem_is_named():
  broken = state_dict()
  del broken['base_module.conv_2.weight']
  broken['base_module.conv_3.weight'] = np.zeros((2, 2, 3))
  with pytest.raises(checkpoint.CheckpointError) as error:
    checkpoint.params_from_torch(broken)
  assert 'missing parameter base_module.conv_2.weight' in str(error.value)
  assert 'unexpected parameter base_module.conv_3.weight' in str(error.value)


def test_mis_shaped_parameters_are_named():
  broken = state_dict()
  broken['classifier_module.conv.weight'] = np.zeros((21, 63, 1))
  broken['embedding_module.conv_1.bias'] = np.zeros(7)
  with pytest.raises(checkpoint.CheckpointError) as error:
    checkpoint.params_from_torch(broken)
  assert 'embedding_module.conv_1.bias has shape (7,)' in str(error.value)
  broken['embedding_module.conv_1.bias'] = state_dict()['embedding_module.conv_1.bias']
  with pytest.raises(checkpoint.CheckpointError, match='classifier_module.conv.weight reads 63'):
    checkpoint.params_from_torch(broken)


@pytest.mark.parametrize('nested', [False, True])
def test_official_pth_file(tmp_path, nested):
  torch = pytest.importorskip('torch')
  tensors = {k: torch.from_numpy(v) for k, v in state_dict().items()}
  path = tmp_path / 'THUMOS14_best.pth'
  torch.save({'epoch': 12, 'state_dict': tensors} if nested else tensors, path)
  params = checkpoint.load_official_checkpoint(path)
  expected = checkpoint.params_from_torch(state_dict())
  for ours, ref in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(ours, ref)


def test_restore_params_reads_official_pth_files(tmp_path):
  torch = pytest.importorskip('torch')
  path = tmp_path / 'best.pth'
  torch.save({'state_dict': {k: torch.from_numpy(v) for k, v in state_dict().items()}}, path)
  params = checkpoint.restore_params(str(path), params_like=None)
  for ours, ref in zip(jax.tree.leaves(params), jax.tree.leaves(checkpoint.params_from_torch(
      state_dict()))):
    np.testing.assert_array_equal(ours, ref)


def test_unreadable_pth_file_names_the_path(tmp_path):
  pytest.importorskip('torch')
  path = tmp_path / 'broken.pth'
  path.write_bytes(b'not a checkpoint')
  with pytest.raises(checkpoint.CheckpointError, match='broken.pth'):
    checkpoint.load_official_checkpoint(path)
