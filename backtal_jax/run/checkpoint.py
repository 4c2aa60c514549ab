"""Orbax checkpoints of backtal_jax runs: the latest states to resume from, and the best parameters.

Folders say where they belong: `best/epoch_39` is the best epoch's parameters (folders of earlier
versions, named by step such as `best/507`, are read too), and `checkpoints/epochs.json` maps each
step folder of `checkpoints/` to its epoch. Every restore first compares the stored parameter
shapes with the config's model (`official_weights.check_param_shapes`), and official .pth files
are read through `official_weights`, so that `restore_params` takes either.
"""

import json
from typing import Any

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from backtal_jax.core import errors
from backtal_jax.core import files
from backtal_jax.model import official_weights
from backtal_jax.run import history as history_lib

BEST_PREFIX = 'epoch'  # best/ folders are named epoch_<epoch>
EPOCHS_FILE = 'epochs.json'  # in checkpoints/: step folder -> epoch


def step_path(directory: epath.Path, step: int, prefix: str | None = None) -> epath.Path:
  """The folder of `step` under `directory`: `507`, or `epoch_39` with the prefix 'epoch'."""
  return epath.Path(directory) / ocp.step.standard_name_format(step_prefix=prefix).build_name(step)


def stored_param_shapes(step_dir: epath.Path) -> Any:
  """The parameter shapes of an orbax step, from its metadata (no array is read): best/ steps
  hold the parameters alone, checkpoints/ steps hold them inside the TrainState."""
  if (step_dir / 'params').exists():  # best/: the parameters alone
    return ocp.StandardCheckpointHandler().metadata(step_dir / 'params').tree
  return ocp.StandardCheckpointHandler().metadata(step_dir / 'state').tree['params']


def saved_steps(folder: epath.Path, step_prefix: str | None = None) -> list[int]:
  """The committed steps of an orbax folder (none if it is absent), as orbax itself counts them
  (a step a killed run left half-written on an object store is not one): step folders (`507`),
  or with `step_prefix` 'epoch' best/'s epoch folders (`epoch_39`); read-only: the folder is not
  created."""
  if not folder.is_dir():
    return []
  manager = ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(
      create=False, read_only=True, step_prefix=step_prefix))
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def saved_best(folder: epath.Path) -> list[int]:
  """best/'s committed folders: epochs (`epoch_39`), else steps of earlier versions (`507`)."""
  return saved_steps(folder, BEST_PREFIX) or saved_steps(folder)


