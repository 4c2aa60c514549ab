"""Localises actions in videos nobody annotated, from their I3D features and a trained model.

  python -m backtal_jax.predict --checkpoint=WORKDIR/best --features=DIR_or_FILES \
      --output=detections.json [--plot_dir=DIR] [--ground_truth=GT.json --subset=test] \
      [--metadata_csv=FILE | --duration=S --fps=F] [--config=configs/thumos.py]

The model config comes from the run's WORKDIR/config.json; --config is needed only for an official
.pth file (or a checkpoint outside its run), and when given for a run's checkpoint its widths must
be the run's.

Feature files: official-layout .npz (`feat_spa`, `feat_tem`; `vid_name`, `duration`, `fps`,
`frame_num` used when present) or .npy [T, F]; any T. See README, "Predict on your own videos".
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from backtal_jax.core import errors
from backtal_jax.reporting import evaluation_report
from backtal_jax.reporting import logs
from backtal_jax.run import predictor

FLAGS = flags.FLAGS


def define_flags() -> None:
  config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:variant]) '
                                  'the model was trained with (default: the run\'s '
                                  'config.json beside --checkpoint).', lock_config=True)
  flags.DEFINE_string('checkpoint', None, 'Orbax folder (a run\'s best/ or '
                      'checkpoints/) or an official .pth file.')
  flags.DEFINE_list('features', None, 'Feature files (.npz, .npy) and folders of them.')
  flags.DEFINE_string('output', None, 'Detections JSON to write (ActivityNet results).')
  flags.DEFINE_string('plot_dir', '', 'If set, a folder for PNG plots of the first videos.')
  flags.DEFINE_integer('num_plots', 8, 'How many videos --plot_dir gets plots of.')
  flags.DEFINE_string('ground_truth', '', 'If set, a ground-truth JSON (or shipped '
                      'name) to score the detections against.')
  flags.DEFINE_string('subset', '', 'Ground-truth subset scored (default: '
                      'config.eval.subset).')
  flags.DEFINE_bool('score_whole_subset', False, 'Score against every video of the subset '
                    '(those without detections count as missed), not only the predicted ones.')
  flags.DEFINE_string('metadata_csv', '', 'CSV with columns vid_name,duration,fps '
                      'for videos whose files lack them.')
  flags.DEFINE_float('duration', None, 'Duration in seconds of every video whose file '
                     'and CSV row lack one.')
  flags.DEFINE_float('fps', None, 'Frame rate of every video whose file and CSV row lack one.')
  flags.mark_flags_as_required(['checkpoint', 'features', 'output'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logs.quiet_library_logs()
  summary = predictor.predict(
      FLAGS.config, FLAGS.checkpoint, FLAGS.features, FLAGS.output, plot_dir=FLAGS.plot_dir,
      num_plots=FLAGS.num_plots, ground_truth=FLAGS.ground_truth, subset=FLAGS.subset,
      score_whole_subset=FLAGS.score_whole_subset, metadata_csv=FLAGS.metadata_csv,
      duration=FLAGS.duration, fps=FLAGS.fps)
  if summary is not None:
    print(evaluation_report.format_table(summary))


if __name__ == '__main__':
  define_flags()
  errors.run(main)
