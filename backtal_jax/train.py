"""Training and evaluation of BackTAL: the train state, the sharded jitted step, the epoch loop.

Parameters and optimiser state are replicated over a 1-D 'data' mesh and batches are split along
it; the step is one `jax.jit` with explicit shardings and the state donated. Evaluation runs the
model jitted and post-processing plus mAP on the host.
"""

import dataclasses
import functools
import json
import signal
import time
from typing import Any

from absl import logging
from etils import epath
import flax
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import optax

from backtal_jax import checkpoint
from backtal_jax import evaluation
from backtal_jax import losses
from backtal_jax import metric_writer
from backtal_jax import models
from backtal_jax import optimizer
from backtal_jax import postprocess
from backtal_jax import reporting
from backtal_jax import sharding
from backtal_jax import visualize
from backtal_jax.data import datasets
from backtal_jax.data import pipeline


class TrainState(flax.struct.PyTreeNode):
  """Everything a resumed run needs besides the data position."""
  step: jax.Array  # optimiser steps taken
  params: Any
  opt_state: optax.OptState
  rng: jax.Array  # raw key data; the dropout key of step s is fold_in(rng, s)


def make_model(config: ml_collections.ConfigDict) -> models.BackTAL:
  return models.BackTAL(**config.model)


def create_train_state(config: ml_collections.ConfigDict, model: models.BackTAL,
                       tx: optax.GradientTransformation, mesh: jax.sharding.Mesh) -> TrainState:
  """Initialised state, built directly with replicated shardings (the big_vision way)."""
  features_shape = (1, config.data.num_segments, config.model.feat_dim)

  def init(rng):
    params_rng, dropout_rng = jax.random.split(rng)
    params = model.init(params_rng, jnp.zeros(features_shape, jnp.float32))['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.key_data(dropout_rng))

  rng = jax.random.key(config.train.seed)
  abstract = jax.eval_shape(init, rng)
  replicated = jax.tree.map(lambda _: sharding.replicated_sharding(mesh), abstract)
  return jax.jit(init, out_shardings=replicated)(rng)


def train_step(state: TrainState, batch: dict, *, model: models.BackTAL,
               tx: optax.GradientTransformation, config: ml_collections.ConfigDict):
  """One optimiser step on a global batch; returns the new state and the step's loss terms."""
  dropout_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def loss_fn(params):
    outputs = model.apply({'params': params}, batch['features'], deterministic=False,
                          rngs={'dropout': dropout_rng})
    return losses.backtal_loss(outputs, batch['video_labels'], batch['click_labels'], config,
                               batch['mask'])

  (total, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state)
  return new_state, {'loss': total, **terms}


def eval_step(params, features_BxTxF, *, model: models.BackTAL) -> dict:
  """What post-processing needs, reduced on the device: feature_supp_1 only through its norm."""
  outputs = model.apply({'params': params}, features_BxTxF, deterministic=True)
  return {
      'cas': outputs.cas_supp.astype(jnp.float32),
      'scores': jax.nn.softmax(outputs.score_supp.astype(jnp.float32), axis=-1),
      'feature_norm': jnp.linalg.norm(outputs.feature_supp_1.astype(jnp.float32), axis=-1),
  }


def jit_train_step(model, tx, config, mesh, state: TrainState, feed=None):
  """The jitted step on a global batch, or on what `feed` (data/feeds.py) serves."""
  state_shardings = jax.tree.map(lambda x: x.sharding, state)
  data = sharding.batch_sharding(mesh) if feed is None else feed.shardings
  assemble = (lambda batch: batch) if feed is None else feed.assemble
  return jax.jit(
      lambda state, inputs: train_step(state, assemble(inputs), model=model, tx=tx, config=config),
      in_shardings=(state_shardings, data),
      out_shardings=(state_shardings, sharding.replicated_sharding(mesh)),
      donate_argnums=0)


def jit_eval_step(model, mesh):
  data = sharding.batch_sharding(mesh)
  return jax.jit(functools.partial(eval_step, model=model),
                 in_shardings=(sharding.replicated_sharding(mesh), data), out_shardings=data)


def local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded array, in order (no cross-host transfer)."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  rows, seen = [], set()
  for shard in shards:
    start = shard.index[0].start or 0
    if start not in seen:
      seen.add(start)
      rows.append(np.asarray(shard.data))
  return np.concatenate(rows)


def detect(params, eval_fn, split: datasets.EvalSplit, config, mesh, keep_cas: int = 0
           ) -> tuple[dict[str, list], dict[str, np.ndarray]]:
  """Detections of every video of `split`, gathered from all processes, and the raw CAS of the
  first `keep_cas` videos this process read (for plots)."""
  detections, kept_cas = {}, {}
  for batch, metadata in pipeline.eval_batches(
      split.source, global_batch_size=config.eval.batch_size, spec=datasets.batch_spec(config),
      prefetch=config.data.prefetch, process_index=jax.process_index(),
      process_count=jax.process_count()):
    features = sharding.to_global_batch({'features': batch['features']},
                                        sharding.batch_sharding(mesh))['features']
    outputs = {k: local_rows(v) for k, v in eval_fn(params, features).items()}
    for row, video in enumerate(metadata):
      if video is None:
        continue
      detections[video.vid_name] = postprocess.detect_video(
          outputs['cas'][row], outputs['scores'][row], outputs['feature_norm'][row][:, None],
          frame_num=video.frame_num, duration=video.duration,
          class_names=split.ground_truth.class_names, config=config)
      if len(kept_cas) < keep_cas:
        kept_cas[video.vid_name] = outputs['cas'][row]
  return gather_from_processes(detections), kept_cas


def gather_from_processes(detections: dict[str, list]) -> dict[str, list]:
  """Every process's detections, merged (a no-op with one process)."""
  if jax.process_count() == 1:
    return detections
  encoded = np.frombuffer(json.dumps(detections).encode(), np.uint8)
  sizes = multihost_utils.process_allgather(np.asarray([encoded.size]))
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:encoded.size] = encoded
  gathered = multihost_utils.process_allgather(padded)
  merged = {}
  for size, row in zip(sizes.reshape(-1), gathered):
    merged.update(json.loads(bytes(row[:size]).decode()))
  return merged


