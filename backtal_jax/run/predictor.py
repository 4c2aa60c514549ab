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
from backtal_jax.evaluation import mean_ap
from backtal_jax.reporting import evaluation_report
from backtal_jax.reporting import run_records
from backtal_jax.run import evaluate_only
from backtal_jax.run import preflight

# The fields that fix the parameters' shapes: a config that differs here cannot load the weights.
WIDTH_FIELDS = ('model.num_classes', 'model.feat_dim', 'model.hidden_dim', 'model.filter_dim',
                'model.embed_hidden_dim', 'model.embed_dim', 'data.feature_dim')


def run_config_path(checkpoint: str) -> epath.Path | None:
  """The config.json of the run whose checkpoint this is (WORKDIR/best, WORKDIR/checkpoints or a
  step folder inside them), None for a .pth file or a folder outside a run."""
  path = epath.Path(checkpoint)
  for folder in (path.parent, path.parent.parent):
    if (folder / 'config.json').exists():
      return folder / 'config.json'
  return None


def load_run_config(path: epath.PathLike) -> ml_collections.ConfigDict:
  return run_records.config_from_json(epath.Path(path).read_text())


def _field(config: ml_collections.ConfigDict, dotted: str):
  group, name = dotted.split('.')
  return config[group][name]


def check_widths(config: ml_collections.ConfigDict, run_config: ml_collections.ConfigDict,
                 run_config_file: epath.Path, flag: str = '--config') -> None:
  """A config given for a run's checkpoint must have the run's widths."""
  for field in WIDTH_FIELDS:
    given, trained = _field(config, field), _field(run_config, field)
    if given != trained:
      raise errors.UserError(
          f'{flag}: config.{field}={given}, but the checkpoint was trained with {trained} '
          f'({run_config_file}); leave out {flag} to use the run\'s own config')


def config_for(checkpoint: str, config: ml_collections.ConfigDict | None
               ) -> ml_collections.ConfigDict:
  """The model config: `config` when given (checked against the run's widths), else the config
  the checkpoint's run recorded in its config.json."""
  run_config_file = run_config_path(checkpoint)
  if config is None:
    if run_config_file is None:
      raise errors.UserError(f'--checkpoint={checkpoint}: no config.json of a run beside it; give '
                             'the config the model was trained with as --config')
    logging.info('Model config from %s', run_config_file)
    return load_run_config(run_config_file)
  if run_config_file is not None:
    check_widths(config, load_run_config(run_config_file), run_config_file)
  return config


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
    detections = predictor.detect(features_SxF, duration=212.3, fps=30)
  """

  def __init__(self, config: ml_collections.ConfigDict, checkpoint: str,
               class_names: Sequence[str] = (), flag: str = '--checkpoint'):
    self.mesh = sharding.make_mesh()
    preflight.check_config(config, self.mesh.size, training=False)
    datasets.check_shapes(config)
    self.config = config
    self.class_names = tuple(class_names) or class_names_for(config, None)
    with jax.set_mesh(self.mesh):
      model, self.params = evaluate_only.restore_model(config, checkpoint, self.mesh, flag)
      self.evaluator = evaluator.Evaluator(config, model, self.mesh)

  @classmethod
  def from_workdir(cls, workdir: str, checkpoint: str = 'best') -> 'Predictor':
    """The run in `workdir`, from its own config.json: its `best/` (or `checkpoints/`)."""
    config_file = epath.Path(workdir) / 'config.json'
    if not config_file.exists():
      raise errors.UserError(f'{workdir}: no config.json; not the workdir of a training run')
    return cls(load_run_config(config_file), str(epath.Path(workdir) / checkpoint),
               flag=f'Predictor.from_workdir({workdir!r})')

  def detect_videos(self, videos: Sequence[unannotated.UnannotatedVideo], num_plots: int = 0
                    ) -> tuple[dict[str, list], dict[str, dict[str, np.ndarray]]]:
    """Detections per video name, and the model outputs of the first `num_plots` videos."""
    with jax.set_mesh(self.mesh):
      return self.evaluator.detect(self.params, unannotated.FileSource(videos, self.config),
                                   self.class_names, num_plots)

  def detect(self, features_SxF: np.ndarray, *, duration: float, fps: float | None = None,
             frame_num: int | None = None, name: str = 'video') -> list[dict]:
    """Detections of one video in the ActivityNet results format.

    Args:
      features_SxF: its I3D snippet features [S, F] (RGB then flow), any S: they are resampled to
        config.data.num_segments as the official features were.
      duration: the video's length in seconds.
      fps: its frame rate; with `duration` it gives frame_num, the number of 16-frame snippets the
        CAS is stretched to. Give `frame_num` instead if known.
      name: the video's name, for logs.
    """
    features_SxF = np.asarray(features_SxF)
    feature_dim = self.config.data.feature_dim
    if features_SxF.ndim != 2 or features_SxF.shape[1] != feature_dim or not len(features_SxF):
      raise errors.UserError(f'{name}: features of shape {features_SxF.shape}, expected (S, '
                             f'{feature_dim}) with S >= 1')
    if frame_num is None and fps is None:
      raise errors.UserError(f'{name}: give fps (or frame_num) with the duration')
    if frame_num is None:
      frame_num = annotations.snippet_count(duration, fps, self.config.data.frames_per_snippet)
    video = unannotated.UnannotatedVideo(
        vid_name=name, path=None, num_snippets=len(features_SxF), frame_num=int(frame_num),
        fps=features.METADATA_MISSING if fps is None else float(fps), duration=float(duration))
    with jax.set_mesh(self.mesh):
      detections, _ = self.evaluator.detect(
          self.params, unannotated.ArraySource(video, features_SxF, self.config),
          self.class_names, batch_size=jax.device_count())
    return detections[name]


def ground_truth_of(raw: dict, subset: str, detections: dict, whole_subset: bool
                    ) -> tuple[dict, str]:
  """The ground truth (parsed JSON) to score against, and a line that says which: only the
  subset's predicted videos (the default: a few videos are not scored against a whole test set),
  or all of it."""
  in_subset = [name for name, entry in raw['database'].items() if entry.get('subset') == subset]
  predicted = [name for name in in_subset if name in detections]
  if whole_subset or len(predicted) == len(in_subset):
    return raw, (f'scored against all {len(in_subset)} videos of subset {subset!r} '
                 f'({len(in_subset) - len(predicted)} without detections count as missed)')
  database = {name: raw['database'][name] for name in predicted}
  return {**raw, 'database': database}, (
      f'scored against the {len(predicted)} predicted videos of subset {subset!r} (of '
      f'{len(in_subset)}; --score_whole_subset scores them all)')


def score(detections: dict, truth: annotations.GroundTruth, subset: str,
          config: ml_collections.ConfigDict, videos: Sequence[unannotated.UnannotatedVideo],
          whole_subset: bool) -> evaluation_report.EvaluationSummary:
  """The detections' mAP summary, with the warnings and counts `evaluate` prints."""
  raw = mean_ap.load_json(str(truth.path), 'ground truth')[0]
  ground_truth, which = ground_truth_of(raw, subset, detections, whole_subset)
  predictions = evaluation_report.detections_file(detections)
  whole = evaluation_report.counts(raw, predictions, subset)
  for warning in evaluation_report.outside_subset_warnings(whole, subset):
    logging.warning('%s', warning)
  split = datasets.EvalSplit('predicted', unannotated.FileSource(videos, config), truth,
                             ground_truth, subset)
  summary = evaluator.score_detections(detections, split, config)
  logging.info('%s; %s', which, evaluation_report.format_counts(
      evaluation_report.counts(ground_truth, predictions, subset), subset))
  return summary


