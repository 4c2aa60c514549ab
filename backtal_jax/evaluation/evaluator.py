"""Evaluation end to end, one path for training, evaluation-only runs and prediction.

The model runs jitted on the mesh; its outputs come back to the host already reduced to what
post-processing reads (CAS, softmaxed video scores, the feature norm); post-processing, the
gathering of every process's detections and the mAP run on the host in NumPy.
"""

import dataclasses
import functools
import json
import time
from typing import Any
from typing import Mapping
from typing import Sequence

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from backtal_jax.core import errors
from backtal_jax.core import fields
from backtal_jax.core import files
from backtal_jax.core import sharding
from backtal_jax.data import annotations
from backtal_jax.data import datasets
from backtal_jax.data import pipeline
from backtal_jax.evaluation import mean_ap
from backtal_jax.evaluation import postprocess
from backtal_jax.evaluation import visualize
from backtal_jax.model import network
from backtal_jax.reporting import evaluation_report

# config.eval's evaluation fields (core/fields.py), checked before the first step
CONFIG_FIELDS = {
    'eval.ground_truth': fields.text(),  # '' (HACS): the pre-flight asks for the file
    'eval.subset': fields.text(nonempty=True),
    'eval.tiou_thresholds': fields.sequence(fields.number(0, 1, low_open=True), nonempty=True),
    'eval.batch_size': fields.integer(1),
    'eval.num_plots': fields.integer(0),
    'eval.plot_videos': fields.sequence(fields.text(nonempty=True)),
}


def eval_step(params, features_BxTxF, *, model: network.BackTAL) -> dict:
  """What post-processing needs, reduced on the device: feature_supp_1 only through its norm."""
  outputs = model.apply({'params': params}, features_BxTxF, deterministic=True)
  return {
      'cas': outputs.cas_supp.astype(jnp.float32),
      'scores': jax.nn.softmax(outputs.score_supp.astype(jnp.float32), axis=-1),
      'feature_norm': jnp.linalg.norm(outputs.feature_supp_1.astype(jnp.float32), axis=-1),
  }


def jit_eval_step(model: network.BackTAL, mesh: jax.sharding.Mesh):
  data = sharding.batch_sharding(mesh)
  return jax.jit(functools.partial(eval_step, model=model),
                 in_shardings=(sharding.replicated_sharding(mesh), data), out_shardings=data)


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


def _metric_tiou(name: str, tiou_thresholds: Sequence[float]) -> int | None:
  """Which scored tIoU `name` reads: -1 for 'average', the index of X for 'map@X', else None."""
  if name == 'average':
    return -1
  try:
    matches = np.flatnonzero(np.isclose(tiou_thresholds, float(name[4:])))
  except ValueError:
    return None
  return int(matches[0]) if name.startswith('map@') and matches.size else None


def selection_metric_problems(name: str, tiou_thresholds: Sequence[float]) -> list[str]:
  """The metric must be one the evaluation computes (train.selection_metric names it)."""
  if _metric_tiou(name, tiou_thresholds) is not None:
    return []
  return [f"config.train.selection_metric is {name!r}, expected 'average' or 'map@X' with X "
          f'among config.eval.tiou_thresholds {list(tiou_thresholds)}']


def selection_metric(summary: evaluation_report.EvaluationSummary, name: str) -> float:
  """'average' (mean over the scored tIoUs, the official code's average mAP) or 'map@X' (mAP at
  tIoU X), as the official code."""
  index = _metric_tiou(name, summary.tiou)
  if index is None:
    raise errors.UserError(selection_metric_problems(name, summary.tiou)[0])
  return float(np.mean(summary.mAP)) if index == -1 else summary.mAP[index]


def score_detections(detections: dict, split: datasets.EvalSplit,
                     config: ml_collections.ConfigDict) -> evaluation_report.EvaluationSummary:
  """mAP per tIoU and the reported averages; the selection metric under `selection`."""
  thresholds = tuple(config.eval.tiou_thresholds)
  map_U, _ = mean_ap.detection_map(split.ground_truth_json,
                                   evaluation_report.detections_file(detections),
                                   subset=split.subset, tiou_thresholds=thresholds)
  summary = evaluation_report.EvaluationSummary.of(map_U, thresholds)
  summary.selection = selection_metric(summary, config.train.selection_metric)
  return summary


@dataclasses.dataclass
class Scored:
  """One evaluation before anything is written: its summary, the detections and the plot inputs
  of the videos `Evaluator.detect` kept."""
  summary: evaluation_report.EvaluationSummary
  detections: dict[str, list]
  kept: dict[str, dict[str, np.ndarray]]