def score_detections(detections: dict, split: datasets.EvalSplit, config) -> dict:
  """mAP per tIoU and the quoted averages; the selection metric under 'selection'."""
  predictions = {'version': 'backtal_jax', 'results': detections, 'external_data': {}}
  thresholds = tuple(config.eval.tiou_thresholds)
  map_T, _ = evaluation.detection_map(split.ground_truth_json, predictions, subset=split.subset,
                                      tiou_thresholds=thresholds)
  summary = {'tiou': list(thresholds), 'mAP': [float(m) for m in map_T],
             'average_mAP': reporting.quoted_averages(map_T, thresholds)}
  summary['selection'] = selection_metric(summary, config.train.selection_metric)
  return summary


def selection_metric(summary: dict, name: str) -> float:
  """'average' (mean over the scored tIoUs) or 'map@X' (mAP at tIoU X), as the official code."""
  if name == 'average':
    return summary['average_mAP']['all scored']
  if name.startswith('map@'):
    matches = np.flatnonzero(np.isclose(summary['tiou'], float(name[4:])))
    if matches.size:
      return summary['mAP'][int(matches[0])]
  raise ValueError(f"config.train.selection_metric must be 'average' or 'map@X' with X among "
                   f'config.eval.tiou_thresholds {summary["tiou"]}, got {name!r}')


@dataclasses.dataclass
class Preemption:
  """Turns SIGTERM into a flag the loop checks after each step, so it can save and stop cleanly."""
  requested: bool = False

  def __enter__(self):
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint after this step, then stopping.')
    self.requested = True

  def __exit__(self, *exc):
    signal.signal(signal.SIGTERM, self._previous)


