"""The end of a training run: the best epoch on the test split, results.json, and the console's
last lines, which name the best epoch's folder, the command that predicts with it and where each
output went. Also the check that makes a finished run, started again, stop at once."""

from absl import logging
from etils import epath
import ml_collections

from backtal_jax.reporting import evaluation_report
from backtal_jax.run import checkpoint
from backtal_jax.run import history as history_lib


def predict_command(workdir: str) -> str:
  """The command that runs the run's best epoch on new features (its config comes from the
  run's config.json)."""
  return (f'python -m backtal_jax.predict --checkpoint={epath.Path(workdir) / "best"} '
          '--features=YOUR_FEATURES --output=detections.json')


def is_finished(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """Whether `workdir` holds a run that trained every epoch and wrote its results.json."""
  root = epath.Path(workdir)
  record = checkpoint.latest_record(root / 'checkpoints')
  if record is None or not (root / 'results.json').is_file():
    return False
  # The last epoch's checkpoint is marked as awaiting its evaluation (train.finish_epoch);
  # results.json, written after every evaluation, says that it happened.
  return record.position.epoch >= config.train.num_epochs and not record.position.step


def output_lines(workdir: str, best_folder: epath.Path | None) -> list[str]:
  """Where a run's outputs are, one per line, those that exist."""
  root = epath.Path(workdir)
  outputs = [
      ('results.json', 'the best epoch and its test mAP'),
      ('detections/best_test.json', 'its test detections (ActivityNet format)'),
      ('plots/best_test', 'plots of a few test videos'),
      (f'best/{best_folder.name}' if best_folder else 'best', 'the best parameters'),
      ('checkpoints', 'the latest state, to resume'),
      ('tensorboard', f'tensorboard --logdir={root / "tensorboard"}'),
      ('config.json', 'the config, which predict reads'),
      ('logs', 'this console, per invocation'),
  ]
  return [f'  {root / name}  ({what})' for name, what in outputs if (root / name).exists()]


def final_test_summary(run, state, best_epoch: int) -> evaluation_report.EvaluationSummary:
  """The best epoch on the test split, with its detections and plots as 'best_test'.

  When the test split picks the best epoch (the official protocol) and this process scored that
  epoch, that scoring is reported again instead of recomputed: the same parameters on the same
  split give the same numbers, and it kept the plot inputs. Otherwise (held-out selection, or
  a resumed run whose best epoch was scored before) `best/` is restored and evaluated.
  `run`: the train.Run."""
  config = run.config
  if run.best_test is not None and run.best_test[0] == best_epoch:
    return run.evaluator.report(run.best_test[1], run.data.test, 'best_test',
                                num_plots=config.eval.num_plots,
                                plot_videos=config.eval.plot_videos)
  best_params = checkpoint.restore_params(str(epath.Path(run.workdir) / 'best'), state.params,
                                          flag="the run's best/")
  return run.evaluator.evaluate(best_params, run.data.test, 'best_test',
                                num_plots=config.eval.num_plots,
                                plot_videos=config.eval.plot_videos)


def final_report(run, state, history: history_lib.History) -> None:
  """The best checkpoint on the test split (and plots of a few test videos), results.json, and
  the console's last lines. `run`: the train.Run."""
  with run.phases('checkpoint'):
    run.checkpoints.wait_until_finished()
  if history.best_epoch == 0:
    return
  with run.phases('final_evaluation'):
    summary = final_test_summary(run, state, history.best_epoch)
  run.writer.write_images(int(state.step), {f'best_test/{name}': png for name, png in
                                            run.evaluator.plot_images('best_test').items()})
  best_folder = run.checkpoints.best_folder()
  run.evaluator.write_results(summary, best_epoch=history.best_epoch,
                              best_checkpoint=str(best_folder),
                              predict_command=predict_command(run.workdir),
                              selection_split=run.data.selection.name,
                              selection_metric=run.config.train.selection_metric)
  if run.is_lead:
    logging.info('Best epoch %d (selected on %s by %s), saved in %s; test mAP:\n%s',
                 history.best_epoch, run.data.selection.name,
                 run.config.train.selection_metric, best_folder,
                 evaluation_report.format_table(summary))
    logging.info('Predict with it:\n  %s\nOutputs:\n%s', predict_command(run.workdir),
                 '\n'.join(output_lines(run.workdir, best_folder)))
