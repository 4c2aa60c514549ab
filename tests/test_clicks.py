"""Click files, point labels and click simulation, on the shipped files and generated ones."""

import logging

import numpy as np
import pytest

from backtal_jax.data import annotations
from backtal_jax.data import click_simulation
from backtal_jax.data import clicks

T = 750
HEADER = '\ufeffURLID,URL,TagID,Tag,Start,End,Time,State\n'
MISSING = 'video_validation_0000947'


@pytest.fixture(scope='module')
def thumos():
  return annotations.load_ground_truth('thumos14_gt')


@pytest.fixture(scope='module')
def per_annotator():
  return {name: clicks.thumos14_clicks(name) for name in clicks.ANNOTATORS}


def test_shipped_click_files(thumos, per_annotator):
  val = {v.name for v in thumos.subset('val')}
  assert set(per_annotator['A1']) == val
  for name in ('A2', 'A3'):
    assert val - set(per_annotator[name]) == {MISSING}
  assert sum(len(c) for c in per_annotator['A1'].values()) == 2264
  first = per_annotator['A1']['video_validation_0000051'][0]
  assert first == clicks.Click(time=21.5, tag=clicks.BACKGROUND_TAG)
  # One of the rows with End > Start: the click is at Start.
  assert 64.0 in [c.time for c in per_annotator['A1']['video_validation_0000182']]


def test_a1_point_labels_cover_all_training_videos(thumos, per_annotator):
  result = clicks.build_point_labels(thumos.subset('val'), thumos.class_names, T,
                                     per_annotator=per_annotator)
  assert result.missing == () and len(result.labels) == 200
  video = thumos.videos['video_validation_0000051']
  labels_T = result.labels[video.name]
  assert labels_T.dtype == np.int32 and labels_T.shape == (T,)
  expected = {int(c.time / video.duration * T) for c in per_annotator['A1'][video.name]}
  assert set(np.flatnonzero(labels_T != -100)) == expected
  assert set(labels_T[labels_T != -100]) == {20}


@pytest.mark.parametrize('source', ['A2', 'A3'])
def test_skipped_video_is_reported(thumos, per_annotator, source, caplog):
  videos = thumos.subset('val')
  with caplog.at_level(logging.WARNING):
    result = clicks.build_point_labels(videos, thumos.class_names, T, source=source,
                                       per_annotator=per_annotator)
  assert result.missing == (MISSING,)
  assert (result.labels[MISSING] == -100).all()
  assert MISSING in caplog.text
  with pytest.raises(KeyError, match=MISSING):
    clicks.build_point_labels(videos, thumos.class_names, T, source=source,
                              per_annotator=per_annotator, on_missing='raise')


def test_union_and_random(thumos, per_annotator):
  videos = thumos.subset('val')
  build = lambda source, seed=0: clicks.build_point_labels(
      videos, thumos.class_names, T, source=source, seed=seed, per_annotator=per_annotator)
  single = {name: build(name).labels for name in clicks.ANNOTATORS}
  union = build('union')
  assert union.missing == ()
  for video in videos:
    clicked = {name: set(np.flatnonzero(single[name][video.name] != -100)) for name in single}
    assert set(np.flatnonzero(union.labels[video.name] != -100)) == set.union(*clicked.values())
  first, again, other = build('random', 0), build('random', 0), build('random', 1)
  matches = lambda vid: {n for n in single if np.array_equal(first.labels[vid], single[n][vid])}
  picks = []
  for video in videos:
    np.testing.assert_array_equal(first.labels[video.name], again.labels[video.name])
    picks.append(matches(video.name))
    assert picks[-1], video.name
  assert matches(MISSING) == {'A1'}
  assert len(set.union(*picks)) == 3  # Every annotator gets drawn somewhere.
  assert any(not np.array_equal(first.labels[v.name], other.labels[v.name]) for v in videos)


def test_time_to_snippet_clips():
  assert clicks.time_to_snippet(0.0, 10.0, 100) == 0
  assert clicks.time_to_snippet(0.999, 10.0, 100) == 9
  assert clicks.time_to_snippet(10.0, 10.0, 100) == 99
  assert clicks.time_to_snippet(12.0, 10.0, 100) == 99


def test_action_tags_and_unknown_tag():
  found = (clicks.Click(1.0, clicks.BACKGROUND_TAG), clicks.Click(5.0, 'Run'))
  labels_T = clicks.click_labels(found, duration=10.0, num_segments=10, class_names=('Jump', 'Run'))
  assert labels_T.tolist() == [-100, 2, -100, -100, -100, 1, -100, -100, -100, -100]
  with pytest.raises(ValueError, match="video 'v': click tag 'Swim'"):
    clicks.click_labels((clicks.Click(1.0, 'Swim'),), duration=10.0, num_segments=10,
                        class_names=('Jump', 'Run'), video='v')


def test_generated_click_file(tmp_path):
  path = tmp_path / 'clicks.txt'
  path.write_text(HEADER + 'v2,v2.mp4,20,background_background,3,3,1,1\n'
                  'v1,v1.mp4,20,background_background,7.5,8,1,1\n'
                  'v1,v1.mp4,20,background_background,2,2,1,1\n', encoding='utf-8')
  found = clicks.read_click_file(path)
  assert found == {'v1': (clicks.Click(2.0, clicks.BACKGROUND_TAG),
                          clicks.Click(7.5, clicks.BACKGROUND_TAG)),
                   'v2': (clicks.Click(3.0, clicks.BACKGROUND_TAG),)}


