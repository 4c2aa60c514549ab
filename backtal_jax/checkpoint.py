"""Checkpoints: orbax for backtal_jax runs, and the official PyTorch state dicts and .pth files.

The official modules are Conv1d layers with weights [out, in, k]; backtal_jax keeps Flax layouts
(Dense kernels [in, out], Conv kernels [k, in, out]) under the same module names. .pth files are
read by `torch_pickle`, without PyTorch. Every restore first compares the checkpoint's parameter
shapes with the config's model (`check_param_shapes`), so that a width mismatch is one message
naming the parameter, not a deep Flax or tensorstore error.
"""

import pathlib
from typing import Any, Mapping

from etils import epath
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from backtal_jax import errors
from backtal_jax import models
from backtal_jax import torch_pickle

# official name -> (flax path, kernel size of the Conv1d, has a bias)
_LAYERS = {
    'filter_module.conv_1.0': (('filter_module', 'conv_1'), 1, True),
    'filter_module.conv_2.0': (('filter_module', 'conv_2'), 1, True),
    'embedding_module.conv_1': (('embedding_module', 'conv_1'), 3, True),
    'embedding_module.conv_2': (('embedding_module', 'conv_2'), 3, True),
    'base_module.conv_1': (('base_module', 'conv_1'), 3, False),
    'base_module.conv_2': (('base_module', 'conv_2'), 3, False),
    'classifier_module.conv': (('classifier_module', 'conv'), 1, False),
}

# (layer whose output width, layer whose input width) must agree
_CHAINED = [
    ('filter_module.conv_1.0', 'filter_module.conv_2.0'),
    ('embedding_module.conv_1', 'embedding_module.conv_2'),
    ('base_module.conv_1', 'base_module.conv_2'),
    ('base_module.conv_2', 'classifier_module.conv'),
]
# layers that read the input features
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
  """Flax parameters of backtal_jax.models.BackTAL from an official state dict.

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
  model = models.BackTAL(**config.model)
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


def stored_param_shapes(manager: ocp.CheckpointManager, step: int) -> Any:
  """The parameter shapes of an orbax step, from its metadata (no array is read): best/ steps
  hold the parameters alone, checkpoints/ steps hold them inside the TrainState."""
  step_dir = manager.directory / str(step)
  if (step_dir / 'params').exists():  # best/: the parameters alone
    return ocp.StandardCheckpointHandler().metadata(step_dir / 'params').tree
  return ocp.StandardCheckpointHandler().metadata(step_dir / 'state').tree['params']


class Checkpoints:
  """Orbax checkpoints of a run: the latest ones (to resume) and the best one, kept apart.

  A latest checkpoint holds the whole TrainState (parameters, optimiser, step, RNG) and a JSON
  record with the data position and the run's history, so that a resumed run continues
  bit-identically. The best one holds the parameters and the record only: what evaluation and
  prediction read, and what people share (Adam's two moments would triple its size).
  """

  def __init__(self, workdir: str, max_to_keep: int = 2):
    root = epath.Path(workdir)
    self.latest = ocp.CheckpointManager(
        root / 'checkpoints', options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep))
    self.best = ocp.CheckpointManager(
        root / 'best', options=ocp.CheckpointManagerOptions(max_to_keep=1))

  @staticmethod
  def _save(manager: ocp.CheckpointManager, step: int, **items: Any) -> None:
    if step in manager.all_steps():
      return
    manager.save(step, args=ocp.args.Composite(**items))

  def save(self, state: Any, record: dict, *, is_best: bool = False) -> None:
    step = int(jax.device_get(state.step))
    self._save(self.latest, step, state=ocp.args.StandardSave(state),
               record=ocp.args.JsonSave(record))
    if is_best:
      self._save(self.best, step, params=ocp.args.StandardSave(state.params),
                 record=ocp.args.JsonSave(record))

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def restore_latest(self, state_like: Any) -> tuple[Any, dict]:
    """The latest checkpoint, sharded like `state_like` (a TrainState or its abstract shapes)."""
    step = self.latest.latest_step()
    check_param_shapes(stored_param_shapes(self.latest, step), state_like.params,
                       str(self.latest.directory / str(step)))
    return restore(self.latest, step, state_like)

  def wait_until_finished(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def restore(manager: ocp.CheckpointManager, step: int, state_like: Any) -> tuple[Any, dict]:
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), record=ocp.args.JsonRestore()))
  return restored.state, restored.record


def _params_from_step(manager: ocp.CheckpointManager, step: int, target: Any) -> Any:
  """The parameters of a step that holds them alone (best/) or inside a TrainState (checkpoints/,
  and best/ folders written before it held parameters only); the optimiser state is not read."""
  if 'params' in manager.item_metadata(step):
    return manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(target))).params
  partial = {'params': target}
  return manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=partial, restore_args=ocp.checkpoint_utils.construct_restore_args(partial),
      partial_restore=True))).state['params']


def restore_params(path: str, params_like: Any) -> Any:
  """Parameters to evaluate: from an official .pth file, or the newest step of an orbax folder
  (a run's workdir/best or workdir/checkpoints), sharded like `params_like` (parameters or their
  abstract shapes)."""
  if str(path).endswith('.pth'):
    return load_official_checkpoint(path, params_like)
  if not epath.Path(path).is_dir():  # checked first: a CheckpointManager would create the folder
    raise FileNotFoundError(f'No checkpoint folder at {path} (config.eval.checkpoint): give an '
                            'orbax folder such as WORKDIR/best, or an official .pth file')
  manager = ocp.CheckpointManager(epath.Path(path), item_handlers={
      'params': ocp.StandardCheckpointHandler(), 'state': ocp.PyTreeCheckpointHandler(),
      'record': ocp.JsonCheckpointHandler()})
  try:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f'{path} holds no orbax checkpoint step (config.eval.checkpoint)')
    check_param_shapes(stored_param_shapes(manager, step), params_like,
                       str(manager.directory / str(step)))
    return _params_from_step(manager, step,
                             jax.tree.map(ocp.utils.to_shape_dtype_struct, params_like))
  finally:
    manager.close()
