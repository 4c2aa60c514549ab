"""The run's history and the record saved with each checkpoint, as typed records.

Saved as JSON beside the orbax arrays (`record/`), in the layout earlier versions wrote, so a run
checkpointed by them resumes: `{'position': {'epoch', 'step'}, 'history': {'best', 'best_epoch'
[, 'pending_evaluation']}}`.
"""

import dataclasses
from typing import Any

from backtal_jax.data import pipeline


@dataclasses.dataclass(frozen=True)
class History:
  """What the epochs so far decided: the best selection-metric value, its epoch (0: none yet),
  and an epoch whose checkpoint is saved but whose evaluation has not finished (0: none)."""
  best: float = -1.0
  best_epoch: int = 0
  pending_evaluation: int = 0

  def to_json(self) -> dict[str, Any]:
    record = {'best': self.best, 'best_epoch': self.best_epoch}
    if self.pending_evaluation:
      record['pending_evaluation'] = self.pending_evaluation
    return record

  @classmethod
  def from_json(cls, record: dict[str, Any]) -> 'History':
    return cls(best=float(record.get('best', -1.0)), best_epoch=int(record.get('best_epoch', 0)),
               pending_evaluation=int(record.get('pending_evaluation') or 0))


@dataclasses.dataclass(frozen=True)
class CheckpointRecord:
  """Saved with every checkpoint: where training stands in the data, and the history."""
  position: pipeline.DataPosition = dataclasses.field(default_factory=pipeline.DataPosition)
  history: History = dataclasses.field(default_factory=History)

  @property
  def epoch(self) -> int:
    """The epoch the checkpoint belongs to: the last one finished, or the one under way."""
    return self.position.epoch + (self.position.step > 0)

  def to_json(self) -> dict[str, Any]:
    return {'position': self.position.to_dict(), 'history': self.history.to_json()}

  @classmethod
  def from_json(cls, record: dict[str, Any]) -> 'CheckpointRecord':
    position = record.get('position') or {}
    return cls(position=pipeline.DataPosition.from_dict(position) if position
               else pipeline.DataPosition(),
               history=History.from_json(record.get('history') or {}))
