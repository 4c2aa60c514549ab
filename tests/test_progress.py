"""Steps/s and ETA count training steps only; one line per evaluation."""

import numpy as np

from backtal_jax.reporting import evaluation_report
from backtal_jax.reporting import progress


class FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_rate_and_eta_leave_out_compilation_and_evaluation():
  clock = FakeClock()
  tracker = progress.Progress(total_steps=40, steps_per_epoch=10, num_epochs=4,
                              eval_every_epochs=1, line_every_seconds=30, clock=clock)
  clock.now += 20  # compiling the first step
  tracker.resume(1)
  clock.now += 9  # steps 2..10 at 1 step/s
  rate, eta = tracker.close_interval(10)
  assert rate == 1.0
  # 30 steps at 1 step/s, and 5 evaluations (epochs 1..4, the final test) of unknown length.
  assert eta == 30.0
  tracker.evaluation_started(10)
  clock.now += 5  # evaluating epoch 1
  tracker.evaluation_finished(10)
  clock.now += 5  # steps 11..20 at 2 steps/s
  rate, eta = tracker.close_interval(20)
  assert rate == 2.0
  # The ETA's rate is smoothed: 0.7 x 1 + 0.3 x 2 steps/s; then epochs 2 (pending), 3, 4 and the
  # final evaluation, 5 s each.
  assert eta == 20 / 1.3 + 4 * 5


def test_one_slow_interval_moves_the_eta_less_than_it_would_alone():
  clock = FakeClock()
  tracker = progress.Progress(total_steps=1000, steps_per_epoch=1000, num_epochs=1,
                              eval_every_epochs=1, line_every_seconds=30, clock=clock)
  tracker.resume(0)
  for step in range(100, 600, 100):
    clock.now += 10  # 10 steps/s
    tracker.close_interval(step)
  clock.now += 100  # one interval at 1 step/s
  rate, eta = tracker.close_interval(600)
  assert rate == 1.0
  assert eta == 400 / (0.7 * 10 + 0.3 * 1)  # not 400 s, as the last interval alone would say


def test_lines_inside_an_epoch_come_on_time():
  clock = FakeClock()
  tracker = progress.Progress(total_steps=600, steps_per_epoch=590, num_epochs=1,
                              eval_every_epochs=1, line_every_seconds=30, clock=clock)
  assert not tracker.line_due()
  tracker.resume(1)
  clock.now += 29
  assert not tracker.line_due()
  clock.now += 1
  assert tracker.line_due()
  rate, _ = tracker.close_interval(61)
  assert rate == 2.0 and not tracker.line_due()


def test_evaluations_after():
  assert progress.evaluations_after(0, num_epochs=10, every_epochs=3) == 4 + 1  # 3, 6, 9, 10
  assert progress.evaluations_after(10, num_epochs=10, every_epochs=3) == 1
  assert progress.format_duration(3725.4) == '1:02:05'


def summary(map_at_half, seconds=2.0):
  thresholds = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
  result = evaluation_report.EvaluationSummary.of(
      np.asarray([0.7, 0.6, 0.5, 0.5, map_at_half, 0.3, 0.2]), thresholds)
  result.seconds = seconds
  return result


def test_evaluation_line_marks_the_new_best():
  line = evaluation_report.evaluation_line(summary(0.4), epoch=3, split='test', metric='map@0.5',
                                           best=0.4, best_epoch=3, dataset='thumos14')
  assert line == 'epoch 3 test | mAP_0.50 40.00 | mAP_avg_0.1_0.7 45.71 | new best | 2.0 s'
  line = evaluation_report.evaluation_line(summary(0.3), epoch=4, split='heldout', metric='map@0.5',
                                           best=0.4, best_epoch=3, dataset='thumos14')
  assert line == ('epoch 4 heldout | mAP_0.50 30.00 | mAP_avg_0.1_0.7 44.29 | '
                  'best map@0.5 40.00 at epoch 3 | 2.0 s')


def test_a_zero_map_early_says_why():
  note = evaluation_report.early_zero_note(3, 210, 0.1)
  line = evaluation_report.evaluation_line(summary(0.0), epoch=1, split='test', metric='map@0.5',
                                           best=0.0, best_epoch=1, dataset='thumos14', note=note)
  assert line.startswith('epoch 1 test | mAP_0.50 0.00 (0: 3 of 210 videos have a class above '
                         'eval.class_score_thresh=0.1 yet; usual in the first epochs) | ')
  line = evaluation_report.evaluation_line(summary(0.3), epoch=9, split='test', metric='map@0.5',
                                           best=0.4, best_epoch=3, dataset='thumos14', note=note)
  assert 'usual' not in line
