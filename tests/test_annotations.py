"""Ground-truth loading: the shipped files and malformed generated ones."""

import json

import pytest

from backtal_jax.data import annotations


def test_thumos14_ground_truth():
  gt = annotations.load_ground_truth('thumos14_gt')
  assert gt.num_classes == 20
  assert gt.class_names[0] == 'BaseballPitch' and gt.class_names[-1] == 'VolleyballSpiking'
  assert len(gt.subset('val')) == 200 and len(gt.subset('test')) == 210
  video = gt.videos['video_test_0000896']
  assert (video.duration, video.fps, video.subset) == (226.767, 30.0, 'test')
  assert len(video.instances) == 7 and video.labels == (gt.class_names.index('HighJump'),)
  assert video.instances[0].start == 18.6 and video.instances[0].end == 24.8
  assert gt.videos['video_test_0001207'].fps == 24.0


def test_activitynet12_ground_truth():
  gt = annotations.load_ground_truth('activitynet12_gt')
  assert gt.num_classes == 100
  assert len(gt.subset('training')) == 4819 and len(gt.subset('validation')) == 2383
  starts = [i.start for i in gt.videos['---9CpRcKoU'].instances]
  assert starts == sorted(starts)


def test_subset_is_sorted_and_unknown_subset_fails():
  gt = annotations.load_ground_truth('thumos14_gt')
  names = [v.name for v in gt.subset('val')]
  assert names == sorted(names)
  with pytest.raises(KeyError, match='subset'):
    gt.subset('training')


def _good():
  return {
      'activity_list': ['Jump', 'Run'],
      'database': {
          'v1': {'subset': 'val', 'duration': 10.0, 'fps': 30,
                 'annotations': [{'segment': [5.0, 6.0], 'label': 'Run', 'idx': 1},
                                 {'segment': [1.0, 2.0], 'label': 'Jump'}]},
      },
  }


def test_generated_file_loads_by_path(tmp_path):
  path = tmp_path / 'gt.json'
  path.write_text(json.dumps(_good()))
  gt = annotations.load_ground_truth(path)
  video = gt.videos['v1']
  assert [(i.start, i.label) for i in video.instances] == [(1.0, 0), (5.0, 1)]
  assert video.labels == (0, 1)


def _break(edit):
  raw = _good()
  edit(raw)
  return raw


@pytest.mark.parametrize('edit, message', [
    (lambda r: r.pop('activity_list'), 'field activity_list is missing'),
    (lambda r: r.pop('database'), 'field database is missing'),
    (lambda r: r['database']['v1'].pop('duration'), r"database\['v1'\].duration is missing"),
    (lambda r: r['database']['v1'].update(fps='fast'), r"database\['v1'\].fps must be a number"),
    (lambda r: r['database']['v1'].update(duration=0), 'must be > 0'),
    (lambda r: r['database']['v1'].update(annotations={}), 'annotations must be a list'),
    (lambda r: r['database']['v1']['annotations'][0].update(segment=[6.0, 5.0]),
     r'annotations\[0\].segment needs 0 <= start <= end'),
    (lambda r: r['database']['v1']['annotations'][0].update(segment=[1.0]),
     r'annotations\[0\].segment must be \[start, end\]'),
    (lambda r: r['database']['v1']['annotations'][1].update(label='Swim'),
     r"annotations\[1\].label 'Swim' is not in activity_list"),
    (lambda r: r['database']['v1']['annotations'][0].update(idx=0),
     r"annotations\[0\].idx is 0 but label 'Run' is class 1"),
])
def test_malformed_input_names_file_and_field(tmp_path, edit, message):
  path = tmp_path / 'broken_gt.json'
  path.write_text(json.dumps(_break(edit)))
  with pytest.raises(annotations.AnnotationError, match=message) as e:
    annotations.load_ground_truth(path)
  assert 'broken_gt.json' in str(e.value)


def test_invalid_json_and_missing_file(tmp_path):
  path = tmp_path / 'truncated.json'
  path.write_text(json.dumps(_good())[:40])
  with pytest.raises(annotations.AnnotationError, match='truncated.json: not valid JSON'):
    annotations.load_ground_truth(path)
  with pytest.raises(FileNotFoundError, match='nope.json'):
    annotations.load_ground_truth(tmp_path / 'nope.json')
