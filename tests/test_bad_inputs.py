"""A generator of bad inputs (Hypothesis) against the invariants every command keeps (README, "When
something goes wrong"): config overrides, feature files, metadata CSVs, ground truths and workdir
states, each handed to the command's entry function in-process; a few config overrides through
the command itself in a subprocess, for its exit status, its one error line and a bounded time.

What each case must show: a user's mistake is a `UserError` (one `error:` line) and never another
exception; a refused run leaves the workdir's files byte-identical; what is accepted is read right
(the features as stored, the durations as given, an mAP in [0, 1]).

A run's work itself (data, model, loop) is replaced by `ReachedWork`: every check comes before it,
and that is what these cases probe; tests/test_invariants.py and the other tests run the work.
CI runs the 'ci' profile (a bounded number of examples, well under 3 minutes); more with
BACKTAL_HYPOTHESIS_PROFILE=thorough. Failing cases are shrunk and kept in .hypothesis/ (git
ignores it), so a case found stays found on this machine.
"""

import csv
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from hypothesis import HealthCheck
from hypothesis import assume
from hypothesis import database
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from backtal_jax import evaluate
from backtal_jax.core import errors
from backtal_jax.core import fields
from backtal_jax.data import annotations
from backtal_jax.data import unannotated
from backtal_jax.run import preflight
from backtal_jax.run import run_identity
from backtal_jax.run import train
from configs import thumos
from tests.conftest import debug_config
from tests.conftest import snapshot

REPO = pathlib.Path(__file__).resolve().parents[1]
for _name, _examples in (('ci', 25), ('thorough', 500)):
  settings.register_profile(
      _name, max_examples=_examples, deadline=None,
      database=database.DirectoryBasedExampleDatabase(str(REPO / '.hypothesis' / 'examples')),
      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PROFILE_NAME = os.environ.get('BACKTAL_HYPOTHESIS_PROFILE', 'ci')
SUBPROCESS_EXAMPLES = {'ci': 2, 'thorough': 25}[PROFILE_NAME]  # each a command: seconds
WORKDIR_EXAMPLES = {'ci': 10, 'thorough': 500}[PROFILE_NAME]  # each copies a workdir
PROFILE = settings.get_profile(PROFILE_NAME)
HALF = 8  # the debug config's feature half width
# Fields a command line gives as numbers (a text there reads as a text, not as in a config.json).
NUMERIC_FIELDS = sorted(name for name, field in preflight.DECLARED_FIELDS.items()
                        if field.kind in ('int', 'number'))


class ReachedWork(Exception):
  """Raised where a run's work would start: every check before it has passed."""


@pytest.fixture
def no_work(monkeypatch):
  def reached(*args, **kwargs):
    raise ReachedWork()
  monkeypatch.setattr(train, 'Run', reached)


# Values of every kind a field could be given: in range, at and past the bounds, of another type.
ANY_VALUE = st.one_of(
    st.integers(-3, 3), st.integers(), st.sampled_from([0, 1, -1, 2 ** 31, 1000]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1.0, 1e-12, 0.5, -0.0]),
    st.booleans(), st.none(), st.text(max_size=8), st.sampled_from(['', 'map@0.5', 'average']),
    st.tuples(st.floats(-1, 2)), st.tuples(), st.tuples(st.text(max_size=3)))


def set_field(config, name: str, value) -> bool:
  """Sets a dotted field as a hand-edited config.json could; False when ml_collections itself
  refuses the value (a command-line override could not give it either)."""
  *groups, key = name.split('.')
  holder = config
  for group in groups:
    holder = holder[group]
  try:
    with holder.ignore_type():
      holder[key] = value
  except (TypeError, ValueError, KeyError, AttributeError):
    return False
  return True


OVERRIDES = st.lists(st.tuples(st.sampled_from(sorted(preflight.DECLARED_FIELDS)), ANY_VALUE),
                     min_size=1, max_size=3)


