"""Checkpoints: orbax for backtal_jax runs, and the official PyTorch state dicts and .pth files.

The official modules are Conv1d layers with weights [out, in, k]; backtal_jax keeps Flax layouts
(Dense kernels [in, out], Conv kernels [k, in, out]) under the same module names.
"""

import pathlib
from typing import Any, Mapping

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from backtal_jax import errors

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
  if hasattr(value, 'detach'):
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


def load_official_checkpoint(path: str | pathlib.Path) -> dict:
  """Flax parameters from an official .pth file (needs the optional `torch` extra)."""
  path = pathlib.Path(path)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("Reading official .pth checkpoints needs PyTorch: pip install "
                      "'backtal_jax[torch]'") from e
  if not path.is_file():
    raise FileNotFoundError(f'No checkpoint at {path}')
  try:
    loaded = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises several types for a corrupt or unsafe file
    raise CheckpointError(f'{path}: cannot be read as a PyTorch checkpoint ({e})') from e
  try:
    return params_from_torch(_find_state_dict(loaded, path))
  except CheckpointError as e:
    raise CheckpointError(f'{path}: {e}') from e


class Checkpoints:
  """Orbax checkpoints of a run: the latest ones (to resume) and the best one, kept apart.

  Each checkpoint holds the whole TrainState (parameters, optimiser, step, RNG) and a JSON record
  with the data position and the run's history, so that a resumed run continues bit-identically.
  """

  def __init__(self, workdir: str, max_to_keep: int = 2):
    root = epath.Path(workdir)
    self.latest = ocp.CheckpointManager(
        root / 'checkpoints', options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep))
    self.best = ocp.CheckpointManager(
        root / 'best', options=ocp.CheckpointManagerOptions(max_to_keep=1))

  @staticmethod
  def _save(manager: ocp.CheckpointManager, state: Any, record: dict) -> None:
    step = int(jax.device_get(state.step))
    if step in manager.all_steps():
      return
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)))

  def save(self, state: Any, record: dict, *, is_best: bool = False) -> None:
    self._save(self.latest, state, record)
    if is_best:
      self._save(self.best, state, record)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def restore_latest(self, state_like: Any) -> tuple[Any, dict]:
    """The latest checkpoint, sharded like `state_like` (a TrainState or its abstract shapes)."""
    return restore(self.latest, self.latest.latest_step(), state_like)

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


def restore_params(path: str, state_like: Any) -> Any:
  """Parameters to evaluate: from an official .pth file, or the newest step of an orbax folder
  (a run's workdir/best or workdir/checkpoints)."""
  if str(path).endswith('.pth'):
    return load_official_checkpoint(path)
  manager = ocp.CheckpointManager(epath.Path(path))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f'No orbax checkpoint under {path} (config.eval.checkpoint)')
  state, _ = restore(manager, step, state_like)
  manager.close()
  return state.params
