"""The run's history and checkpoint record: typed, and read from the JSON earlier versions wrote."""

from backtal_jax.data import pipeline
from backtal_jax.run import history


def test_records_written_before_the_dataclasses_still_resume():
  written_by_the_previous_version = {
      'position': {'epoch': 3, 'step': 0},
      'history': {'best': 0.25, 'best_epoch': 2, 'pending_evaluation': 3}}
  record = history.CheckpointRecord.from_json(written_by_the_previous_version)
  assert record.position == pipeline.DataPosition(3, 0) and record.epoch == 3
  assert record.history == history.History(best=0.25, best_epoch=2, pending_evaluation=3)
  assert record.to_json() == written_by_the_previous_version


def test_a_record_round_trips_and_omits_no_pending_evaluation():
  record = history.CheckpointRecord(pipeline.DataPosition(4, 2), history.History(0.5, 4))
  assert record.epoch == 5  # two steps into the fifth epoch
  assert record.to_json() == {'position': {'epoch': 4, 'step': 2},
                              'history': {'best': 0.5, 'best_epoch': 4}}
  assert history.CheckpointRecord.from_json(record.to_json()) == record
  assert history.CheckpointRecord.from_json({'position': {}}) == history.CheckpointRecord()