def training_outcome(testbed: pathlib.Path, workdir: pathlib.Path, overrides) -> str:
  """'work', 'refused' or 'finished', for a training with `overrides` on `workdir`; a refusal and
  a finished run must leave the workdir's files as they were, and nothing but a UserError may come
  out."""
  config = debug_config(testbed)
  for name, value in overrides:
    assume(set_field(config, name, value))
  before = snapshot(workdir)
  try:
    state = train.train_and_evaluate(config, str(workdir))
  except ReachedWork:
    return 'work'
  except errors.UserError:
    assert snapshot(workdir) == before
    return 'refused'
  assert state is None, 'the run neither refused nor reached its work'
  assert snapshot(workdir) == before  # a finished run started again: it says so, changes nothing
  return 'finished'



@settings(PROFILE)
@given(overrides=OVERRIDES)
def test_config_overrides_on_a_finished_run(overrides, finished_run, no_work):
  testbed, workdir = finished_run
  if training_outcome(testbed, workdir, overrides) == 'work':
    config = debug_config(testbed)
    for name, value in overrides:
      set_field(config, name, value)
    assert not fields.violations(config, preflight.DECLARED_FIELDS)
    recorded = run_identity.recorded_values((workdir / 'config.json').read_text())
    assert not run_identity.changed_fields(recorded, config)  # only what a resume may change


WORKDIR_CHANGES = st.lists(st.sampled_from([
    'no checkpoints', 'no best', 'no config.json', 'truncated config.json', 'other config.json',
    'checkpoints is a file', 'tensorboard is a file', 'detections is a file',
    'an array file lost', 'a partial step', 'results.json is a folder']), min_size=1, max_size=3,
    unique=True)


def change_workdir(workdir: pathlib.Path, change: str) -> None:
  if change in ('no checkpoints', 'no best'):
    shutil.rmtree(workdir / change.split()[1], ignore_errors=True)
  elif change == 'no config.json':
    (workdir / 'config.json').unlink(missing_ok=True)
  elif change == 'truncated config.json' and (workdir / 'config.json').is_file():
    (workdir / 'config.json').write_text((workdir / 'config.json').read_text()[:100])
  elif change == 'other config.json':
    from backtal_jax.reporting import run_records  # pylint: disable=g-import-not-at-top
    (workdir / 'config.json').write_text(run_records.config_to_json(
        thumos.get_config('synthetic')))
  elif change.endswith('is a file'):
    target = workdir / change.split()[0]
    shutil.rmtree(target, ignore_errors=True)
    target.write_text('')
  elif change == 'an array file lost':
    for path in sorted((workdir / 'checkpoints').rglob('d/*'))[-1:]:
      path.unlink()
  elif change == 'a partial step' and not (workdir / 'checkpoints').is_file():
    (workdir / 'checkpoints' / '9.orbax-checkpoint-tmp-1').mkdir(parents=True, exist_ok=True)
  elif change == 'results.json is a folder':
    (workdir / 'results.json').unlink(missing_ok=True)
    (workdir / 'results.json').mkdir()


@settings(PROFILE, max_examples=WORKDIR_EXAMPLES)
@given(changes=WORKDIR_CHANGES, overrides=st.lists(
    st.tuples(st.sampled_from(['train.batch_size', 'train.num_epochs', 'eval.nms_thresh']),
              st.sampled_from([4, 8, 3, 0.5])), max_size=1))
def test_workdir_states(changes, overrides, finished_run, no_work):
  testbed, finished = finished_run
  with tempfile.TemporaryDirectory() as folder:
    workdir = pathlib.Path(folder) / 'run'
    shutil.copytree(finished, workdir)
    for change in changes:
      change_workdir(workdir, change)
    if training_outcome(testbed, workdir, overrides) == 'work':
      assert not any(c.endswith(('is a file', 'is a folder')) for c in changes)
      assert not ('no checkpoints' in changes and 'no best' not in changes)


