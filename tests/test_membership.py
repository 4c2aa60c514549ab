"""Which videos a ground truth lacks: one rule (core/membership.py), and the three places that ask
it (the pre-flight, the training data's action clicks, the evaluation reports) give one answer."""

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from backtal_jax.core import membership
from backtal_jax.data import annotations
from backtal_jax.data import datasets
from backtal_jax.reporting import evaluation_report
from backtal_jax.run import preflight

NAMES = st.text('abcd', min_size=1, max_size=3)


@hypothesis.given(names=st.sets(NAMES), subset_of=st.dictionaries(NAMES, st.sampled_from('xy')),
                  subset=st.sampled_from(['x', 'y', None]))
def test_every_name_is_inside_absent_or_elsewhere_once(names, subset_of, subset):
  absent, elsewhere = membership.videos_outside(names, subset_of, subset)
  inside = {n for n in names if n in subset_of and subset in (None, subset_of[n])}
  assert absent == sorted(absent) and elsewhere == sorted(elsewhere)
  assert set(absent) | set(elsewhere) | inside == names
  assert len(absent) + len(elsewhere) + len(inside) == len(names)
  assert all(n not in subset_of for n in absent)
  assert subset is not None or not elsewhere


def _raw_ground_truth():
  annotation = {'label': 'Jump', 'segment': [1.0, 2.0]}
  return {'activity_list': ['Jump'], 'database': {
      'a': {'subset': 'test', 'duration': 10.0, 'fps': 25.0, 'annotations': [annotation]},
      'b': {'subset': 'val', 'duration': 10.0, 'fps': 25.0, 'annotations': [annotation]}}}


def test_preflight_and_reports_name_the_same_videos():
  raw = _raw_ground_truth()
  ground_truth = annotations.parse_ground_truth(raw)
  asked = {'a': ['a.npz'], 'b': ['b.npz'], 'z': ['z.npz']}
  counted = evaluation_report.counts(raw, {'results': {name: [] for name in asked}}, 'test')
  problems = preflight.ground_truth_problems(asked, ground_truth, 'test', 'scored')
  assert counted['videos_absent_from_ground_truth'] == ['z']
  assert counted['videos_of_other_subsets'] == ['b']
  assert [p.split(':')[0] for p in problems] == ['b.npz', 'z.npz']
  assert [p.split(':')[0] for p in preflight.ground_truth_problems(
      asked, ground_truth, None, 'clicked')] == ['z.npz']


def test_action_clicks_refuse_a_video_the_ground_truth_lacks():
  ground_truth = annotations.parse_ground_truth(_raw_ground_truth())
  data = datasets.Supervised([], 'both', ground_truth, num_segments=8, seed=0)
  assert data.action_clicks('b', np.zeros(8, np.int64)) is not None
  with pytest.raises(KeyError, match="z: no ground truth in <memory>"):
    data.action_clicks('z', np.zeros(8, np.int64))
