"""Training BackTAL: the sharded jitted step and the epoch loop.

Parameters are replicated over a 1-D 'data' mesh, Adam's moments split over it (each device
updates its share) and batches split along it; the step is one `jax.jit` with explicit shardings.
Each epoch is evaluated through backtal_jax.evaluation.evaluator."""

import dataclasses
import functools
import signal

from absl import logging
from etils import epath
import jax
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax

from backtal_jax.core import errors
from backtal_jax.core import sharding
from backtal_jax.data import datasets
from backtal_jax.data import pipeline
from backtal_jax.evaluation import evaluator
from backtal_jax.model import losses
from backtal_jax.model import network
from backtal_jax.reporting import evaluation_report
from backtal_jax.reporting import metric_writer
from backtal_jax.reporting import phase_times
from backtal_jax.reporting import progress
from backtal_jax.reporting import run_records
from backtal_jax.run import checkpoint
from backtal_jax.run import final_report
from backtal_jax.run import finiteness
from backtal_jax.run import optimizer
from backtal_jax.run import preflight
from backtal_jax.run import run_identity
from backtal_jax.run import stop_signals
from backtal_jax.run import train_state
from backtal_jax.run import workdir_lock
from backtal_jax.run.history import CheckpointRecord
from backtal_jax.run.history import History
from backtal_jax.run.train_state import TrainState


def step_loss(params, state: TrainState, batch: dict, *, model: network.BackTAL,
              config: ml_collections.ConfigDict):
  """The BackTAL loss of a global batch and its terms, with the dropout of the state's step."""
  dropout_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  outputs = model.apply({'params': params}, batch['features'], deterministic=False,
                        rngs={'dropout': dropout_rng})
  return losses.backtal_loss(outputs, batch['video_labels'], batch['click_labels'], config,
                             batch['mask'])


