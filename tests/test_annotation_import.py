"""Annotation files (the page's, Label Studio's and VIA's) into the feature files' labels."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from backtal_jax.annotation import annotation_file
from backtal_jax.annotation import exports
from backtal_jax.annotation import to_labels
from backtal_jax.core import errors
from backtal_jax.data import features
from configs import own_videos

CLASSES = ['Jump', 'Wave']
T = 16  # snippets per video in these tests
FEATURE_DIM = 16
BG = 2  # the background label: C
IGNORE = -100
REPO = pathlib.Path(__file__).resolve().parents[1]


def write_features(root: pathlib.Path, split: str, name: str, *, duration: float | None = None,
                   num_segments: int = T, seed: int = 0) -> pathlib.Path:
  """A feature file in the official layout: a training file without labels (as an extractor
  writes it), or, given a duration, a test file with its ground-truth class and metadata."""
  rng = np.random.default_rng(seed)
  arrays = {key: rng.normal(size=(FEATURE_DIM // 2, num_segments)).astype(np.float32)
            for key in ('feat_spa', 'feat_tem')}
  if duration is not None:
    arrays.update(duration=np.array(duration), fps=np.array(25.0),
                  frame_num=np.array(round(duration * 25 / 16)), vid_name=np.array(name),
                  cls_label=np.eye(len(CLASSES), dtype=np.float32)[seed % 2])
  path = root / 'features' / split / f'{name}.npz'
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, **arrays)
  return path


def write_dataset(root: pathlib.Path, videos=(('clip_a', 8.0), ('clip_b', 4.0))) -> pathlib.Path:
  """Training and test features of the videos, and a ground truth naming the classes."""
  database = {}
  for seed, (name, duration) in enumerate(videos):
    write_features(root, 'train', name, seed=seed)
    write_features(root, 'test', name, duration=duration, seed=seed)
    database[name] = {'subset': 'test', 'duration': duration, 'fps': 25.0, 'annotations': [
        {'segment': [duration / 4, duration / 2], 'label': CLASSES[seed % 2]}]}
  (root / 'ground_truth.json').write_text(json.dumps({'activity_list': CLASSES,
                                                       'database': database}))
  return root


def config_for(root: pathlib.Path):
  config = own_videos.get_config(str(root))
  config.data.num_segments = T
  config.model.feat_dim = FEATURE_DIM
  return config


def click(time, tag='background_background'):
  return {'time': time, 'tag': tag}


ALICE = {
    'clip_a': {'duration': 8.0, 'classes': ['Jump'],
               'clicks': [click(0.5), click(3.0, 'Jump'), click(7.99)]},
    'clip_b': {'duration': 4.0, 'classes': ['Wave'], 'clicks': [click(1.0), click(4.0)]},
}
# int(t / d * 16): clip_a 0.5 s -> 1, 3.0 s -> 6, 7.99 s -> 15; clip_b 1.0 s -> 4, 4.0 s -> 16,
# clipped to 15.
ALICE_POINTS = {'clip_a': {1: BG, 6: 0, 15: BG}, 'clip_b': {4: BG, 15: BG}}
ALICE_CLASSES = {'clip_a': [1, 0], 'clip_b': [0, 1]}


def write_annotations(path: pathlib.Path, videos: dict, annotator: str = 'alice',
                      class_names=CLASSES) -> pathlib.Path:
  path.write_text(json.dumps({'format': annotation_file.FORMAT, 'annotator': annotator,
                              'class_names': list(class_names), 'videos': videos}))
  return path


def expected_points(points: dict[int, int]) -> np.ndarray:
  labels = np.full(T, IGNORE)
  for snippet, value in points.items():
    labels[snippet] = value
  return labels


def stored(root: pathlib.Path, name: str) -> dict:
  with np.load(root / 'features' / 'train' / f'{name}.npz') as archive:
    return {key: archive[key] for key in archive.files}


def test_a_hand_written_file_becomes_the_expected_labels(tmp_path):
  root = write_dataset(tmp_path)
  before = stored(root, 'clip_a')
  to_labels.import_labels(config_for(root), [str(write_annotations(tmp_path / 'a.json', ALICE))])
  for name in ('clip_a', 'clip_b'):
    after = stored(root, name)
    np.testing.assert_array_equal(after['point_label'], expected_points(ALICE_POINTS[name]))
    np.testing.assert_array_equal(after['cls_label'], ALICE_CLASSES[name])
    assert str(after['vid_name']) == name
  np.testing.assert_array_equal(stored(root, 'clip_a')['feat_spa'], before['feat_spa'])
  record = features.read_video(root / 'features' / 'train' / 'clip_a.npz', num_classes=2,
                               feature_dim=FEATURE_DIM, num_segments=T, require_clicks=True)
  np.testing.assert_array_equal(record.click_labels_T, expected_points(ALICE_POINTS['clip_a']))


BOB = {
    'clip_a': {'duration': 8.0, 'classes': ['Wave'], 'clicks': [click(2.0)]},
    'clip_b': {'duration': 4.0, 'classes': [], 'clicks': [click(2.0, 'Wave')]},
}
BOB_POINTS = {'clip_a': {4: BG}, 'clip_b': {8: 1}}


def test_union_and_one_annotator_and_random_choose_as_for_the_thumos14_annotators(tmp_path):
  root = write_dataset(tmp_path)
  paths = [str(write_annotations(tmp_path / 'a.json', ALICE)),
           str(write_annotations(tmp_path / 'b.json', BOB, 'bob'))]
  with pytest.raises(errors.UserError, match='2 annotators'):
    to_labels.import_labels(config_for(root), paths)
  labels = to_labels.import_labels(config_for(root), paths, source='union')
  np.testing.assert_array_equal(labels['clip_a'].click_labels_T,
                                expected_points({**ALICE_POINTS['clip_a'], 4: BG}))
  np.testing.assert_array_equal(labels['clip_a'].video_labels_C, [1, 1])
  np.testing.assert_array_equal(labels['clip_b'].video_labels_C, [0, 1])
  labels = to_labels.import_labels(config_for(root), paths, source='bob')
  np.testing.assert_array_equal(stored(root, 'clip_b')['point_label'],
                                expected_points(BOB_POINTS['clip_b']))
  picks = set()
  for seed in range(6):
    labels = to_labels.import_labels(config_for(root), paths, source='random', seed=seed)
    for name in ('clip_a', 'clip_b'):
      whose = [who for who, points in (('alice', ALICE_POINTS), ('bob', BOB_POINTS))
               if np.array_equal(labels[name].click_labels_T, expected_points(points[name]))]
      assert len(whose) == 1  # one annotator's clicks, whole
      picks.add(whose[0])
  assert picks == {'alice', 'bob'}


def bad_inputs(tmp_path):
  """(what is wrong, how it is set up, text the error must hold)."""
  outside = {**ALICE, 'clip_a': {**ALICE['clip_a'], 'clicks': [click(8.5)]}}
  unknown_class = {**ALICE, 'clip_b': {**ALICE['clip_b'], 'classes': ['Dance']}}
  return {
      'click outside the video': (outside, CLASSES, "video 'clip_a'", '8.5'),
      'video without features': ({**ALICE, 'clip_c': ALICE['clip_b']}, CLASSES,
                                 "video 'clip_c' has no feature file", 'clip_c'),
      'feature file without a video': ({'clip_a': ALICE['clip_a']}, CLASSES, 'clip_b.npz',
                                       "video 'clip_b'"),
      'class outside the config': (unknown_class, CLASSES + ['Dance'], "video 'clip_b'",
                                   "'Dance'"),
  }


@pytest.mark.parametrize('problem', ['click outside the video', 'video without features',
                                     'feature file without a video', 'class outside the config'])
def test_each_bad_input_gets_its_error_and_nothing_is_written(tmp_path, problem):
  root = write_dataset(tmp_path)
  videos, class_names, *expected = bad_inputs(tmp_path)[problem]
  path = write_annotations(tmp_path / 'a.json', videos, class_names=class_names)
  with pytest.raises(errors.UserError) as raised:
    to_labels.import_labels(config_for(root), [str(path)])
  for text in expected:
    assert text in str(raised.value)
  assert 'point_label' not in stored(root, 'clip_a')


def test_the_command_writes_labels_and_reports_a_bad_input_in_one_error_line(tmp_path):
  root = write_dataset(tmp_path)
  good = write_annotations(tmp_path / 'a.json', ALICE)
  bad = write_annotations(tmp_path / 'b.json', {**ALICE, 'clip_c': ALICE['clip_b']}, 'bob')
  command = [sys.executable, '-m', 'backtal_jax.annotation.to_labels',
             f'--config={REPO}/configs/own_videos.py:{root}', f'--config.data.num_segments={T}',
             f'--config.model.feat_dim={FEATURE_DIM}']
  env = {**os.environ, 'PYTHONPATH': str(REPO)}
  refused = subprocess.run(command + [f'--annotations={bad}'], capture_output=True, text=True,
                           env=env, cwd=tmp_path)
  assert refused.returncode == 1
  assert refused.stderr.startswith('error: ') and 'Traceback' not in refused.stderr
  assert "video 'clip_c' has no feature file" in refused.stderr
  done = subprocess.run(command + [f'--annotations={good}'], capture_output=True, text=True,
                        env=env, cwd=tmp_path)
  assert done.returncode == 0, done.stderr
  assert 'Labels written into 2 feature files' in done.stdout
  np.testing.assert_array_equal(stored(root, 'clip_b')['point_label'],
                                expected_points(ALICE_POINTS['clip_b']))


# Alice's clicks as a Label Studio export (frames from 1 at 25 fps: frame f is at (f - 1) / 25 s;
# a click is a range of one frame) and as a VIA3 project (seconds).
ALICE_EXACT = {
    'clip_a': {'duration': 8.0, 'classes': ['Jump'],
               'clicks': [click(0.52), click(3.0, 'Jump'), click(7.96)]},
    'clip_b': {'duration': 4.0, 'classes': ['Wave'], 'clicks': [click(1.0), click(4.0)]},
}
LABEL_STUDIO_EXPORT = [
    {'id': 1, 'data': {'video': '/data/upload/3/5f2a9c1e-clip_a.mp4'}, 'annotations': [
        {'id': 11, 'completed_by': 7, 'lead_time': 31.5, 'result': [
            {'type': 'timelinelabels', 'from_name': 'videoLabels', 'to_name': 'video',
             'value': {'ranges': [{'start': 14, 'end': 14}], 'timelinelabels': ['background']}},
            {'type': 'timelinelabels', 'from_name': 'videoLabels', 'to_name': 'video',
             'value': {'ranges': [{'start': 76, 'end': 76}], 'timelinelabels': ['Jump']}},
            {'type': 'timelinelabels', 'from_name': 'videoLabels', 'to_name': 'video',
             'value': {'ranges': [{'start': 199, 'end': 201}], 'timelinelabels': ['Background']}},
            {'type': 'choices', 'from_name': 'classes', 'to_name': 'video',
             'value': {'choices': ['Jump']}}]}]},
    {'id': 2, 'data': {'video': '/data/local-files/?d=videos/clip_b.mp4'}, 'annotations': [
        {'id': 12, 'completed_by': 7, 'lead_time': 12.0, 'result': [
            {'type': 'timelinelabels', 'from_name': 'videoLabels', 'to_name': 'video',
             'value': {'ranges': [{'start': 26, 'end': 26}], 'timelinelabels': ['background']}},
            {'type': 'timelinelabels', 'from_name': 'videoLabels', 'to_name': 'video',
             'value': {'ranges': [{'start': 101, 'end': 101}], 'timelinelabels': ['background']}},
            {'type': 'choices', 'from_name': 'classes', 'to_name': 'video',
             'value': {'choices': ['Wave']}}]}]},
]
VIA_PROJECT = {
    'project': {'pid': '__VIA_PROJECT_ID__', 'rev': '__VIA_PROJECT_REV_ID__',
                'rev_timestamp': '__VIA_PROJECT_REV_TIMESTAMP__', 'pname': 'clicks',
                'creator': 'VGG Image Annotator (http://www.robots.ox.ac.uk/~vgg/software/via)',
                'created': 1796580000000, 'vid_list': ['1', '2']},
    'config': {'file': {'loc_prefix': {'1': '', '2': '', '3': '', '4': ''}},
               'ui': {'file_content_align': 'center'}},
    'attribute': {
        '1': {'aname': 'click', 'anchor_id': 'FILE1_Z1_XY0', 'type': 4, 'desc': '',
              'options': {'0': 'background', '1': 'Jump', '2': 'Wave'},
              'default_option_id': ''},
        '2': {'aname': 'classes', 'anchor_id': 'FILE1_Z0_XY0', 'type': 2, 'desc': '',
              'options': {'0': 'Jump', '1': 'Wave'}, 'default_option_id': ''}},
    'file': {'1': {'fid': '1', 'fname': 'clip_a.mp4', 'type': 4, 'loc': 1, 'src': ''},
             '2': {'fid': '2', 'fname': 'clip_b.webm', 'type': 4, 'loc': 1, 'src': ''}},
    'view': {'1': {'fid_list': ['1']}, '2': {'fid_list': ['2']}},
    'metadata': {
        '1_a': {'vid': '1', 'flg': 0, 'z': [0.52], 'xy': [], 'av': {'1': '0'}},
        '1_b': {'vid': '1', 'flg': 0, 'z': [3.0], 'xy': [], 'av': {'1': '1'}},
        '1_c': {'vid': '1', 'flg': 0, 'z': [7.92, 8.0], 'xy': [], 'av': {'1': '0'}},
        '1_d': {'vid': '1', 'flg': 0, 'z': [], 'xy': [], 'av': {'2': '0'}},
        '2_a': {'vid': '2', 'flg': 0, 'z': [1.0], 'xy': [], 'av': {'1': '0'}},
        '2_b': {'vid': '2', 'flg': 0, 'z': [4.0], 'xy': [], 'av': {'1': '0'}},
        '2_c': {'vid': '2', 'flg': 0, 'z': [], 'xy': [], 'av': {'2': '1'}}},
}


def write_metadata_csv(path: pathlib.Path) -> pathlib.Path:
  path.write_text('vid_name,duration,fps\nclip_a,8.0,25\nclip_b,4.0,25\n')
  return path


def clicks_of(one: annotation_file.AnnotationFile) -> dict:
  return {name: (video.duration, video.classes, [(c.time, c.tag) for c in video.clicks])
          for name, video in one.videos.items()}


@pytest.mark.parametrize('export', [LABEL_STUDIO_EXPORT, VIA_PROJECT], ids=['label_studio', 'via'])
def test_label_studio_and_via_exports_import_to_the_same_clicks(tmp_path, export):
  root = write_dataset(tmp_path)
  metadata_csv = write_metadata_csv(tmp_path / 'videos.csv')
  path = tmp_path / 'export.json'
  path.write_text(json.dumps(export))
  page_file = write_annotations(tmp_path / 'a.json', ALICE_EXACT)
  [imported] = exports.read(path, CLASSES, {'clip_a': {'duration': 8.0, 'fps': 25.0},
                                             'clip_b': {'duration': 4.0, 'fps': 25.0}})
  assert clicks_of(imported) == clicks_of(annotation_file.read(page_file))
  from_export = to_labels.import_labels(config_for(root), [str(path)],
                                        metadata_csv=str(metadata_csv))
  from_page = to_labels.import_labels(config_for(root), [str(page_file)])
  for name in ('clip_a', 'clip_b'):
    np.testing.assert_array_equal(from_export[name].click_labels_T, from_page[name].click_labels_T)
    np.testing.assert_array_equal(from_export[name].video_labels_C, from_page[name].video_labels_C)


def test_an_export_without_the_durations_names_the_video(tmp_path):
  path = tmp_path / 'export.json'
  path.write_text(json.dumps(VIA_PROJECT))
  with pytest.raises(errors.UserError, match="video 'clip_a': no duration"):
    exports.read(path, CLASSES, {})


def shrink(config):
  """Tiny widths and two epochs: a debug training, not numbers."""
  config.model.hidden_dim, config.model.filter_dim = 16, 8
  config.model.embed_hidden_dim, config.model.embed_dim = 8, 8
  config.train.batch_size, config.eval.batch_size = 4, 4
  config.train.num_epochs, config.train.log_every_steps = 2, 1
  config.data.prefetch = 0
  config.eval.num_plots = 0
  config.train.supervision = 'both'  # background and the annotator's action clicks
  return config


@pytest.mark.slow
def test_a_debug_training_runs_on_the_imported_labels(tmp_path):
  from backtal_jax.data import datasets  # noqa: I001 (JAX only for this test)
  from backtal_jax.run import train
  root = write_dataset(tmp_path)
  to_labels.import_labels(config_for(root), [str(write_annotations(tmp_path / 'a.json', ALICE))])
  config = shrink(config_for(root))
  examples = {ex['vid_name']: ex for ex in
              (datasets.open_datasets(config, str(tmp_path / 'w')).train[i] for i in range(2))}
  for name in ('clip_a', 'clip_b'):  # what the step learns from: these clicks, and only them
    np.testing.assert_array_equal(examples[name]['click_labels'],
                                  expected_points(ALICE_POINTS[name]))
    np.testing.assert_array_equal(examples[name]['video_labels'], ALICE_CLASSES[name])
  state = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert int(state.step) == 2  # two videos, batch 4, two epochs
  detections = json.loads((tmp_path / 'run' / 'detections' / 'best_test.json').read_text())
  assert set(detections['results']) == {'clip_a', 'clip_b'}