def feature_file(draw, folder: pathlib.Path) -> tuple[pathlib.Path, np.ndarray | None]:
  """A feature file of any kind, and the [T, F] features it holds if it is a valid one."""
  snippets = draw(st.sampled_from([0, 1, 5, HALF, 17, 64]))
  width = draw(st.sampled_from([HALF, HALF, HALF, 2 * HALF, HALF + 1]))
  dtype = draw(st.sampled_from(['float32', 'float64', 'int32', 'bool', 'complex64', 'U3']))
  features_TxF = np.random.default_rng(draw(st.integers(0, 9))).normal(
      size=(snippets, 2 * width)) * draw(st.sampled_from([1.0, 1e39]))
  if snippets and draw(st.booleans()):
    features_TxF[draw(st.integers(0, snippets - 1)), 0] = draw(
        st.sampled_from([np.nan, np.inf, -np.inf, 1e39]))
  with np.errstate(over='ignore', invalid='ignore'):  # casts of inf and 1e39 are cases too
    stored = features_TxF.astype(dtype)
    finite = np.isfinite(features_TxF.astype(np.float32)).all() or dtype == 'int32'
  kind = draw(st.sampled_from(['npz channels-first', 'npz channels-last', 'npy', 'npy wrong']))
  # A half of another width whose snippet count is the width holds a valid file of this width,
  # read the other way: no reader can tell (the square case alone is refused as ambiguous).
  assume(not (kind.startswith('npz') and snippets == HALF and width != HALF))
  path = folder / f'video.{kind[:3]}'
  missing = False
  if kind == 'npy':
    np.save(path, stored)
  elif kind == 'npy wrong':
    np.save(path, stored.T)
  else:
    halves = {'feat_spa': stored[:, :width], 'feat_tem': stored[:, width:]}
    if kind == 'npz channels-first':
      halves = {k: v.T for k, v in halves.items()}
    kept = {k: v for k, v in halves.items() if draw(st.integers(0, 9))}  # rarely one missing
    missing = len(kept) < len(halves)
    np.savez(path, **kept)
  cut = draw(st.sampled_from([0, 0, 0, 1, 30, 200]))
  if cut:
    data = path.read_bytes()
    path.write_bytes(data[:max(0, len(data) - cut)])
  valid = (snippets >= 1 and width == HALF and dtype in ('float32', 'float64', 'int32') and
           finite and
           kind != 'npy wrong' and not cut and not missing and
           not (kind.startswith('npz') and snippets == HALF))
  return path, stored.astype(np.float32) if valid else None


@settings(PROFILE)
@given(data=st.data())
def test_feature_files_for_prediction(data):
  config = thumos.get_config('debug')
  with tempfile.TemporaryDirectory() as folder:
    path, expected_TxF = feature_file(data.draw, pathlib.Path(folder))
    try:
      (video,) = unannotated.find_videos([str(path)], config, duration=10, fps=25)
      read_TxF = unannotated.read_features(video, config)
    except errors.UserError:
      read_TxF = None
    if expected_TxF is None:
      assert read_TxF is None, f'an invalid file was read: {path.name}'
    else:
      assert read_TxF is not None, f'a valid file was refused: {path.name}'
      np.testing.assert_array_equal(read_TxF, expected_TxF)  # never transposed, never cut


CELLS = st.one_of(st.sampled_from(['10', '0', '-5', 'inf', 'nan', '', 'ten', '1e309', '0.01',
                                   '25', ' 3 ']), st.floats(allow_nan=True).map(repr))


@settings(PROFILE)
@given(rows=st.lists(st.tuples(st.sampled_from(['video', 'other', '']), CELLS, CELLS),
                     max_size=3),
       header=st.sampled_from([['vid_name', 'duration', 'fps'], ['vid_name', 'duration'],
                               ['name', 'duration', 'fps']]),
       bom=st.booleans())
def test_metadata_csvs(rows, header, bom):
  config = thumos.get_config('debug')
  with tempfile.TemporaryDirectory() as folder:
    np.save(pathlib.Path(folder) / 'video.npy', np.ones((20, 2 * HALF), np.float32))
    table = pathlib.Path(folder) / 'meta.csv'
    with open(table, 'w', newline='', encoding='utf-8-sig' if bom else 'utf-8') as f:
      writer = csv.writer(f)
      writer.writerow(header)
      writer.writerows(rows)
    try:
      (video,) = unannotated.find_videos([str(pathlib.Path(folder) / 'video.npy')], config,
                                         metadata_csv=str(table))
    except errors.UserError:
      return
    row = next(r for r in rows if r[0] == 'video')
    assert video.duration == float(row[1]) and math.isfinite(video.duration)
    assert video.frame_num >= 1 and video.fps == float(row[2])


