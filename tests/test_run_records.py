"""What a run shows and records, through the real command line: console lines, run records,
TensorBoard events and plots of a debug training, then its config.json loaded back."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from backtal_jax.reporting import run_records
from configs import activitynet12
from configs import hacs
from configs import thumos

REPO = pathlib.Path(__file__).resolve().parents[1]


def main(*flags):
  return subprocess.run([sys.executable, '-m', 'backtal_jax.main', *flags], cwd=REPO,
                        capture_output=True, text=True, timeout=900, check=False,
                        env={**os.environ, 'PYTHONPATH': str(REPO)})


@pytest.mark.parametrize('config', [thumos.get_config('synthetic'), activitynet12.get_config(),
                                    hacs.get_config()])
def test_config_json_keeps_values_tuples_and_placeholder_types(config):
  config.data.tfds_data_dir = '/data/tfds'  # a placeholder that is set
  loaded = run_records.config_from_json(run_records.config_to_json(config))
  assert loaded.to_dict() == config.to_dict() and str(loaded) == str(config)
  assert isinstance(loaded.eval.tiou_thresholds, tuple)
  loaded.lock()
  loaded.eval.checkpoint = '/a/checkpoint'  # an unset placeholder still takes a string
  with pytest.raises(TypeError):
    loaded.eval.checkpoint = 3


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A debug training through the command line."""
  workdir = tmp_path_factory.mktemp('cli') / 'run'
  result = main('--config=configs/thumos.py:debug', f'--workdir={workdir}',
                '--config.train.seed=7')
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result.stderr


@pytest.mark.slow
def test_console_one_line_per_evaluation_and_the_table_at_the_end(trained):
  _, console = trained
  evaluations = [line for line in console.splitlines() if ' | mAP_0.50 ' in line]
  assert len(evaluations) == 2
  assert evaluations[0].endswith(' s') and '| new best |' in evaluations[0]
  assert console.count('  mAP (%)') == 1
  assert console.rindex('  mAP (%)') > console.rindex(' | mAP_0.50 ')
  epochs = [line for line in console.splitlines() if 'steps/s | ETA' in line]
  assert [line.split('] ')[1].split(' |')[0] for line in epochs] == ['epoch 1/2', 'epoch 2/2']
  assert all('grad_norm' in line for line in epochs)


@pytest.mark.slow
def test_run_records(trained):
  workdir, console = trained
  record = json.loads((workdir / 'run.json').read_text())
  assert set(record['versions']) >= {'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint'}
  assert record['devices']['device_count'] == len(record['devices']['devices']) >= 1
  assert record['command'][-1] == '--config.train.seed=7'
  head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True, text=True,
                        check=False).stdout.strip()
  assert record['git'] is None if not head else record['git']['commit'] == head
  assert 'seed: 7' in (workdir / 'config.txt').read_text()
  (log,) = (workdir / 'logs').glob('*.log')
  logged = log.read_text()
  assert 'Run records' in logged and 'new best' in logged and '  mAP (%)' in logged
  assert set(logged.splitlines()) <= set(console.splitlines())
  phases = json.loads((workdir / 'phases.json').read_text())
  assert {'setup', 'datasets', 'preflight', 'input', 'train_steps', 'checkpoint', 'evaluation',
          'final_evaluation', 'final_outputs'} <= set(phases['seconds'])
  assert sum(phases['seconds'].values()) <= phases['ended_unix'] - phases['started_unix'] + 0.01
  assert phases['compile_seconds']['train_steps'] > 0  # the step compiles at its first call


@pytest.mark.slow
def test_tensorboard_holds_what_a_run_shows(trained):
  workdir, _ = trained
  event_accumulator = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
  events = event_accumulator.EventAccumulator(
      str(workdir / 'tensorboard'), size_guidance={event_accumulator.IMAGES: 0,
                                                   event_accumulator.SCALARS: 0}).Reload()
  tags = events.Tags()
  assert {'train/grad_norm', 'train/learning_rate', 'train/steps_per_second', 'train/loss',
          'train/base', 'train/separation', 'test/mAP_0.50',
          'test/mAP_avg_0.1_0.7'} <= set(tags['scalars'])
  assert all(e.value > 0 for e in events.Scalars('train/grad_norm'))
  (config_text,) = events.Tensors('config')
  assert b'seed: 7' in config_text.tensor_proto.string_val[0]
  (plot,) = [t for t in tags['images'] if t.startswith('best_test/')]
  (image,) = events.Images(plot)
  png = (workdir / 'plots' / 'best_test' / f'{plot.split("/")[1]}.png').read_bytes()
  assert image.encoded_image_string == png


@pytest.mark.slow
def test_recorded_config_loads_back_through_the_command_line(trained, tmp_path):
  workdir, _ = trained
  again = tmp_path / 'again'
  result = main(f'--config=configs/from_json.py:{workdir / "config.json"}', f'--workdir={again}',
                '--config.eval.only=True', f'--config.eval.checkpoint={workdir / "best"}',
                f'--config.data.features_root={workdir / "synthetic_data"}',
                '--config.eval.plot_videos=("video_test_0000006",)')
  assert result.returncode == 0, result.stderr[-3000:]
  first = json.loads((workdir / 'config.json').read_text())
  second = json.loads((again / 'config.json').read_text())
  assert second['placeholder_types'] == first['placeholder_types']
  changed = {'only': True, 'checkpoint': str(workdir / 'best'),
             'plot_videos': ['video_test_0000006']}
  assert second['config']['eval'] == {**first['config']['eval'], **changed}
  assert second['config']['data'] == {**first['config']['data'],
                                      'features_root': str(workdir / 'synthetic_data')}
  assert {k: v for k, v in second['config'].items() if k not in ('eval', 'data')} == {
      k: v for k, v in first['config'].items() if k not in ('eval', 'data')}
  trained_results = json.loads((workdir / 'results.json').read_text())
  assert json.loads((again / 'results.json').read_text())['mAP'] == trained_results['mAP']
  assert (again / 'plots' / 'evaluation' / 'video_test_0000006.png').exists()
  assert '  mAP (%)' in result.stderr
