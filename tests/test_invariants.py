"""The invariants every command keeps (README, "When something goes wrong"), one regression test
per defect that issue 21's probe found. Most run in-process on one finished debug run."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import numpy as np
import pytest

from backtal_jax import evaluate
from backtal_jax.core import errors
from backtal_jax.data import features
from backtal_jax.data import unannotated
from backtal_jax.run import evaluate_only
from backtal_jax.run import final_report
from backtal_jax.run import predictor
from backtal_jax.run import preflight
from backtal_jax.run import run_identity
from backtal_jax.run import train
from backtal_jax.run import workdir_lock
from configs import thumos
from tests.conftest import debug_config
from tests.conftest import snapshot

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu'}


@pytest.fixture
def finished(finished_run):
  """(testbed, workdir) of the finished debug run (conftest.py): never changed, copied first."""
  return finished_run


def copy_of(finished, tmp_path) -> pathlib.Path:
  workdir = tmp_path / 'run'
  shutil.copytree(finished[1], workdir)
  return workdir


def test_a_refused_run_changes_nothing_in_the_workdir(finished):
  testbed, workdir = finished
  before = snapshot(workdir)
  config = debug_config(testbed, batch_size=0)
  config.model.hidden_dim = 999
  with pytest.raises(preflight.PreflightError, match='config.train.batch_size is 0'):
    train.train_and_evaluate(config, str(workdir))
  assert snapshot(workdir) == before


def test_a_resume_that_changes_what_is_trained_is_refused_naming_both_values(finished):
  testbed, workdir = finished
  before = snapshot(workdir)
  config = debug_config(testbed, batch_size=4, num_epochs=4, learning_rate=1e-3,
                        supervision='both', seed=7)
  with pytest.raises(run_identity.IdentityChanged) as error:
    train.train_and_evaluate(config, str(workdir))
  message = str(error.value)
  for line in ('config.train.batch_size: 8 in the run, 4 now',
               'config.train.learning_rate: 0.0001 in the run, 0.001 now',
               "config.train.supervision: 'background' in the run, 'both' now",
               'config.train.seed: 38 in the run, 7 now'):
    assert line in message
  assert 'num_epochs' not in message  # a resume may train longer
  assert snapshot(workdir) == before


def test_the_fields_a_resume_may_change_are_the_documented_list():
  page = (REPO / 'docs' / 'when_something_goes_wrong.md').read_text()
  for name in run_identity.RESUMABLE_FIELDS:
    assert f'`{name}`' in page, name
  assert '`eval.*`' in page


def test_a_width_mismatch_without_config_json_is_refused_before_any_record(finished, tmp_path):
  testbed, _ = finished
  workdir = copy_of(finished, tmp_path)
  (workdir / 'config.json').unlink()  # a workdir of an older version: only the shapes tell
  before = snapshot(workdir)
  config = debug_config(testbed)
  config.model.hidden_dim = 32
  with pytest.raises(errors.UserError, match='conv_1'):
    train.train_and_evaluate(config, str(workdir))
  assert snapshot(workdir) == before  # no records, no TensorBoard file


def test_evaluation_only_writes_its_own_folder_and_waits_for_no_training(finished, tmp_path):
  testbed, _ = finished
  workdir = copy_of(finished, tmp_path)
  before = snapshot(workdir)
  config = debug_config(testbed)
  config.eval.only = True
  with workdir_lock.held(str(workdir)):  # a training runs there
    with pytest.raises(workdir_lock.WorkdirInUse):
      evaluate_only.evaluate_checkpoint(config, str(workdir))
  summary = evaluate_only.evaluate_checkpoint(config, str(workdir))
  after = snapshot(workdir)
  assert {k: v for k, v in after.items() if not k.startswith('evaluation/')} == before
  assert json.loads(after['evaluation/results.json'])['mAP'] == summary.mAP
  assert json.loads(after['evaluation/config.json'])['config']['eval']['only'] is True


def test_a_best_left_by_an_earlier_run_is_refused(finished, tmp_path):
  testbed, _ = finished
  workdir = copy_of(finished, tmp_path)
  shutil.rmtree(workdir / 'checkpoints')
  before = snapshot(workdir)
  with pytest.raises(errors.UserError, match=r'best holds a checkpoint of an earlier run'):
    train.train_and_evaluate(debug_config(testbed), str(workdir))
  assert snapshot(workdir) == before


def test_a_file_where_a_folder_goes_is_refused_before_any_work(finished, tmp_path):
  testbed, _ = finished
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'checkpoints').write_text('')
  with pytest.raises(errors.UserError, match='checkpoints is a file, where the run writes a'):
    train.train_and_evaluate(debug_config(testbed), str(workdir))
  assert sorted(p.name for p in workdir.iterdir()) == ['LOCK', 'checkpoints']


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(finished, tmp_path):
  workdir = copy_of(finished, tmp_path)
  arrays = sorted((workdir / 'checkpoints' / '6' / 'state').rglob('d/*'))
  arrays[-1].unlink()  # one array file lost
  (workdir / 'detections' / 'epoch_002.json').unlink()
  (workdir / 'results.json').unlink()  # not finished: a finished run would stop at once
  state = train.train_and_evaluate(debug_config(finished[0]), str(workdir))  # epoch 2 again
  assert int(state.step) == 6
  detections = 'detections/epoch_002.json'
  assert (workdir / detections).read_text() == (finished[1] / detections).read_text()


def test_a_stop_signal_during_the_final_evaluation_keeps_its_results(finished, tmp_path,
                                                                   monkeypatch):
  workdir = copy_of(finished, tmp_path)
  (workdir / 'results.json').unlink()
  report = final_report.final_report

  def signalled(*args):
    os.kill(os.getpid(), signal.SIGTERM)
    report(*args)

  monkeypatch.setattr(final_report, 'final_report', signalled)
  with pytest.raises(errors.Stopped) as stopped:
    train.train_and_evaluate(debug_config(finished[0]), str(workdir))
  assert stopped.value.exit_status == 128 + signal.SIGTERM
  assert json.loads((workdir / 'results.json').read_text())['best_epoch'] >= 1


SAVE_FAILS = """
import pathlib, runpy, shutil, sys
from backtal_jax.run import checkpoint
workdir = pathlib.Path(sys.argv[1])
save = checkpoint.Checkpoints.save
def failing_save(self, state, record, **kwargs):
  shutil.rmtree(workdir / 'checkpoints')
  (workdir / 'checkpoints').write_text('')  # orbax's thread cannot make its folder
  save(self, state, record, **kwargs)