SEGMENT_ENDS = st.one_of(st.floats(-5, 50), st.sampled_from([math.nan, math.inf, -1.0, 0.0]))


@settings(PROFILE)
@given(instances=st.lists(st.tuples(st.sampled_from(['a', 'b']), SEGMENT_ENDS, SEGMENT_ENDS),
                          max_size=4),
       subset=st.sampled_from(['test', 'validation']), duration=SEGMENT_ENDS)
def test_ground_truths(instances, subset, duration):
  truth = {'activity_list': ['a', 'b'], 'database': {'v': {
      'subset': subset, 'duration': duration, 'fps': 25.0,
      'annotations': [{'label': label, 'segment': [start, end]}
                      for label, start, end in instances]}}}
  predictions = {'results': {'v': [{'label': 'a', 'segment': [1.0, 4.0], 'score': 0.9}]}}
  with tempfile.TemporaryDirectory() as folder:
    gt, pred = pathlib.Path(folder) / 'gt.json', pathlib.Path(folder) / 'pred.json'
    gt.write_text(json.dumps(truth))
    pred.write_text(json.dumps(predictions))
    try:
      summary = evaluate.evaluate(str(gt), str(pred), 'test', (0.3, 0.5))
    except errors.UserError:
      summary = None
    bad = any(not (math.isfinite(s) and math.isfinite(e) and e >= s) for _, s, e in instances)
    if summary is not None:
      assert not bad and all(0 <= m <= 1 for m in summary['mAP'])
    try:
      annotations.load_ground_truth(gt)
    except errors.UserError:
      return
    assert not bad and duration > 0


@settings(PROFILE, max_examples=SUBPROCESS_EXAMPLES)
@given(overrides=st.lists(st.tuples(
    st.sampled_from(NUMERIC_FIELDS),
    st.sampled_from(['-1', '0', 'nan', 'inf', '1e400', "'x'", '()', 'True', '-0.5', '2'])),
    min_size=1, max_size=2))
def test_the_command_exits_with_one_error_line(overrides, tmp_path_factory):
  config = thumos.get_config('debug')
  for name, text in overrides:
    value = eval(text, {'nan': math.nan, 'inf': math.inf})  # pylint: disable=eval-used
    assume(set_field(config, name, value))
  assume(fields.violations(config, preflight.DECLARED_FIELDS))  # refused: it does no work
  workdir = tmp_path_factory.mktemp('command')
  result = subprocess.run(
      [sys.executable, '-m', 'backtal_jax.main', '--config=configs/thumos.py:debug',
       f'--workdir={workdir}', *[f'--config.{name}={text}' for name, text in overrides]],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
      env={**os.environ, 'PYTHONPATH': str(REPO)})
  errors_ = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert result.returncode == 1 and len(errors_) == 1, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  assert not list(workdir.iterdir())  # refused before the lock: nothing written


@settings(PROFILE, max_examples=SUBPROCESS_EXAMPLES)
@given(data=st.data())
def test_predict_on_a_feature_file_exits_with_detections_or_one_error_line(data, finished_run,
                                                                           tmp_path_factory):
  folder = tmp_path_factory.mktemp('predict')
  path, expected_TxF = feature_file(data.draw, folder)
  output = folder / 'detections.json'
  result = subprocess.run(
      [sys.executable, '-m', 'backtal_jax.predict', '--config=configs/thumos.py:debug',
       f'--checkpoint={finished_run[1] / "best"}', f'--features={path}', f'--output={output}',
       '--duration=10', '--fps=25'], cwd=REPO, capture_output=True, text=True, timeout=180,
      check=False, env={**os.environ, 'PYTHONPATH': str(REPO)})
  if expected_TxF is None:
    errors_ = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert result.returncode == 1 and len(errors_) == 1, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr and not output.exists()
  else:
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(json.loads(output.read_text())['results']) == ['video']
