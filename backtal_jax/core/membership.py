"""Which videos a ground truth lacks: one rule for the pre-flight, the training data and the
evaluation reports, which hold the ground truth in different forms (a parsed GroundTruth, raw JSON)
and so each pass the one thing the rule needs, every video's subset by name."""

from collections.abc import Iterable
from collections.abc import Mapping


def videos_outside(names: Iterable[str], subset_of: Mapping[str, str | None],
                   subset: str | None = None) -> tuple[list[str], list[str]]:
  """The `names` absent from a ground truth whose videos map to their subset, and, when `subset`
  is given, those present but in another subset; both sorted."""
  names = set(names)
  absent = sorted(n for n in names if n not in subset_of)
  elsewhere = [] if subset is None else sorted(
      n for n in names if n in subset_of and subset_of[n] != subset)
  return absent, elsewhere