def predict(config: ml_collections.ConfigDict | None, checkpoint: str,
            feature_paths: Sequence[str], output: str, *, plot_dir: str = '', num_plots: int = 8,
            ground_truth: str = '', subset: str = '', score_whole_subset: bool = False,
            metadata_csv: str = '', duration: float | None = None,
            fps: float | None = None) -> evaluation_report.EvaluationSummary | None:
  """Detections of every video of `feature_paths` (files or folders) written to `output`; with a
  ground truth also its mAP summary, which is returned (the caller prints it). Inputs, metadata,
  the ground truth and the checkpoint are all checked before the first video is read. `config`:
  None takes the checkpoint's run's config.json."""
  problem = (files.output_file_problem(output, '--output') or
             (plot_dir and files.folder_problem(plot_dir)))
  if problem:
    raise errors.UserError(problem)
  config = config_for(checkpoint, config)
  videos = unannotated.find_videos(feature_paths, config, metadata_csv=metadata_csv,
                                   duration=duration, fps=fps)
  truth = annotations.load_ground_truth(ground_truth) if ground_truth else None
  subset = subset or config.eval.subset
  if truth and not any(video.subset == subset for video in truth.videos.values()):
    raise errors.UserError(f'{truth.path}: no video in subset {subset!r} (--subset); subsets: '
                           f'{sorted({video.subset for video in truth.videos.values()})}')
  predictor = Predictor(config, checkpoint, class_names_for(config, truth))
  started = time.monotonic()
  detections, kept = predictor.detect_videos(videos, num_plots=num_plots if plot_dir else 0)
  seconds = time.monotonic() - started
  logging.info('Detections of %d videos in %.1f s (%.2f videos/s)', len(detections), seconds,
               len(detections) / seconds)
  if jax.process_index() == 0:
    files.write_json_atomically(epath.Path(output), evaluation_report.detections_file(detections))
    logging.info('Wrote %s', output)
    if plot_dir:
      predictor.evaluator.plot(plot_dir, kept, detections, predictor.class_names,
                               truth.videos if truth else {})
  if truth is None:
    return None
  return score(detections, truth, subset, config, videos, score_whole_subset)
