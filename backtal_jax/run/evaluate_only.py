"""The evaluation-only run (config.eval.only): a trained model restored and scored on the test
split, and the model restore that prediction shares."""

from typing import Any

from absl import logging
from etils import epath
import jax
import ml_collections

from backtal_jax.core import errors
from backtal_jax.core import files
from backtal_jax.core import sharding
from backtal_jax.data import datasets
from backtal_jax.evaluation import evaluator as evaluator_lib
from backtal_jax.model import network
from backtal_jax.reporting import evaluation_report
from backtal_jax.reporting import run_records
from backtal_jax.run import checkpoint
from backtal_jax.run import preflight
from backtal_jax.run import train_state
from backtal_jax.run import workdir_lock

EVALUATION_FOLDER = 'evaluation'  # in a training's workdir: the evaluation-only run's outputs


def restore_model(config: ml_collections.ConfigDict, path: str, mesh: jax.sharding.Mesh,
                  flag: str) -> tuple[network.BackTAL, Any]:
  """The model of `config` and its parameters, replicated on `mesh`, from an orbax folder (a run's
  best/ or checkpoints/) or an official .pth file; evaluation-only runs and prediction both load
  theirs here. `flag`: where `path` came from, for errors."""
  model = train_state.make_model(config)
  params = checkpoint.restore_params(path, train_state.abstract_params(config, model, mesh),
                                     flag)
  return model, jax.device_put(params, sharding.replicated_sharding(mesh))


def output_folder(workdir: str) -> epath.Path:
  """Where an evaluation-only run writes: WORKDIR itself, or WORKDIR/evaluation when WORKDIR
  holds a training (its checkpoints), so that the training's records stay its own."""
  root = epath.Path(workdir)
  trained = checkpoint.saved_steps(root / 'checkpoints') or checkpoint.saved_best(root / 'best')
  return root / EVALUATION_FOLDER if trained else root


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str
                        ) -> evaluation_report.EvaluationSummary:
  """Evaluation only: config.eval.checkpoint (orbax folder or official .pth; default
  WORKDIR/best) on the test split, with detections, plots and results.json in `output_folder`.
  It holds WORKDIR's lock (so it waits for no training and none starts beside it), and writes
  its records only once the checkpoint, the config and the data have passed their checks."""
  mesh = sharding.make_mesh()
  ground_truth = preflight.check_config(config, mesh.size)
  is_lead = jax.process_index() == 0
  with jax.set_mesh(mesh), workdir_lock.held(workdir, enabled=is_lead):
    output = output_folder(workdir)
    for name in ('', 'detections', 'plots', 'logs'):
      problem = files.folder_problem(output / name)
      if problem:
        raise errors.UserError(problem)
    source = config.eval.checkpoint or str(epath.Path(workdir) / 'best')
    model, params = restore_model(config, source, mesh, 'config.eval.checkpoint'
                                  if config.eval.checkpoint else "the run's best/")
    test = datasets.open_datasets(config, workdir, ground_truth).test
    preflight.check_data(config, datasets.features_root(config, workdir), ground_truth)
    with run_records.recorded(config, str(output)):
      evaluator = evaluator_lib.Evaluator(config, model, mesh, str(output))
      summary = evaluator.evaluate(params, test, 'evaluation', num_plots=config.eval.num_plots,
                                   plot_videos=config.eval.plot_videos)
      evaluator.write_results(summary, checkpoint=source)
    if evaluator.is_lead:
      logging.info('Evaluation of %s on %s (%.1f s), in %s; mAP:\n%s', source, test.name,
                   summary.seconds, output, evaluation_report.format_table(summary))
    return summary