checkpoint.Checkpoints.save = failing_save
sys.argv = ['main', '--config=configs/thumos.py:debug', f'--workdir={workdir}',
            f'--config.data.features_root={sys.argv[2]}', '--config.eval.num_plots=0',
            '--config.train.num_epochs=3']
runpy.run_module('backtal_jax.main', run_name='__main__')
"""


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_ends_the_run_instead_of_hanging(finished, tmp_path):
  workdir = copy_of(finished, tmp_path)
  result = subprocess.run([sys.executable, '-c', SAVE_FAILS, str(workdir), str(finished[0])],
                          cwd=REPO, env={**ENV, 'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'},
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 1, result.stderr[-3000:]
  assert result.stderr.rstrip().splitlines()[-1].startswith('error: '), result.stderr[-3000:]
  assert 'Not a directory' in result.stderr.rstrip().splitlines()[-1]
  assert 'Best epoch' not in result.stderr  # stopped at the failed save: no final report
  assert 'Traceback' not in result.stderr  # orbax's own logs of it too: one line each


def parse(argv, tmp_path, capsys):
  """errors.parse_flags on the main command's flags: the status and the stderr lines."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=flag_values, lock_config=True)
  flags.DEFINE_string('workdir', None, '', flag_values=flag_values)
  with pytest.raises(SystemExit) as exit_:
    errors.parse_flags(['main', *argv, f'--workdir={tmp_path}'], flag_values)
  return exit_.value.code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize('argv, message', [
    (['--config=configs/nope.py'], "error: --config=configs/nope.py: [Errno 2] No such file"),
    (['--config=configs/thumos.py:nope'],
     "error: flag --config=configs/thumos.py:nope: configs/thumos.py: unknown variant 'nope'"),
])
def test_a_mistake_in_the_config_flag_is_one_error_line(argv, message, tmp_path, capsys):
  status, lines = parse(argv, tmp_path, capsys)
  assert status == 1 and len(lines) == 1 and lines[0].startswith(message), lines


@pytest.mark.parametrize('override, message', [
    ('--config.train.num_epoch=3', "error: --config.train.num_epoch: the config has no field "
     "'num_epoch' (did you mean 'num_epochs'?)"),
    ('--config.train.num_epochs=2.5',
     'error: flag --config.train.num_epochs=2.5: invalid literal for int()'),
])
def test_an_override_mistake_is_one_error_line(override, message, tmp_path):
  # Overrides are flags config_flags defines on the global FlagValues: through the command.
  result = subprocess.run([sys.executable, '-m', 'backtal_jax.main',
                           '--config=configs/thumos.py:debug', f'--workdir={tmp_path / "run"}',
                           override], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=120, check=False)
  lines = [line for line in result.stderr.splitlines() if not line.startswith(('I1', 'W1'))]
  assert result.returncode == 1 and lines == [lines[0]] and lines[0].startswith(message), lines
  assert not (tmp_path / 'run').exists()


