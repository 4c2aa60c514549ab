"""What the clicks cost: the per-annotator report, checked against hand-counted numbers."""

import json
import math
import os
import pathlib
import subprocess
import sys

from backtal_jax.annotation import annotation_file
from backtal_jax.annotation import costs
from backtal_jax.data import annotations

REPO = pathlib.Path(__file__).resolve().parents[1]
CLASSES = ['Jump', 'Wave']
# clip_a (8 s): Jump over [2, 4]; clip_b (4 s): Wave over [1, 2].
GROUND_TRUTH = {'activity_list': CLASSES, 'database': {
    'clip_a': {'subset': 'train', 'duration': 8.0, 'fps': 25.0,
               'annotations': [{'segment': [2.0, 4.0], 'label': 'Jump'}]},
    'clip_b': {'subset': 'train', 'duration': 4.0, 'fps': 25.0,
               'annotations': [{'segment': [1.0, 2.0], 'label': 'Wave'}]}}}


def bg(time):
  return {'time': time, 'tag': 'background_background'}


ALICE = {'clip_a': {'duration': 8.0, 'classes': ['Jump'], 'active_seconds': 40.0, 'done': True,
                    'clicks': [bg(0.5), {'time': 3.0, 'tag': 'Jump'}, bg(7.99)]},
         'clip_b': {'duration': 4.0, 'classes': ['Wave'], 'active_seconds': 20.0,
                    'clicks': [bg(1.5), {'time': 3.0, 'tag': 'Wave'}]}}
BOB = {'clip_a': {'duration': 8.0, 'classes': ['Jump'], 'active_seconds': 10.0, 'done': True,
                  'clicks': [bg(1.0)]}}


def write(tmp_path, name, videos):
  path = tmp_path / f'{name}.json'
  path.write_text(json.dumps({'format': annotation_file.FORMAT, 'annotator': name,
                              'class_names': CLASSES, 'videos': videos}))
  return path


def test_costs_and_agreement_match_the_hand_count(tmp_path):
  gt_path = tmp_path / 'gt.json'
  gt_path.write_text(json.dumps(GROUND_TRUTH))
  files = {name: annotation_file.read(write(tmp_path, name, videos))
           for name, videos in (('alice', ALICE), ('bob', BOB))}
  (alice, bob), [pair] = costs.report(files, annotations.load_ground_truth(gt_path))
  assert (alice.videos, alice.done, alice.seconds_per_video) == (2, 1, 30.0)
  assert (alice.background_per_video, alice.action_per_video) == (1.5, 1.0)
  assert alice.clicks_per_minute == 5 / (12 / 60)  # 5 clicks in 12 s of video
  assert math.isclose(alice.background_inside_action, 1 / 3)  # 1.5 s lies in Wave [1, 2]
  assert alice.action_outside_action == 0.5  # the Wave click at 3 s lies outside [1, 2]
  assert (bob.videos, bob.done, bob.seconds_per_video, bob.clicks_per_minute) == (1, 1, 10, 7.5)
  assert bob.background_inside_action == 0 and bob.action_outside_action is None
  # clip_a's segments [0, 2] [2, 4] [4, 8]: alice clicked all three, bob the first only.
  assert (pair.videos, pair.segments, pair.class_jaccard) == (1, 3, 1.0)
  assert math.isclose(pair.segment_agreement, 1 / 3)
  assert pair.kappa == 0.0  # alice always clicks: agreeing on one segment in three is chance
  without_gt, no_pairs = costs.report(files)
  assert no_pairs == [] and without_gt[0].background_inside_action is None
  assert without_gt[0].clicks_per_minute == alice.clicks_per_minute


def test_the_command_prints_the_table_and_writes_the_plot(tmp_path):
  gt_path = tmp_path / 'gt.json'
  gt_path.write_text(json.dumps(GROUND_TRUTH))
  paths = [write(tmp_path, 'alice', ALICE), write(tmp_path, 'bob', BOB)]
  done = subprocess.run(
      [sys.executable, '-m', 'backtal_jax.annotation.costs',
       f'--annotations={paths[0]},{paths[1]}', f'--ground_truth={gt_path}',
       f'--plot={tmp_path / "costs.png"}'],
      capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert done.returncode == 0, done.stderr
  rows = done.stdout.splitlines()
  assert rows[1].split()[:4] == ['alice', '2', '1', '30.0']
  assert rows[1].split()[-2:] == ['33.3%', '50.0%']
  assert rows[5].split()[:6] == ['alice', '/', 'bob', '1', '3', '33.3%']
  assert (tmp_path / 'costs.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
