"""The official PyTorch weights: state dicts and .pth files as BackTAL parameters.

The official modules are Conv1d layers with weights [out, in, k]; backtal_jax keeps Flax layouts
(Dense kernels [in, out], Conv kernels [k, in, out]) under the same module names. .pth files are
read by `torch_pickle`, without PyTorch. Every restore, official or orbax, first compares the
checkpoint's parameter shapes with the config's model (`check_param_shapes`), so that a width
mismatch is one message naming the parameter, not a deep Flax or tensorstore error.
"""

import pathlib
from typing import Any
from typing import Mapping

import jax
import ml_collections
import numpy as np

from backtal_jax.core import errors
from backtal_jax.model import network
from backtal_jax.model import torch_pickle

_LAYERS = {
    'filter_module.conv_1.0': (('filter_module', 'conv_1'), 1, True),
    'filter_module.conv_2.0': (('filter_module', 'conv_2'), 1, True),
    'embedding_module.conv_1': (('embedding_module', 'conv_1'), 3, True),
    'embedding_module.conv_2': (('embedding_module', 'conv_2'), 3, True),
    'base_module.conv_1': (('base_module', 'conv_1'), 3, False),
    'base_module.conv_2': (('base_module', 'conv_2'), 3, False),
    'classifier_module.conv': (('classifier_module', 'conv'), 1, False),
}


_CHAINED = [
    ('filter_module.conv_1.0', 'filter_module.conv_2.0'),
    ('embedding_module.conv_1', 'embedding_module.conv_2'),
    ('base_module.conv_1', 'base_module.conv_2'),
    ('base_module.conv_2', 'classifier_module.conv'),
]


_FEATURE_READERS = ['filter_module.conv_1.0', 'embedding_module.conv_1', 'base_module.conv_1']


class CheckpointError(errors.UserError):
  """A state dict that does not describe a BackTAL network."""


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, 'detach'):  # a torch tensor, when the caller passes a state dict of them
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def expected_names() -> list[str]:
  names = []
  for prefix, (_, _, has_bias) in _LAYERS.items():
    names.append(prefix + '.weight')
    if has_bias:
      names.append(prefix + '.bias')
  return names


def _strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  return {name.removeprefix('module.'): _to_numpy(value) for name, value in state_dict.items()}


def _shape_problems(weights: Mapping[str, np.ndarray]) -> list[str]:
  problems = []
  for prefix, (_, kernel_size, has_bias) in _LAYERS.items():
    weight = weights[prefix + '.weight']
    if weight.ndim != 3 or weight.shape[2] != kernel_size:
      problems.append(f'{prefix}.weight has shape {weight.shape}, expected '
                      f'[out, in, {kernel_size}]')
    elif has_bias and weights[prefix + '.bias'].shape != (weight.shape[0],):
      problems.append(f'{prefix}.bias has shape {weights[prefix + ".bias"].shape}, expected '
                      f'({weight.shape[0]},)')
  if problems:
    return problems
  for producer, consumer in _CHAINED:
    out_width = weights[producer + '.weight'].shape[0]
    in_width = weights[consumer + '.weight'].shape[1]
    if out_width != in_width:
      problems.append(f'{consumer}.weight reads {in_width} channels but {producer} gives '
                      f'{out_width}')
  feature_widths = {name: weights[name + '.weight'].shape[1] for name in _FEATURE_READERS}
  if len(set(feature_widths.values())) > 1:
    problems.append(f'layers disagree on the feature width: {feature_widths}')
  if weights['filter_module.conv_2.0.weight'].shape[0] != 1:
    problems.append('filter_module.conv_2.0.weight must have 1 output channel')
  return problems


def _flax_kernel(weight_OxIxK: np.ndarray) -> np.ndarray:
  if weight_OxIxK.shape[2] == 1:
    return np.ascontiguousarray(weight_OxIxK[:, :, 0].T)
  return np.ascontiguousarray(np.transpose(weight_OxIxK, (2, 1, 0)))


def params_from_torch(state_dict: Mapping[str, Any]) -> dict:
  """Flax parameters of backtal_jax.model.network.BackTAL from an official state dict.

  Args:
    state_dict: official parameter names (with or without a `module.` prefix, as DataParallel
      saves them) to numpy arrays or torch tensors; dtypes are kept.

  Raises:
    CheckpointError naming every missing, unexpected or mis-shaped parameter.
  """
  weights = _strip_module_prefix(state_dict)
  expected = expected_names()
  missing = [name for name in expected if name not in weights]
  unexpected = sorted(set(weights) - set(expected))
  problems = [f'missing parameter {name}' for name in missing]
  problems += [f'unexpected parameter {name}' for name in unexpected]
  if not problems:
    problems = _shape_problems(weights)
  if problems:
    raise CheckpointError('Not an official BackTAL state dict:\n  ' + '\n  '.join(problems))

  params: dict = {}
  for prefix, ((module, layer), _, has_bias) in _LAYERS.items():
    entry = {'kernel': _flax_kernel(weights[prefix + '.weight'])}
    if has_bias:
      entry['bias'] = weights[prefix + '.bias']
    params.setdefault(module, {})[layer] = entry
  return params