def latest_record(folder: epath.Path) -> history_lib.CheckpointRecord | None:
  """The record of the newest step in `folder` (a run's checkpoints/), None without one: read
  alone (no array) and read-only (no folder is created)."""
  if not saved_steps(folder):
    return None
  manager = ocp.CheckpointManager(folder, item_handlers={'record': ocp.JsonCheckpointHandler()},
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    record = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        record=ocp.args.JsonRestore())).record
  finally:
    manager.close()
  return history_lib.CheckpointRecord.from_json(record)


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
  latest, best = saved_steps(root / 'checkpoints'), saved_best(root / 'best')
  if best and not latest:
    raise errors.UserError(
        f'{root / "best"} holds a checkpoint of an earlier run, but {root / "checkpoints"} '
        'holds no checkpoint: this run could not tell its own best from it. Move best/ away '
        '(with the results.json and detections/ beside it) or pick another --workdir.')
  if latest:
    step_dir = step_path(root / 'checkpoints', latest[-1])
    official_weights.check_param_shapes(stored_param_shapes(step_dir), params_like, str(step_dir))


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
        root / 'best', options=ocp.CheckpointManagerOptions(max_to_keep=1,
                                                            step_prefix=BEST_PREFIX))
    self.is_lead = jax.process_index() == 0

  @staticmethod
  def _save(manager: ocp.CheckpointManager, step: int, **items: Any) -> None:
    if step in manager.all_steps():
      return
    manager.save(step, args=ocp.args.Composite(**items))

  def save(self, state: Any, record: history_lib.CheckpointRecord, *,
           is_best: bool = False) -> None:
    """The latest checkpoint at the state's step; with `is_best` also best/epoch_<epoch>."""
    step = int(jax.device_get(state.step))
    self._save(self.latest, step, state=ocp.args.StandardSave(state),
               record=ocp.args.JsonSave(record.to_json()))
    if is_best:
      self._save(self.best, record.epoch, params=ocp.args.StandardSave(state.params),
                 record=ocp.args.JsonSave(record.to_json()))
    if self.is_lead:
      self._write_epochs(step, record.epoch)

  def _write_epochs(self, step: int, epoch: int) -> None:
    """checkpoints/epochs.json: the epoch of each step folder still kept."""
    path = self.latest.directory / EPOCHS_FILE
    epochs = json.loads(path.read_text()) if path.exists() else {}
    kept = {str(s) for s in self.latest.all_steps()} | {str(step)}
    files.write_json_atomically(path, {s: e for s, e in {**epochs, str(step): epoch}.items()
                                       if s in kept})

  def best_folder(self) -> epath.Path | None:
    """The best epoch's folder (best/epoch_<epoch>), None before the first."""
    step = self.best.latest_step()
    return None if step is None else step_path(self.best.directory, step, BEST_PREFIX)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def restore_latest(self, state_like: Any) -> tuple[Any, history_lib.CheckpointRecord]:
    """The latest checkpoint that restores, sharded like `state_like` (a TrainState or its
    abstract shapes): a damaged step (a file lost) is skipped, with a warning, for the one before
    it; the run then retrains from there."""
    failures = []
    for step in sorted(self.latest.all_steps(), reverse=True):
      step_dir = step_path(self.latest.directory, step)
      official_weights.check_param_shapes(stored_param_shapes(step_dir), state_like.params,
                                          str(step_dir))
      try:
        state, record = restore(self.latest, step, state_like)
      except Exception as e:  # pylint: disable=broad-except  (tensorstore raises plain Exception)
        failures.append(f'{step_dir}: {str(e).splitlines()[0][:200]}')
        logging.warning('Checkpoint %s cannot be restored (%s); trying the one before it.',
                        step_dir, failures[-1])
        continue
      return state, history_lib.CheckpointRecord.from_json(record)
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


def _orbax_manager(path: str, step_prefix: str | None) -> ocp.CheckpointManager:
  folder = epath.Path(path)
  if '://' not in str(path):  # orbax refuses a relative path (`--checkpoint=run/best`)
    folder = folder.absolute()
  return ocp.CheckpointManager(
      folder, options=ocp.CheckpointManagerOptions(step_prefix=step_prefix),
      item_handlers={'params': ocp.StandardCheckpointHandler(),
                     'state': ocp.PyTreeCheckpointHandler(),
                     'record': ocp.JsonCheckpointHandler()})


def restore_params(path: str, params_like: Any, flag: str = 'config.eval.checkpoint') -> Any:
  """Parameters to evaluate: from an official .pth file, or the newest step of an orbax folder
  (a run's workdir/best or workdir/checkpoints), sharded like `params_like` (parameters or their
  abstract shapes). `flag`: where `path` came from (`--checkpoint`, `config.eval.checkpoint`, or
  the run's best/), named by every error."""
  if str(path).endswith('.pth'):
    return official_weights.load_official_checkpoint(path, params_like)
  if not epath.Path(path).is_dir():  # checked first: a CheckpointManager would create the folder
    raise FileNotFoundError(f'No checkpoint folder at {path} ({flag}): give an orbax folder such '
                            'as WORKDIR/best, or an official .pth file')
  for step_prefix in (BEST_PREFIX, None):  # best/epoch_39, else step folders (checkpoints/507)
    manager = _orbax_manager(path, step_prefix)
    try:
      step = manager.latest_step()
      if step is None:
        continue
      step_dir = step_path(manager.directory, step, step_prefix)
      official_weights.check_param_shapes(stored_param_shapes(step_dir), params_like,
                                          f'{step_dir} ({flag})')
      try:
        return _params_from_step(manager, step,
                                 jax.tree.map(ocp.utils.to_shape_dtype_struct, params_like))
      except Exception as e:  # pylint: disable=broad-except  (tensorstore raises plain Exception)
        raise errors.UserError(f'{step_dir} ({flag}): the parameters cannot be read (damaged or '
                               f'incomplete: {str(e).splitlines()[0][:200]})') from None
    finally:
      manager.close()
  raise FileNotFoundError(f'{path} holds no orbax checkpoint step ({flag})')