class Evaluator:
  """A model on a mesh, turned into detections, scores and the files a researcher reads."""

  def __init__(self, config: ml_collections.ConfigDict, model: network.BackTAL,
               mesh: jax.sharding.Mesh, workdir: str = ''):
    """`workdir`: where `evaluate` and `write_results` write (prediction writes elsewhere)."""
    self.config, self.mesh, self.workdir = config, mesh, workdir
    self.is_lead = jax.process_index() == 0
    self._eval_fn = jit_eval_step(model, mesh)

  def detect(self, params, source: pipeline.Source, class_names, num_plots: int = 0,
             plot_videos: Sequence[str] = (), batch_size: int = 0
             ) -> tuple[dict[str, list], dict[str, dict[str, np.ndarray]]]:
    """Detections of every video of `source`, gathered from all processes, and, for plots, what
    post-processing read (cas, scores, feature_norm, frame_num, duration, click_labels) of the
    first `num_plots` videos this process read and of those named in `plot_videos`. `batch_size`:
    global videos per step (0: config.eval.batch_size)."""
    config = self.config
    detections, kept = {}, {}
    for batch, metadata in pipeline.eval_batches(
        source, global_batch_size=batch_size or config.eval.batch_size,
        spec=datasets.batch_spec(config),
        prefetch=config.data.prefetch, process_index=jax.process_index(),
        process_count=jax.process_count()):
      features = sharding.to_global_batch({'features': batch['features']},
                                          sharding.batch_sharding(self.mesh))['features']
      outputs = {k: sharding.local_rows(v) for k, v in self._eval_fn(params, features).items()}
      for row, video in enumerate(metadata):
        if video is None:
          continue
        detections[video.vid_name] = postprocess.detect_video(
            outputs['cas'][row], outputs['scores'][row], outputs['feature_norm'][row][:, None],
            frame_num=video.frame_num, duration=video.duration, class_names=class_names,
            config=config)
        if len(kept) < num_plots or video.vid_name in plot_videos:
          kept[video.vid_name] = {**{k: v[row] for k, v in outputs.items()},
                                  'frame_num': video.frame_num, 'duration': video.duration,
                                  'click_labels': batch['click_labels'][row]}
    return gather_from_processes(detections), kept

  def evaluate(self, params, split: datasets.EvalSplit, tag: str, num_plots: int = 0,
               plot_videos: Sequence[str] = ()) -> evaluation_report.EvaluationSummary:
    """mAP of `params` on `split`; detections JSON under the workdir, and PNGs of `num_plots`
    videos and of those named in `plot_videos`. The caller logs the result (a line or a table)."""
    return self.report(self.score(params, split, num_plots, plot_videos), split, tag, num_plots,
                       plot_videos)

  def score(self, params, split: datasets.EvalSplit, num_plots: int = 0,
            plot_videos: Sequence[str] = ()) -> Scored:
    """`params` on `split`, keeping the plot inputs of `num_plots` videos and of the named
    ones."""
    started = time.monotonic()
    detections, kept = self.detect(params, split.source, split.ground_truth.class_names,
                                   num_plots, plot_videos)
    summary = score_detections(detections, split, self.config)
    summary.seconds = time.monotonic() - started
    return Scored(summary, detections, kept)

  def report(self, scored: Scored, split: datasets.EvalSplit, tag: str, num_plots: int = 0,
             plot_videos: Sequence[str] = ()) -> evaluation_report.EvaluationSummary:
    """Writes what `evaluate` writes for a scored evaluation; plots the named videos, and with
    `num_plots` also the kept others (the score's `num_plots`)."""
    if self.is_lead:
      folder = epath.Path(self.workdir) / 'detections'
      folder.mkdir(parents=True, exist_ok=True)
      files.write_json_atomically(folder / f'{tag}.json',
                                  evaluation_report.detections_file(scored.detections))
      missing = sorted(set(plot_videos) - set(scored.detections))
      if missing and num_plots:  # the final evaluation: named videos of no split end up here
        logging.warning('config.eval.plot_videos: %s not in the %s split; not plotted.', missing,
                        split.name)
      kept = scored.kept if num_plots else {
          name: inputs for name, inputs in scored.kept.items() if name in plot_videos}
      self.plot(epath.Path(self.workdir) / 'plots' / tag, kept, scored.detections,
                split.ground_truth.class_names, split.ground_truth.videos)
    return scored.summary

  def plot(self, plot_dir: epath.PathLike, kept: dict, detections: dict,
           class_names: Sequence[str], videos: Mapping[str, annotations.Video]) -> None:
    """PNGs of the `kept` videos in `plot_dir`; ground-truth instances are drawn for the videos
    found in `videos` (none for unannotated videos)."""
    if not kept:
      return
    plot_dir = epath.Path(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, inputs in kept.items():
      video = videos.get(name)
      visualize.plot_video(
          plot_dir / f'{name}.png', inputs, vid_name=name, frame_num=inputs['frame_num'],
          duration=inputs['duration'], class_names=class_names,
          detections=detections[name], config=self.config,
          instances=video.instances if video else (), click_labels_T=inputs['click_labels'],
          ground_truth_given=video is not None)
    logging.info('Plots of %d videos in %s', len(kept), plot_dir)

  def plot_images(self, tag: str) -> dict[str, bytes]:
    """The PNGs `plot` wrote for `tag`, by video name (for TensorBoard)."""
    plot_dir = epath.Path(self.workdir) / 'plots' / tag
    if not plot_dir.exists():
      return {}
    return {path.stem: path.read_bytes() for path in sorted(plot_dir.glob('*.png'))}

  def write_results(self, summary: evaluation_report.EvaluationSummary, **record: Any) -> None:
    """results.json in the workdir: what picked the model, then its test summary."""
    if self.is_lead:
      files.write_json_atomically(epath.Path(self.workdir) / 'results.json',
                                  {**record, **summary.to_json()})


