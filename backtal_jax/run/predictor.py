"""Prediction: a trained model on feature files of videos nobody annotated.

It goes through the evaluator's own path (`evaluate_only.restore_model`, `Evaluator.detect`):
batched, jitted on the device mesh, streamed from disk, post-processed as the official code does; so
its detections are those an evaluation-only run gives on the same features.
"""

from collections.abc import Sequence
import time

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np

from backtal_jax.core import errors
from backtal_jax.core import files
from backtal_jax.core import sharding
from backtal_jax.data import annotations
from backtal_jax.data import datasets
from backtal_jax.data import features
from backtal_jax.data import unannotated
from backtal_jax.evaluation import evaluator
from backtal_jax.reporting import evaluation_report
from backtal_jax.run import evaluate_only
from backtal_jax.run import preflight


def class_names_for(config: ml_collections.ConfigDict,
                    ground_truth: annotations.GroundTruth | None) -> tuple[str, ...]:
  """Detection labels: those of the ground truth scored against, else of config.eval.ground_truth
  (the one the model was trained with)."""
  ground_truth = ground_truth or annotations.load_ground_truth(config.eval.ground_truth)
  datasets.check_class_count(ground_truth, config)
  return ground_truth.class_names


class Predictor:
  """A trained model on this host's devices, ready to localise actions in unannotated videos.

    predictor = Predictor(config, 'WORKDIR/best')   # or an official .pth file
    detections = predictor.detect(features_TxF, duration=212.3, fps=30)
  """

  def __init__(self, config: ml_collections.ConfigDict, checkpoint: str,
               class_names: Sequence[str] = ()):
    self.mesh = sharding.make_mesh()
    preflight.check_config(config, self.mesh.size, training=False)
    datasets.check_shapes(config)
    self.config = config
    self.class_names = tuple(class_names) or class_names_for(config, None)
    with jax.set_mesh(self.mesh):
      model, self.params = evaluate_only.restore_model(config, checkpoint, self.mesh)
      self.evaluator = evaluator.Evaluator(config, model, self.mesh)

  def detect_videos(self, videos: Sequence[unannotated.UnannotatedVideo], keep: int = 0
                    ) -> tuple[dict[str, list], dict[str, dict[str, np.ndarray]]]:
    """Detections per video name, and the model outputs of the first `keep` videos (plots)."""
    with jax.set_mesh(self.mesh):
      return self.evaluator.detect(self.params, unannotated.FileSource(videos, self.config),
                                   self.class_names, keep)

  def detect(self, features_TxF: np.ndarray, *, duration: float, fps: float | None = None,
             frame_num: int | None = None, name: str = 'video') -> list[dict]:
    """Detections of one video in the ActivityNet results format.

    Args:
      features_TxF: its I3D snippet features [T, F] (RGB then flow), any T: they are resampled to
        config.data.num_segments as the official features were.
      duration: the video's length in seconds.
      fps: its frame rate; with `duration` it gives frame_num, the number of 16-frame snippets the
        CAS is stretched to. Give `frame_num` instead if known.
      name: the video's name, for logs.
    """
    features_TxF = np.asarray(features_TxF)
    feature_dim = self.config.data.feature_dim
    if features_TxF.ndim != 2 or features_TxF.shape[1] != feature_dim or not len(features_TxF):
      raise errors.UserError(f'{name}: features of shape {features_TxF.shape}, expected (T, '
                             f'{feature_dim}) with T >= 1')
    if frame_num is None and fps is None:
      raise errors.UserError(f'{name}: give fps (or frame_num) with the duration')
    if frame_num is None:
      frame_num = annotations.snippet_count(duration, fps, self.config.data.frames_per_snippet)
    video = unannotated.UnannotatedVideo(
        vid_name=name, path=None, num_snippets=len(features_TxF), frame_num=int(frame_num),
        fps=features.METADATA_MISSING if fps is None else float(fps), duration=float(duration))
    with jax.set_mesh(self.mesh):
      detections, _ = self.evaluator.detect(
          self.params, unannotated.ArraySource(video, features_TxF, self.config),
          self.class_names, batch_size=jax.device_count())
    return detections[name]


def predict(config: ml_collections.ConfigDict, checkpoint: str, feature_paths: Sequence[str],
            output: str, *, plots: str = '', num_plots: int = 8, ground_truth: str = '',
            subset: str = '', metadata_csv: str = '', duration: float | None = None,
            fps: float | None = None) -> dict | None:
  """Detections of every video of `feature_paths` (files or folders) written to `output`; with a
  ground truth also its mAP summary, which is returned. Inputs, metadata, the ground truth and the
  checkpoint are all checked before the first video is read."""
  problem = (files.output_file_problem(output, '--output') or
             (plots and files.folder_problem(plots)))
  if problem:
    raise errors.UserError(problem)
  videos = unannotated.find_videos(feature_paths, config, metadata_csv=metadata_csv,
                                   duration=duration, fps=fps)
  truth = annotations.load_ground_truth(ground_truth) if ground_truth else None
  subset = subset or config.eval.subset
  if truth and not any(video.subset == subset for video in truth.videos.values()):
    raise errors.UserError(f'{truth.path}: no video in subset {subset!r} (--subset); subsets: '
                           f'{sorted({video.subset for video in truth.videos.values()})}')
  predictor = Predictor(config, checkpoint, class_names_for(config, truth))
  started = time.monotonic()
  detections, kept = predictor.detect_videos(videos, keep=num_plots if plots else 0)
  seconds = time.monotonic() - started
  logging.info('Detections of %d videos in %.1f s (%.2f videos/s)', len(detections), seconds,
               len(detections) / seconds)
  if jax.process_index() == 0:
    files.write_json_atomically(epath.Path(output), evaluation_report.detections_file(detections))
    logging.info('Wrote %s', output)
    if plots:
      predictor.evaluator.plot(plots, kept, detections, predictor.class_names,
                               truth.videos if truth else {})
  if truth is None:
    return None
  split = datasets.EvalSplit('predicted', unannotated.FileSource(videos, config), truth,
                             str(truth.path), subset)
  summary = evaluator.score_detections(detections, split, config)
  logging.info('mAP against %s (subset %s):\n%s', truth.path, split.subset,
               evaluation_report.format_table(summary))
  return summary
