"""Declared config fields: each field's type and valid range or choices, stated once by the code
that owns the field and checked by the pre-flight (run/preflight.py) before the first step.

A value outside its declaration is refused there, with the field, the value and what was
expected, instead of training on it (a negative learning rate) or failing after the training (a
zero threshold step). Rules that tie several fields together (a batch that divides over the
devices, a metric among the thresholds) stay functions beside their owners.

    CONFIG_FIELDS = {'train.learning_rate': fields.number(low=0, low_open=True), ...}
"""

import dataclasses
import math
from typing import Any
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class Field:
  """What one config field may hold."""
  kind: str  # 'int', 'number' (a finite int or float), 'bool', 'str' or 'sequence'
  low: float | None = None  # lowest value (None: no bound)
  high: float | None = None  # highest value (None: no bound)
  low_open: bool = False  # True: `low` itself is excluded
  high_open: bool = False  # True: `high` itself is excluded
  choices: tuple[Any, ...] = ()  # the only values allowed (empty: any of the kind)
  also: tuple[Any, ...] = ()  # values allowed outside the range (e.g. -1 for 'all')
  optional: bool = False  # an unset placeholder (None) is allowed
  nonempty: bool = False  # a str or sequence must not be empty
  item: 'Field | None' = None  # what each element of a sequence may hold

  def expected(self) -> str:
    """What the field must hold, in words, for the message."""
    if self.choices:
      return f'one of {list(self.choices)}'
    if self.kind == 'sequence':
      items = f' of {self.item.expected()}' if self.item else ''
      return f'a {"non-empty " if self.nonempty else ""}sequence{items}'
    words = {'int': 'an integer', 'number': 'a finite number', 'bool': 'True or False',
             'str': 'a non-empty string' if self.nonempty else 'a string'}[self.kind]
    if self.low is not None and self.high is not None:
      words += (f' in {"(" if self.low_open else "["}{self.low:g}, {self.high:g}'
                f'{")" if self.high_open else "]"}')
    elif self.low is not None:
      words += f' {">" if self.low_open else ">="} {self.low:g}'
    elif self.high is not None:
      words += f' {"<" if self.high_open else "<="} {self.high:g}'
    if self.also:
      words += ' (or ' + ', '.join(map(repr, self.also)) + ')'
    if self.optional:
      words += ' (or unset)'
    return words

  def accepts(self, value: Any) -> bool:
    if value is None:
      return self.optional
    if self.choices:
      return _same_kind(self.kind, value) and value in self.choices
    if not _same_kind(self.kind, value):
      return False
    if self.kind == 'sequence':
      return ((not self.nonempty or len(value) > 0) and
              (self.item is None or all(self.item.accepts(v) for v in value)))
    if self.kind == 'str':
      return not self.nonempty or bool(value)
    if self.kind == 'bool' or value in self.also:
      return True
    return self._in_range(value)

  def _in_range(self, value: float) -> bool:
    if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
      return False
    return self.high is None or not (value > self.high or (self.high_open and value == self.high))


def _same_kind(kind: str, value: Any) -> bool:
  if kind == 'bool':
    return isinstance(value, bool)
  if kind == 'int':
    return isinstance(value, int) and not isinstance(value, bool)
  if kind == 'number':
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and
            math.isfinite(value))
  if kind == 'str':
    return isinstance(value, str)
  return isinstance(value, (tuple, list))


def integer(low: int | None = None, high: int | None = None, also: tuple[int, ...] = ()
            ) -> Field:
  return Field('int', low=low, high=high, also=also)


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Field:
  return Field('number', low=low, high=high, low_open=low_open, high_open=high_open)


def flag() -> Field:
  return Field('bool')


def choice(*options: Any) -> Field:
  kind = 'bool' if all(isinstance(o, bool) for o in options) else 'str'
  return Field(kind, choices=tuple(options))


def text(*, optional: bool = False, nonempty: bool = False) -> Field:
  return Field('str', optional=optional, nonempty=nonempty)


def sequence(item: Field, *, nonempty: bool = False) -> Field:
  return Field('sequence', item=item, nonempty=nonempty)


def value_at(config: Any, name: str) -> Any:
  """The value of a dotted field name ('train.batch_size') in a ConfigDict or nested dicts."""
  for key in name.split('.'):
    config = config[key]
  return config


def problem(name: str, value: Any, expected: str) -> str:
  """The one message for a field that breaks its declaration."""
  return f'config.{name} is {value!r}, expected {expected}'


def check(name: str, value: Any, declared: Mapping[str, Field], error: type = ValueError) -> None:
  """Raises `error` with the pre-flight's message when `value` breaks the declaration of `name`:
  for callers of the Python API, whose values the pre-flight never sees."""
  if not declared[name].accepts(value):
    raise error(problem(name, value, declared[name].expected()))


def violations(config: Any, declared: Mapping[str, Field]) -> list[tuple[str, Any, str]]:
  """(field, value, what was expected) for every declared field whose value breaks its
  declaration, or that the config lacks (a hand-edited config.json)."""
  found = []
  for name, field in declared.items():
    try:
      value = value_at(config, name)
    except (KeyError, AttributeError, TypeError):
      found.append((name, '(missing)', field.expected()))
      continue
    if not field.accepts(value):
      found.append((name, value, field.expected()))
  return found


def leaf_names(config: Any, prefix: str = '') -> list[str]:
  """Every dotted field name of a ConfigDict (its groups opened)."""
  names = []
  for key in config.keys():
    value = config[key]
    if hasattr(value, 'keys'):
      names += leaf_names(value, f'{prefix}{key}.')
    else:
      names.append(f'{prefix}{key}')
  return names