def test_a_truncated_config_json_is_one_error_line(tmp_path, capsys):
  (tmp_path / 'config.json').write_text('{"config": {"model": ')
  status, lines = parse([f'--config=configs/from_json.py:{tmp_path / "config.json"}'], tmp_path,
                        capsys)
  assert status == 1 and len(lines) == 1, lines
  assert 'config.json: not a config.json that a run wrote (JSONDecodeError' in lines[0]


def test_prediction_checks_its_output_before_reading_any_video(tmp_path):
  with pytest.raises(errors.UserError, match='--output=.*folder .*nowhere does not exist'):
    predictor.predict(thumos.get_config('debug'), str(tmp_path / 'no_checkpoint'),
                      [str(tmp_path / 'no_features')], str(tmp_path / 'nowhere' / 'out.json'))


def write_npy(path, snippets, width=16):
  np.save(path, np.ones((snippets, width), np.float32))


def test_an_empty_or_truncated_file_late_in_a_folder_stops_before_any_video_is_read(tmp_path):
  config = thumos.get_config('debug')
  for i in range(3):
    write_npy(tmp_path / f'a{i}.npy', 20)
  write_npy(tmp_path / 'z_empty.npy', 0)
  with pytest.raises(features.FeatureFileError, match="z_empty.npy: key 'array': no snippet"):
    unannotated.find_videos([str(tmp_path)], config, duration=10, fps=25)
  (tmp_path / 'z_empty.npy').unlink()
  write_npy(tmp_path / 'z_cut.npy', 20)
  data = (tmp_path / 'z_cut.npy').read_bytes()
  (tmp_path / 'z_cut.npy').write_bytes(data[:-40])
  with pytest.raises(features.FeatureFileError, match="z_cut.npy: key 'array': truncated"):
    unannotated.find_videos([str(tmp_path)], config, duration=10, fps=25)


def test_a_square_feature_half_is_refused_as_ambiguous(tmp_path):
  half = np.ones((8, 8), np.float32)  # 8 snippets at the debug width 8: both layouts fit
  np.savez(tmp_path / 'v.npz', feat_spa=half, feat_tem=half)
  with pytest.raises(features.FeatureFileError, match='reads both channels-first and'):
    unannotated.find_videos([str(tmp_path)], thumos.get_config('debug'), duration=10, fps=25)


def test_metadata_errors_name_the_video_and_a_byte_order_mark_is_read(tmp_path):
  config = thumos.get_config('debug')
  write_npy(tmp_path / 'clip.npy', 20)
  csv = tmp_path / 'meta.csv'
  csv.write_text('\ufeffvid_name,duration,fps\nclip,0.1,25\n', encoding='utf-8')
  with pytest.raises(unannotated.InputError, match=r'clip \(.*clip.npy\): a duration \(0.1 s\) '
                     'of no whole 16-frame snippet'):
    unannotated.find_videos([str(tmp_path / 'clip.npy')], config, metadata_csv=str(csv))
  csv.write_text('\ufeffvid_name,duration,fps\nclip,10,25\n', encoding='utf-8')
  (video,) = unannotated.find_videos([str(tmp_path / 'clip.npy')], config, metadata_csv=str(csv))
  assert (video.duration, video.frame_num) == (10.0, 16)
  with pytest.raises(unannotated.InputError, match='--duration is inf, expected a positive'):
    unannotated.find_videos([str(tmp_path / 'clip.npy')], config, duration=float('inf'), fps=25)


@pytest.mark.parametrize('segment', [[5.0, 2.0], [float('nan'), 2.0]])
def test_a_bad_ground_truth_segment_is_refused(segment, tmp_path):
  truth = {'database': {'v': {'subset': 'test', 'annotations': [
      {'label': 'a', 'segment': segment}]}}}
  predictions = {'results': {'v': [{'label': 'a', 'segment': [1.0, 2.0], 'score': 0.5}]}}
  (tmp_path / 'gt.json').write_text(json.dumps(truth))
  (tmp_path / 'pred.json').write_text(json.dumps(predictions))
  with pytest.raises(errors.UserError, match="video 'v': bad ground-truth segment"):
    evaluate.evaluate(str(tmp_path / 'gt.json'), str(tmp_path / 'pred.json'), 'test', (0.5,))


def test_a_full_disk_is_a_users_error():
  assert errors.is_user_error(OSError(28, 'No space left on device'))
  assert not errors.is_user_error(OSError(5, 'Input/output error'))