def _find_state_dict(loaded: Any, path: pathlib.Path) -> Mapping[str, Any]:
  """The state dict itself, or the one dict-valued entry that holds it (e.g. 'state_dict')."""
  if not isinstance(loaded, Mapping):
    raise CheckpointError(f'{path}: expected a state dict, found {type(loaded).__name__}')
  if any(hasattr(value, 'shape') for value in loaded.values()):
    return loaded
  nested = [value for value in loaded.values() if isinstance(value, Mapping)]
  if len(nested) != 1:
    raise CheckpointError(f'{path}: no state dict found among the keys {sorted(loaded)}')
  return nested[0]


def load_official_checkpoint(path: str | pathlib.Path, params_like: Any = None) -> dict:
  """Flax parameters from an official .pth file (zip or legacy serialisation), without PyTorch.

  Args:
    path: the .pth file, a state dict or a dict holding one (the official {'epoch',
      'state_dict'}), with or without DataParallel's `module.` prefix.
    params_like: if given, the parameters the config's model makes (e.g. `model_param_shapes`);
      the file's widths are checked against them.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'No checkpoint at {path}')
  try:
    loaded = torch_pickle.load(path)
  except torch_pickle.TorchFileError as e:
    raise CheckpointError(f'{path}: {e}') from e
  try:
    params = params_from_torch(_find_state_dict(loaded, path))
  except CheckpointError as e:
    raise CheckpointError(f'{path}: {e}') from e
  if params_like is not None:
    check_param_shapes(params, params_like, str(path), official_names=True)
  return params


def model_param_shapes(config: ml_collections.ConfigDict) -> Any:
  """The parameter shapes the config's model creates (nothing is allocated)."""
  model = network.BackTAL(**config.model)
  features = jax.ShapeDtypeStruct((1, config.data.num_segments, config.model.feat_dim), np.float32)
  return jax.eval_shape(model.init, jax.random.key(0), features)['params']


def _official_name_and_shape(path: tuple[str, ...], flax_shape: tuple[int, ...]
                             ) -> tuple[str, tuple[int, ...]]:
  """The official tensor name and shape ([out, in, k]) of a Flax parameter, for messages."""
  for name, (flax_path, _, _) in _LAYERS.items():
    if tuple(path[:-1]) == flax_path:
      if path[-1] == 'bias':
        return f'{name}.bias', tuple(flax_shape)
      if len(flax_shape) == 2:
        return f'{name}.weight', (flax_shape[1], flax_shape[0], 1)
      return f'{name}.weight', tuple(reversed(flax_shape))
  return '/'.join(path), tuple(flax_shape)


def _shapes_by_path(params: Any) -> dict[tuple[str, ...], tuple[int, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return {tuple(str(getattr(k, 'key', k)) for k in path): tuple(leaf.shape)
          for path, leaf in leaves}


def check_param_shapes(found: Any, expected: Any, source: str, *,
                       official_names: bool = False) -> None:
  """Raises one CheckpointError naming the first parameter whose shape differs between a
  checkpoint (`found`) and the config's model (`expected`), with both shapes; parameter trees of
  arrays or of anything with a `.shape` (ShapeDtypeStruct, orbax metadata)."""
  found_shapes, expected_shapes = _shapes_by_path(found), _shapes_by_path(expected)

  def describe(path, shape):
    if official_names:
      return _official_name_and_shape(path, shape)
    return '/'.join(path), shape

  hint = ('; the widths come from config.model (num_classes, feat_dim, hidden_dim, filter_dim, '
          'embed_hidden_dim, embed_dim)')
  for path, shape in expected_shapes.items():
    if path not in found_shapes:
      name, want = describe(path, shape)
      raise CheckpointError(f'{source}: parameter {name} is missing; the config\'s model has it '
                            f'with shape {want}')
    if found_shapes[path] != shape:
      name, have = describe(path, found_shapes[path])
      _, want = describe(path, shape)
      raise CheckpointError(f'{source}: parameter {name} has shape {have}, but the config\'s '
                            f'model expects {want}{hint}')
  for path, shape in found_shapes.items():
    if path not in expected_shapes:
      name, have = describe(path, shape)
      raise CheckpointError(f'{source}: parameter {name} (shape {have}) is not part of the '
                            'config\'s model')
