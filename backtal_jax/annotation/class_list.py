"""The class names a page offers and labels are indexed by: the config's dataset (the classes of
config.eval.ground_truth, in its order) or a text file of one name per line."""

import pathlib
from typing import Sequence

import ml_collections

from backtal_jax.core import errors
from backtal_jax.data import annotations


def read_text_file(path: str | pathlib.Path) -> tuple[str, ...]:
  """One class name per line; blank lines are skipped, a repeated name is an error."""
  path = pathlib.Path(path)
  names = [line.strip() for line in path.read_text(encoding='utf-8').splitlines()]
  names = [name for name in names if name]
  if not names:
    raise errors.UserError(f'{path}: no class name (expected one per line)')
  repeated = sorted({name for name in names if names.count(name) > 1})
  if repeated:
    raise errors.UserError(f'{path}: class {repeated[0]!r} is listed twice')
  return tuple(names)


def from_config(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The dataset's classes: those of config.eval.ground_truth, which the model's outputs follow."""
  ground_truth = annotations.load_ground_truth(config.eval.ground_truth)
  if ground_truth.num_classes != config.model.num_classes:
    raise errors.UserError(f'{ground_truth.path} lists {ground_truth.num_classes} classes but '
                           f'config.model.num_classes is {config.model.num_classes}')
  return ground_truth.class_names


def resolve(config: ml_collections.ConfigDict | None, classes_file: str | None
            ) -> Sequence[str]:
  """--classes if given, else --config's dataset; one of them is needed."""
  if classes_file:
    return read_text_file(classes_file)
  if config is None:
    raise errors.UserError('give the class list: --config (its dataset\'s classes) or --classes '
                           '(a text file, one class per line)')
  return from_config(config)