def train_step(state: TrainState, batch: dict, *, model: network.BackTAL,
               tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
               num_devices: int, platform: str):
  """One optimiser step on a global batch; returns the new state and the step's loss terms.

  Each device updates its share of the parameters (sharding.update_spec), so that Adam's
  element-wise update, which reads and writes every parameter and both moments, costs each
  device 1/N of it. Where the fused affinity kernel runs, its weights' gradients come out
  unreduced (reduced weights) and are summed straight into those shares; the other gradients
  arrive summed and are sliced. The new shares are then gathered. `platform`: the mesh's.
  """
  loss_fn = functools.partial(step_loss, state=state, batch=batch, model=model, config=config)
  params = jax.tree.map(lambda p, reduced: sharding.reduced_over_data(p) if reduced else p,
                        state.params, model.reduced_weights(state.params, platform))
  (total, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  grads, params = (jax.tree.map(lambda x: sharding.update_share(x, num_devices), tree)
                   for tree in (grads, state.params))
  updates, opt_state = tx.update(grads, state.opt_state, params)
  new_params = jax.tree.map(lambda p: jax.reshard(p, P()), optax.apply_updates(params, updates))
  new_state = state.replace(step=state.step + 1, params=new_params, opt_state=opt_state)
  return new_state, {'loss': total, **terms, 'grad_norm': optax.tree.norm(grads)}


def jit_train_step(model, tx, config, mesh, state: TrainState, feed=None):
  """The jitted step on a global batch, or on what `feed` (data/feeds.py) serves.

  The state is not donated: the new parameters are gathered from the devices' shares into their
  output buffer, and with the old parameters' buffer as that output, the TPU compiler copies the
  old parameters first (THUMOS14 on v5e, bfloat16: 0.75 GB more counted per step,
  benchmarks/RESULTS.md). Not donating costs memory: 518 MiB planned per v5e chip, not 400.
  """
  train_state.check_layout(state, mesh)
  state_shardings = train_state.state_shardings(state, mesh)
  data = sharding.batch_sharding(mesh) if feed is None else feed.shardings
  assemble = (lambda batch: batch) if feed is None else feed.assemble
  return jax.jit(
      lambda state, inputs: train_step(state, assemble(inputs), model=model, tx=tx, config=config,
                                       num_devices=mesh.size,
                                       platform=mesh.devices.flat[0].platform),
      in_shardings=(state_shardings, data),
      out_shardings=(state_shardings, sharding.replicated_sharding(mesh)))


def mean_metrics(metrics: list[dict]) -> dict[str, float]:
  stacked = jax.device_get(metrics)
  return {key: float(np.mean([m[key] for m in stacked])) for key in stacked[0]}


def check_finite(run: 'Run', state: TrainState, watch: finiteness.StepWatch) -> None:
  """Before anything is saved: every step since the last check left a finite loss and state."""
  watch.check(state, lambda index: run.data.train[index]['vid_name'],
              run.checkpoints.latest_step(), str(epath.Path(run.workdir) / 'checkpoints'))


class Run:
  """One training run's pieces, so that train_and_evaluate reads as the loop it is."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh,
               phases: phase_times.PhaseTimes | None = None, ground_truth=None):
    """`ground_truth`: the one train_and_evaluate's pre-flight read; without it, the config is
    checked (and the ground truth read) here."""
    self.config = config
    self.workdir = workdir
    self.is_lead = jax.process_index() == 0
    self.mesh = mesh
    self.phases = phases or phase_times.PhaseTimes()
    if ground_truth is None:
      with self.phases('preflight'):
        ground_truth = preflight.check_config(config, mesh.size)
    self.model = train_state.make_model(config)
    self.tx = optimizer.official_adam(config.train)
    with self.phases('datasets'):
      self.data = datasets.open_datasets(config, workdir, ground_truth)
    with self.phases('preflight'):
      preflight.check_data(config, datasets.features_root(config, workdir), ground_truth)
    self.checkpoints = checkpoint.Checkpoints(workdir, config.train.max_checkpoints_to_keep)
    self.writer = metric_writer.MetricWriter(str(epath.Path(workdir) / 'tensorboard'),
                                             enabled=self.is_lead)
    # At step 0, so once per run: the writer skips points that are already in the folder.
    self.writer.write_texts(0, {'config': run_records.config_markdown(config)})
    self.writer.write_hparams(run_records.hparams(config))
    self.evaluator = evaluator.Evaluator(config, self.model, mesh, workdir)
    self.best_test: tuple[int, evaluator.Scored] | None = None  # see final_test_summary

  def close(self) -> None:
    """Waits for pending checkpoint writes, then releases the managers and the event file."""
    with self.phases('checkpoint'):
      self.checkpoints.wait_until_finished()
    self.checkpoints.close()
    self.writer.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState | None:
  """Trains for config.train.num_epochs, evaluating and checkpointing each epoch; resumes from the
  latest checkpoint in `workdir`. Returns the final state (None, at once, when the workdir's run
  had already finished); raises errors.Stopped after saving a checkpoint on SIGTERM or Ctrl-C.
  One run per workdir: see workdir_lock. Writes where the time went to WORKDIR/phases.json."""
  mesh = sharding.make_mesh()
  ground_truth = preflight.check_config(config, mesh.size)  # before the lock: touches nothing
  with (jax.set_mesh(mesh), workdir_lock.held(workdir, enabled=jax.process_index() == 0),
        phase_times.PhaseTimes().counting_compilation() as phases):
    with phases('preflight'):
      run_identity.check_resume(config, workdir)
      checkpoint.check_workdir(workdir, train_state.abstract_params(
          config, train_state.make_model(config), mesh))
      if final_report.is_finished(config, workdir):
        logging.info('The run in %s has finished (%d epochs; results.json). Nothing to do: a new '
                     'run needs a new --workdir.', workdir, config.train.num_epochs)
        return None
    with phases('setup'):
      run = Run(config, workdir, mesh, phases, ground_truth)
    try:
      with run_records.recorded(config, workdir), phases('train_steps'):  # every check passed
        return _train_loop(run)
    finally:
      run.close()
      if run.is_lead:
        run_records.write_phases(workdir, phases.record())


def _restore_or_init(run: Run) -> tuple[TrainState, pipeline.DataPosition, History]:
  state = train_state.create_train_state(run.config, run.model, run.tx, run.mesh)
  if run.checkpoints.latest_step() is None:
    return state, pipeline.DataPosition(), History()
  state, record = run.checkpoints.restore_latest(state)
  logging.info('Resumed from step %d (epoch %d, step %d of it) in %s', int(state.step),
               record.position.epoch, record.position.step, run.workdir)
  return state, record.position, record.history


def _train_loop(run: Run) -> TrainState:
  config = run.config
  with run.phases('setup'):
    state, position, history = _restore_or_init(run)
  with run.phases('input'):
    loader = run.data.train_feed(position, run.mesh)
  step_fn = jit_train_step(run.model, run.tx, config, run.mesh, state, loader)
  history = evaluate_pending_epoch(run, state, history)
  steps_per_epoch = loader.steps_per_epoch
  total_steps = config.train.num_epochs * steps_per_epoch
  first_step = int(state.step)  # the one sync with the device; the loop counts on the host
  clock = progress.Progress(total_steps, steps_per_epoch, config.train.num_epochs,
                            config.eval.every_epochs, config.train.progress_every_seconds)
  epoch_metrics: list[dict] = []
  guard = 'disallow' if config.train.debug_transfer_guard else 'allow'
  watch = finiteness.StepWatch()
  try:
    with stop_signals.Preemption() as preemption:
      for step in range(first_step + 1, total_steps + 1):
        with run.phases('input'):
          batch = next(loader)
        with jax.transfer_guard(guard):
          state, metrics = step_fn(state, batch)
        watch.record(step, state, metrics['loss'], batch['index'])
        if step == first_step + 1:
          clock.resume(step)  # compiled: the clock counts training steps only
        epoch_metrics.append(metrics)
        end_of_epoch = step % steps_per_epoch == 0
        # Host syncs (metrics, the cross-host SIGTERM vote) only here, so steps dispatch ahead.
        sync_point = step % config.train.log_every_steps == 0 or end_of_epoch
        if sync_point:
          check_finite(run, state, watch)
          means = mean_metrics(epoch_metrics[-config.train.log_every_steps:])
          run.writer.write_scalars(step, {f'train/{k}': v for k, v in means.items()})
          if not end_of_epoch and clock.line_due():
            log_progress(run, clock, step, steps_per_epoch, means)
        if end_of_epoch:
          log_progress(run, clock, step, steps_per_epoch, mean_metrics(epoch_metrics))
          epoch_metrics = []
          clock.evaluation_started(step)
          history = finish_epoch(run, state, loader.position, history)
          clock.evaluation_finished(step)
        if sync_point and stop_signals.any_process(preemption.requested):
          if not end_of_epoch:
            run.checkpoints.save(state, CheckpointRecord(loader.position, history))
          raise errors.Stopped(preemption.signum or signal.SIGTERM, step)
  finally:
    loader.close()
  with run.phases('final_outputs'), stop_signals.Preemption() as preemption:
    final_report.final_report(run, state, history)  # a stop signal waits for its results.json
  if stop_signals.any_process(preemption.requested):
    raise errors.Stopped(preemption.signum, total_steps)
  return state


def log_progress(run: Run, clock: progress.Progress, step: int, steps_per_epoch: int,
                 means: dict):
  """The epoch line (or, inside a long epoch, its progress so far): loss terms, steps/s and ETA
  over the training time since the last line."""
  rate, eta = clock.close_interval(step)
  epoch, in_epoch = divmod(step, steps_per_epoch)
  where = (f'epoch {epoch}/{run.config.train.num_epochs}' if not in_epoch else
           f'epoch {epoch + 1}/{run.config.train.num_epochs} step {in_epoch}/{steps_per_epoch}')
  terms = ' '.join(f'{k} {v:.4g}' for k, v in means.items() if k != 'loss')
  if run.is_lead:
    logging.info('%s | loss %.4f (%s) | %.2f steps/s | ETA %s', where, means['loss'], terms, rate,
                 progress.format_duration(eta))
  run.writer.write_scalars(step, {'train/learning_rate': run.config.train.learning_rate,
                                  'train/steps_per_second': rate})


def finish_epoch(run: Run, state: TrainState, position: pipeline.DataPosition,
                 history: History) -> History:
  """Checkpoints, then evaluates on the selection split if due (and keeps the best apart).

  The checkpoint comes first, marked as awaiting its evaluation, so that an evaluation that fails
  (a bad value in a file is only seen when it is read) or is killed costs no training: a rerun
  evaluates that epoch first (again, if it had finished: the same numbers), then goes on.
  """
  config = run.config
  epoch = position.epoch
  due = epoch % config.eval.every_epochs == 0 or epoch == config.train.num_epochs
  pending = dataclasses.replace(history, pending_evaluation=epoch if due else 0)
  with run.phases('checkpoint'):
    run.checkpoints.save(state, CheckpointRecord(position, pending))
  if not due:
    return history
  try:
    history, is_best = evaluate_epoch(run, state, epoch, history)
  except Exception:
    logging.error('The evaluation of epoch %d failed. Its checkpoint (step %d) is saved: fix the '
                  'problem below and rerun with the same workdir, which evaluates it first.',
                  epoch, int(state.step))
    raise
  if is_best:
    with run.phases('checkpoint'):
      run.checkpoints.save(state, CheckpointRecord(position, history), is_best=True)
  with run.phases('checkpoint'):  # a save that failed stops the run here, not an epoch later
    run.checkpoints.wait_until_finished()
  return history


def evaluate_epoch(run: Run, state: TrainState, epoch: int, history: History
                   ) -> tuple[History, bool]:
  """The selection split's mAP after `epoch`, logged; the updated history and whether it is best."""
  on_test = run.data.selection is run.data.test
  with run.phases('evaluation'):
    scored = run.evaluator.score(state.params, run.data.selection,
                                 run.config.eval.num_plots if on_test else 0,
                                 run.config.eval.plot_videos)
    summary = run.evaluator.report(scored, run.data.selection, f'epoch_{epoch:03d}',
                                   plot_videos=run.config.eval.plot_videos)
  run.writer.write_scalars(int(state.step), {f'{run.data.selection.name}/{name}': value
                                             for name, value in summary.scalars().items()})
  is_best = summary.selection > history.best
  if is_best:
    history = History(best=summary.selection, best_epoch=epoch)
    run.best_test = (epoch, scored) if on_test else None
  if run.is_lead:
    note = evaluation_report.early_zero_note(
        sum(bool(found) for found in scored.detections.values()), len(scored.detections),
        run.config.eval.class_score_thresh)
    logging.info('%s', evaluation_report.evaluation_line(
        summary, epoch=epoch, split=run.data.selection.name,
        metric=run.config.train.selection_metric, best=history.best,
        best_epoch=history.best_epoch, dataset=run.config.data.dataset, note=note))
  return history, is_best


def evaluate_pending_epoch(run: Run, state: TrainState, history: History) -> History:
  """A run resumed from an epoch's checkpoint first evaluates that epoch (see finish_epoch)."""
  epoch = history.pending_evaluation
  if not epoch:
    return history
  logging.info('Evaluating epoch %d first: the run stopped after its checkpoint.', epoch)
  history, is_best = evaluate_epoch(run, state, epoch,
                                    dataclasses.replace(history, pending_evaluation=0))
  if is_best:
    run.checkpoints.save(state, CheckpointRecord(pipeline.DataPosition(epoch, 0), history),
                         is_best=True)
  return history