@pytest.mark.parametrize('text, message', [
    ('URLID,URL,Tag,Start\n', 'line 1: header must be'),
    (HEADER + 'v1,v1.mp4,20,background_background,3,3,1\n', 'line 2: expected 8 fields, got 7'),
    (HEADER + 'v1,v1.mp4,20,bg,3,3,1,1\nv1,v1.mp4,20,bg,x,3,1,1\n',
     "line 3: field Start must be a number, got 'x'"),
    (HEADER + 'v1,v1.mp4,20,bg,-1,-1,1,1\n', 'line 2: field Start must be >= 0'),
    (HEADER + 'v1,v1.mp4,20,bg,5,4,1,1\n', r'line 2: field End \(4.0\) is before Start \(5.0\)'),
    (HEADER + ',v1.mp4,20,bg,5,5,1,1\n', 'line 2: field URLID is empty'),
    ('', 'line 1: header must be'),
])
def test_malformed_click_file_names_file_and_line(tmp_path, text, message):
  path = tmp_path / 'bad_clicks.txt'
  path.write_text(text, encoding='utf-8')
  with pytest.raises(clicks.ClickFileError, match=message) as e:
    clicks.read_click_file(path)
  assert 'bad_clicks.txt' in str(e.value)


def test_statistics(thumos, per_annotator):
  stats = clicks.click_statistics(per_annotator['A2'], thumos.subset('val'))
  assert (stats['videos'], stats['missing'], stats['clicks']) == (199, 1, 2323)
  assert stats['clicks_per_video_min'] >= 1
  assert 0 < stats['inside_instance_share'] < 0.2


def _video(instances, duration=100.0):
  return annotations.Video(
      name='v', subset='val', duration=duration, fps=30.0,
      instances=tuple(annotations.Instance(s, e, c) for s, e, c in instances))


def _snippet_span(t, duration, num_segments):
  return t * duration / num_segments, (t + 1) * duration / num_segments


def test_background_gaps():
  video = _video([(10, 20, 0), (15, 30, 1), (50, 60, 0), (90, 120, 1)])
  assert click_simulation.background_gaps(video) == [(0, 10), (30, 50), (60, 90)]
  assert click_simulation.background_gaps(_video([])) == [(0.0, 100.0)]


@pytest.mark.parametrize('name', ['thumos14_gt', 'activitynet12_gt'])
def test_simulated_clicks_on_real_ground_truth(name):
  gt = annotations.load_ground_truth(name)
  subset, num_segments = ('val', 750) if name == 'thumos14_gt' else ('validation', 100)
  videos = gt.subset(subset)[:300]
  labels = click_simulation.simulate_point_labels(videos, num_segments, gt.num_classes, seed=3,
                                                  actions=True)
  again = click_simulation.simulate_point_labels(videos, num_segments, gt.num_classes, seed=3,
                                                 actions=True)
  other = click_simulation.simulate_point_labels(videos, num_segments, gt.num_classes, seed=4,
                                                 actions=True)
  for video in videos:
    labels_T, d = labels[video.name], video.duration
    np.testing.assert_array_equal(labels_T, again[video.name])
    background = np.flatnonzero(labels_T == gt.num_classes)
    for t in background:
      lo, hi = _snippet_span(t, d, num_segments)
      assert all(hi <= i.start + 1e-9 or lo >= min(i.end, d) - 1e-9 for i in video.instances), (
          video.name, t)
    gaps = click_simulation.background_gaps(video)
    fitting = [g for g in gaps if click_simulation.snippets_within(*g, d, num_segments)]
    assert len(background) == len(fitting)  # One per gap holding a whole snippet.
    for gap in fitting:
      assert sum(gap[0] <= _snippet_span(t, d, num_segments)[0] < gap[1] for t in background) == 1
    for t in np.flatnonzero((labels_T >= 0) & (labels_T < gt.num_classes)):
      assert any(i.label == labels_T[t] and i.start <= (t + 0.5) * d / num_segments <= i.end
                 or clicks.time_to_snippet((i.start + i.end) / 2, d, num_segments) == t
                 for i in video.instances)
  assert any(not np.array_equal(labels[v.name], other[v.name]) for v in videos)


def test_simulated_action_click_per_instance():
  video = _video([(10, 20, 0), (50, 50.01, 1), (70, 80, 1)])
  labels_T = click_simulation.simulate_clicks(video, 100, 2, np.random.default_rng(0),
                                              background=False, actions=True)
  assert np.flatnonzero(labels_T == 1).size == 2 and np.flatnonzero(labels_T == 0).size == 1
  assert labels_T[50] == 1  # Shorter than a snippet: the snippet holding its midpoint.
  assert 10 <= np.flatnonzero(labels_T == 0)[0] < 20
  assert (labels_T != 2).all()


def test_gap_shorter_than_a_snippet_is_skipped():
  video = _video([(0.5, 10, 0), (10.5, 99.5, 1)])  # Gaps of half a snippet each.
  labels_T = click_simulation.simulate_clicks(video, 100, 2, np.random.default_rng(0))
  assert (labels_T == -100).all()