def any_process(flag: bool) -> bool:
  """True on every process if `flag` is True on any: SIGTERM reaches hosts at different steps, and
  a host that stopped alone would leave the others waiting in the next step's collectives."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.process_allgather(np.asarray(flag)).any())


def mean_metrics(metrics: list[dict]) -> dict[str, float]:
  stacked = jax.device_get(metrics)
  return {key: float(np.mean([m[key] for m in stacked])) for key in stacked[0]}


def check_finite(means: dict[str, float], step: int, workdir: str, checkpoints) -> None:
  bad = {k: v for k, v in means.items() if not np.isfinite(v)}
  if bad:
    raise FloatingPointError(
        f'Non-finite loss at step {step}: {bad}. The last good checkpoint is step '
        f'{checkpoints.latest_step()} under {workdir}/checkpoints; it is kept.')


def format_duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class Run:
  """One training run's pieces, so that train_and_evaluate reads as the loop it is."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh):
    self.config = config
    self.workdir = workdir
    self.is_lead = jax.process_index() == 0
    self.mesh = mesh
    sharding.check_global_batch_size(config.train.batch_size)
    sharding.check_global_batch_size(config.eval.batch_size)
    self.model = make_model(config)
    self.tx = optimizer.official_adam(config.train)
    self.data = datasets.open_datasets(config, workdir)
    self.checkpoints = checkpoint.Checkpoints(workdir, config.train.max_checkpoints_to_keep)
    self.writer = metric_writer.MetricWriter(str(epath.Path(workdir) / 'tensorboard'),
                                             enabled=self.is_lead)

  def close(self) -> None:
    """Waits for pending checkpoint writes, then releases the managers and the event file."""
    self.checkpoints.wait_until_finished()
    self.checkpoints.close()
    self.writer.close()

  def evaluate(self, params, eval_fn, split: datasets.EvalSplit, tag: str, plots: int = 0) -> dict:
    """mAP of `params` on `split`; detections JSON and `plots` PNGs under workdir (process 0)."""
    started = time.monotonic()
    detections, kept_cas = detect(params, eval_fn, split, self.config, self.mesh, plots)
    summary = score_detections(detections, split, self.config)
    summary['seconds'] = time.monotonic() - started
    if self.is_lead:
      folder = epath.Path(self.workdir) / 'detections'
      folder.mkdir(parents=True, exist_ok=True)
      reporting.write_json_atomically(
          folder / f'{tag}.json', {'version': 'backtal_jax', 'results': detections,
                                   'external_data': {}})
      logging.info('Evaluation %s on %s (%d videos, %.1f s):\n%s', tag, split.name,
                   len(detections), summary['seconds'], reporting.format_table(summary))
      self.plot(tag, split, kept_cas, detections)
    return summary

  def plot(self, tag: str, split: datasets.EvalSplit, cas_by_video: dict, detections: dict):
    if not cas_by_video:
      return
    folder = epath.Path(self.workdir) / 'plots' / tag
    folder.mkdir(parents=True, exist_ok=True)
    for name, cas_TxC1 in cas_by_video.items():
      visualize.plot_video(folder / f'{name}.png', cas_TxC1, split.ground_truth.videos[name],
                           split.ground_truth.class_names, detections[name])
    logging.info('Plots of %d %s videos in %s', len(cas_by_video), split.name, folder)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains for config.train.num_epochs, evaluating and checkpointing each epoch; resumes from the
  latest checkpoint in `workdir`. Returns the final state (or the state at a SIGTERM)."""
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    run = Run(config, workdir, mesh)
    try:
      return _train_loop(run)
    finally:
      run.close()


def _restore_or_init(run: Run) -> tuple[TrainState, pipeline.DataPosition, dict]:
  state = create_train_state(run.config, run.model, run.tx, run.mesh)
  if run.checkpoints.latest_step() is None:
    return state, pipeline.DataPosition(), {'best': -1.0, 'best_epoch': 0}
  state, record = run.checkpoints.restore_latest(state)
  logging.info('Resumed from step %d (epoch %d, step %d of it) in %s', int(state.step),
               record['position']['epoch'], record['position']['step'], run.workdir)
  return state, pipeline.DataPosition.from_dict(record['position']), record['history']


def _train_loop(run: Run) -> TrainState:
  config = run.config
  state, position, history = _restore_or_init(run)
  loader = run.data.train_feed(position, run.mesh)
  step_fn = jit_train_step(run.model, run.tx, config, run.mesh, state, loader)
  eval_fn = jit_eval_step(run.model, run.mesh)
  steps_per_epoch = loader.steps_per_epoch
  total_steps = config.train.num_epochs * steps_per_epoch
  first_step = int(state.step)  # the one sync with the device; the loop counts on the host
  started = time.monotonic()
  epoch_metrics: list[dict] = []
  guard = 'disallow' if config.train.debug_transfer_guard else 'allow'
  try:
    with Preemption() as preemption:
      for step in range(first_step + 1, total_steps + 1):
        batch = next(loader)
        with jax.transfer_guard(guard):
          state, metrics = step_fn(state, batch)
        epoch_metrics.append(metrics)
        end_of_epoch = step % steps_per_epoch == 0
        # Host syncs (metrics, the cross-host SIGTERM vote) only here, so steps dispatch ahead.
        sync_point = step % config.train.log_every_steps == 0 or end_of_epoch
        if sync_point:
          means = mean_metrics(epoch_metrics[-config.train.log_every_steps:])
          check_finite(means, step, run.workdir, run.checkpoints)
          run.writer.write_scalars(step, {f'train/{k}': v for k, v in means.items()})
        if end_of_epoch:
          rate = (step - first_step) / (time.monotonic() - started)
          log_epoch(run, step // steps_per_epoch, step, total_steps, mean_metrics(epoch_metrics),
                    rate)
          epoch_metrics = []
          history = finish_epoch(run, state, loader.position, history, eval_fn)
        if sync_point and any_process(preemption.requested):
          if not end_of_epoch:
            run.checkpoints.save(state, {'position': loader.position.to_dict(),
                                         'history': history})
          logging.warning('Stopped at step %d after SIGTERM; rerun with the same workdir to '
                          'resume.', step)
          return state
  finally:
    loader.close()
  final_report(run, state, history, eval_fn)
  return state


def log_epoch(run: Run, epoch: int, step: int, total_steps: int, means: dict, rate: float):
  eta = (total_steps - step) / max(rate, 1e-9)
  terms = ' '.join(f'{k} {v:.4f}' for k, v in means.items() if k != 'loss')
  logging.info('epoch %d/%d | loss %.4f (%s) | %.2f steps/s | ETA %s', epoch,
               run.config.train.num_epochs, means['loss'], terms, rate, format_duration(eta))
  run.writer.write_scalars(step, {'train/learning_rate': run.config.train.learning_rate,
                                  'train/steps_per_second': rate})


def finish_epoch(run: Run, state: TrainState, position: pipeline.DataPosition, history: dict,
                 eval_fn) -> dict:
  """Evaluates on the selection split if due, then checkpoints (and keeps the best apart)."""
  config = run.config
  epoch = position.epoch
  is_best = False
  if epoch % config.eval.every_epochs == 0 or epoch == config.train.num_epochs:
    summary = run.evaluate(state.params, eval_fn, run.data.selection, f'epoch_{epoch:03d}')
    run.writer.write_scalars(int(state.step), {
        **{f'{run.data.selection.name}/mAP@{t:.2f}': m
           for t, m in zip(summary['tiou'], summary['mAP'])},
        **{f'{run.data.selection.name}/average_mAP_{k}': v
           for k, v in summary['average_mAP'].items()}})
    is_best = summary['selection'] > history['best']
    if is_best:
      history = {'best': summary['selection'], 'best_epoch': epoch}
  run.checkpoints.save(state, {'position': position.to_dict(), 'history': history},
                       is_best=is_best)
  return history


def final_report(run: Run, state: TrainState, history: dict, eval_fn) -> None:
  """The best checkpoint on the test split (and plots of a few test videos)."""
  run.checkpoints.wait_until_finished()
  if history['best_epoch'] == 0:
    return
  best_params = checkpoint.restore_params(str(epath.Path(run.workdir) / 'best'), state)
  summary = run.evaluate(best_params, eval_fn, run.data.test, 'best_test',
                         plots=run.config.eval.num_plots)
  if run.is_lead:
    reporting.write_json_atomically(epath.Path(run.workdir) / 'results.json', {
        'best_epoch': history['best_epoch'], 'selection_split': run.data.selection.name,
        'selection_metric': run.config.train.selection_metric, **summary})
    logging.info('Best epoch %d (selected on %s by %s); test mAP:\n%s', history['best_epoch'],
                 run.data.selection.name, run.config.train.selection_metric,
                 reporting.format_table(summary))


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Evaluation only: config.eval.checkpoint (orbax folder or official .pth) on the test split."""
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    run = Run(config, workdir, mesh)
    try:
      state = create_train_state(config, run.model, run.tx, run.mesh)
      source = config.eval.checkpoint or str(epath.Path(workdir) / 'best')
      params = checkpoint.restore_params(source, state)
      params = jax.device_put(params, sharding.replicated_sharding(run.mesh))
      return run.evaluate(params, jit_eval_step(run.model, run.mesh), run.data.test, 'evaluation')
    finally:
      run.close()
