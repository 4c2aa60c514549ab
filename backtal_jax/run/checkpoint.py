"""Orbax checkpoints of backtal_jax runs: the latest states to resume from, and the best parameters.

Every restore first compares the stored parameter shapes with the config's model
(`official_weights.check_param_shapes`), and official .pth files are read through
`official_weights`, so that `restore_params` takes either.
"""

from typing import Any

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from backtal_jax.core import errors
from backtal_jax.core import files
from backtal_jax.model import official_weights

# official name -> (flax path, kernel size of the Conv1d, has a bias)

# (layer whose output width, layer whose input width) must agree
# layers that read the input features


def stored_param_shapes(manager: ocp.CheckpointManager, step: int) -> Any:
  """The parameter shapes of an orbax step, from its metadata (no array is read): best/ steps
  hold the parameters alone, checkpoints/ steps hold them inside the TrainState."""
  step_dir = manager.directory / str(step)
  if (step_dir / 'params').exists():  # best/: the parameters alone
    return ocp.StandardCheckpointHandler().metadata(step_dir / 'params').tree
  return ocp.StandardCheckpointHandler().metadata(step_dir / 'state').tree['params']


def saved_steps(folder: epath.Path) -> list[int]:
  """The committed steps of an orbax folder (none if it is absent), as orbax itself counts them
  (a step a killed run left half-written on an object store is not one); read-only: the folder
  is not created."""
  if not folder.is_dir():
    return []
  manager = ocp.CheckpointManager(
      folder, options=ocp.CheckpointManagerOptions(create=False, read_only=True))
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def check_workdir(workdir: str, params_like: Any) -> None:
  """Before a training writes anything: its output folders are folders it can write; a best/
  whose checkpoints/ are gone (an earlier run's) is not taken for this run's; the latest
  checkpoint has the config's parameter shapes."""
  root = epath.Path(workdir)
  for name in ('checkpoints', 'best', 'tensorboard', 'detections', 'plots', 'logs'):
    problem = files.folder_problem(root / name)
    if problem:
      raise errors.UserError(problem)
  for name in ('results.json', 'phases.json', 'config.json', 'config.txt', 'run.json'):
    if (root / name).is_dir():
      raise errors.UserError(f'{root / name} is a folder, where the run writes a file: move it '
                             'away')
  latest, best = saved_steps(root / 'checkpoints'), saved_steps(root / 'best')
  if best and not latest:
    raise errors.UserError(
        f'{root / "best"} holds step {best[-1]} of an earlier run, but {root / "checkpoints"} '
        'holds no checkpoint: this run could not tell its own best from it. Move best/ away '
        '(with the results.json and detections/ beside it) or pick another --workdir.')
  if latest:
    manager = ocp.CheckpointManager(root / 'checkpoints')
    try:
      official_weights.check_param_shapes(stored_param_shapes(manager, latest[-1]), params_like,
                                          str(root / 'checkpoints' / str(latest[-1])))
    finally:
      manager.close()


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
    """The latest checkpoint that restores, sharded like `state_like` (a TrainState or its
    abstract shapes): a damaged step (a file lost) is skipped, with a warning, for the one before
    it; the run then retrains from there."""
    failures = []
    for step in sorted(self.latest.all_steps(), reverse=True):
      where = str(self.latest.directory / str(step))
      official_weights.check_param_shapes(stored_param_shapes(self.latest, step),
                                          state_like.params, where)
      try:
        return restore(self.latest, step, state_like)
      except Exception as e:  # pylint: disable=broad-except  (tensorstore raises plain Exception)
        failures.append(f'{where}: {str(e).splitlines()[0][:200]}')
        logging.warning('Checkpoint %s cannot be restored (%s); trying the one before it.', where,
                        failures[-1])
    raise errors.UserError('No checkpoint of the run restores (damaged or incomplete):\n  '
                           + '\n  '.join(failures) + '\nRemove checkpoints/ and best/ to '
                           'start again, or pick another --workdir.')

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
    return official_weights.load_official_checkpoint(path, params_like)
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
    official_weights.check_param_shapes(stored_param_shapes(manager, step), params_like,
                       str(manager.directory / str(step)))
    try:
      return _params_from_step(manager, step,
                               jax.tree.map(ocp.utils.to_shape_dtype_struct, params_like))
    except Exception as e:  # pylint: disable=broad-except  (tensorstore raises plain Exception)
      raise errors.UserError(f'{manager.directory / str(step)}: the parameters cannot be read '
                             f'(damaged or incomplete: {str(e).splitlines()[0][:200]})') from None
  finally:
    manager.close()
