"""One story across the commands: training, `evaluate`, `predict`, TensorBoard and results.json
give each number one name and the same value; predict reads the run's own config. (A resumed
run's TensorBoard points and a finished run started again: test_train.py.)"""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from backtal_jax.reporting import averages
from backtal_jax.reporting import evaluation_report

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 3  # configs/thumos.py:debug: 24 training videos, batch 8


def command(module, *flags, cwd=REPO):
  return subprocess.run([sys.executable, '-m', f'backtal_jax.{module}', *flags], cwd=cwd,
                        capture_output=True, text=True, timeout=600, check=False,
                        env={**os.environ, 'PYTHONPATH': str(REPO)})


def train(workdir):
  # Every class scored, so that the untrained model's detections give numbers other than 0.
  return command('main', '--config=configs/thumos.py:debug', f'--workdir={workdir}',
                 '--config.eval.class_score_thresh=0.0')


def printed_table(text: str) -> dict[str, float]:
  """The numbers of the mAP table a command printed, by name (in %, as printed)."""
  rows = re.findall(r'^(mAP_[0-9a-z_.]+) +(-?[0-9.]+)$', text, flags=re.MULTILINE)
  return {name: float(value) for name, value in rows}


def tensorboard(folder):
  event_accumulator = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
  return event_accumulator.EventAccumulator(
      str(folder), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0,
                                  event_accumulator.IMAGES: 0}).Reload()


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('story') / 'run'
  result = train(workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result.stderr


@pytest.mark.slow
def test_every_command_gives_each_name_the_same_number(run, tmp_path):
  workdir, console = run
  results = json.loads((workdir / 'results.json').read_text())
  truth = evaluation_report.EvaluationSummary.from_json(results).scalars()
  assert truth['mAP_0.10'] > 0  # else equal numbers prove little
  assert set(truth) == {*map(averages.tiou_name, results['tiou']), 'mAP_avg_0.1_0.7',
                        'mAP_avg_0.3_0.7', 'mAP_avg_0.1_0.9'}
  assert all(re.fullmatch(r'[A-Za-z0-9_.]+', name) for name in truth)

  # TensorBoard, at the best epoch's step.
  events = tensorboard(workdir / 'tensorboard')
  step = results['best_epoch'] * STEPS_PER_EPOCH
  board = {name: next(e.value for e in events.Scalars(f'test/{name}') if e.step == step)
           for name in truth}
  assert board == pytest.approx(truth, rel=1e-6)  # stored as float32

  # The training console's final table.
  assert printed_table(console) == {k: round(100 * v, 2) for k, v in truth.items()}

  # `evaluate` on the run's best-epoch detections, with the shipped ground truth's name.
  summary_file = tmp_path / 'summary.json'
  scored = command('evaluate', '--ground_truth=thumos14_gt', '--subset=test',
                   f'--predictions={workdir / "detections" / "best_test.json"}',
                   f'--output_json={summary_file}')
  assert scored.returncode == 0, scored.stderr[-3000:]
  evaluated = evaluation_report.EvaluationSummary.from_json(
      json.loads(summary_file.read_text())).scalars()
  shared = set(evaluated) & set(truth)
  assert shared == set(truth)  # evaluate scores every threshold of every average, and more
  assert {k: evaluated[k] for k in shared} == truth
  assert {k: v for k, v in printed_table(scored.stdout).items() if k in shared} == (
      printed_table(console))

  # `predict` on the testbed's test features with the run's best/, no --config, from elsewhere.
  output = tmp_path / 'detections.json'
  predicted = command('predict', f'--checkpoint={workdir / "best"}',
                      f'--features={workdir / "synthetic_data" / "test"}', f'--output={output}',
                      '--ground_truth=thumos14_gt', '--score_whole_subset', cwd=tmp_path)
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  assert 'Model config from' in predicted.stderr and 'scored against all 210' in predicted.stderr
  assert predicted.stdout.count('mAP_0.50') == 1  # the table, once
  assert printed_table(predicted.stdout) == printed_table(console)
  best_test = json.loads((workdir / 'detections' / 'best_test.json').read_text())['results']
  assert json.loads(output.read_text())['results'] == best_test

  # The Python API, from another directory, with the repository's configs/ made unimportable.
  video = sorted((workdir / 'synthetic_data' / 'test').glob('*.npz'))[0]
  script = (
      'import sys, json, numpy as np\n'
      "sys.modules['configs'] = None\n"
      'from backtal_jax import Predictor\n'
      f'data = np.load({str(video)!r})\n'
      'features_SxF = np.concatenate([data["feat_spa"], data["feat_tem"]]).T\n'
      f'found = Predictor.from_workdir({str(workdir)!r}).detect(\n'
      '    features_SxF, duration=float(data["duration"]), frame_num=int(data["frame_num"]))\n'
      'print(json.dumps(found))\n')
  api = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, check=False,
                       env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert api.returncode == 0, api.stderr[-3000:]
  assert json.loads(api.stdout.splitlines()[-1]) == best_test[video.stem]


@pytest.mark.slow
def test_the_end_of_a_run_names_the_best_folder_and_the_predict_command(run):
  workdir, console = run
  results = json.loads((workdir / 'results.json').read_text())
  best = workdir / 'best' / f'epoch_{results["best_epoch"]}'
  assert results['best_checkpoint'] == str(best) and best.is_dir()
  assert results['predict_command'].startswith(
      f'python -m backtal_jax.predict --checkpoint={workdir / "best"} ')
  assert f'saved in {best}' in console and results['predict_command'] in console
  assert f'tensorboard --logdir={workdir / "tensorboard"}' in console
  epochs = json.loads((workdir / 'checkpoints' / 'epochs.json').read_text())
  assert epochs == {str(STEPS_PER_EPOCH): 1, str(2 * STEPS_PER_EPOCH): 2}


@pytest.mark.slow
def test_predict_refuses_a_config_that_contradicts_the_run(run, tmp_path):
  workdir, _ = run
  result = command('predict', '--config=configs/thumos.py:debug', '--config.model.hidden_dim=24',
                   f'--checkpoint={workdir / "best"}', f'--features={workdir / "synthetic_data"}',
                   f'--output={tmp_path / "out.json"}')
  assert result.returncode == 1
  assert (f'error: --config: config.model.hidden_dim=24, but the checkpoint was trained with 16 '
          f'({workdir / "config.json"})') in result.stderr
  assert not (tmp_path / 'out.json').exists()
