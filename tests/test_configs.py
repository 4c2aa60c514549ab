"""Configs: every variant loads, every field is commented, no field defaults to None."""

import ast
import pathlib

import pytest

from configs import activitynet12
from configs import hacs
from configs import thumos

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / 'configs'
VARIANTS = [(thumos, ''), (thumos, 'synthetic'), (thumos, 'debug'), (activitynet12, ''),
            (activitynet12, 'synthetic'), (hacs, '')]


def untyped_nones(config, prefix=''):
  """Fields that are None without a type: the command line cannot set them (a typed
  `placeholder` is fine)."""
  for key, value in config.items():
    if hasattr(value, 'items'):
      yield from untyped_nones(value, f'{prefix}{key}.')
    elif value is None and config.get_ref(key).get_type() is type(None):
      yield f'{prefix}{key}'


@pytest.mark.parametrize('module,variant', VARIANTS)
def test_variants_load_without_untyped_none(module, variant):
  config = module.get_config(variant)
  assert {'model', 'loss', 'data', 'train', 'eval'} <= set(config)
  assert not list(untyped_nones(config))


@pytest.mark.parametrize('path', sorted(CONFIG_DIR.glob('*.py')), ids=lambda p: p.name)
def test_every_field_assignment_is_commented(path):
  source = path.read_text().splitlines()
  uncommented = []
  for node in ast.walk(ast.parse('\n'.join(source))):
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
      line = source[node.end_lineno - 1]
      if '#' not in line:
        uncommented.append(f'{path.name}:{node.lineno}: {line.strip()}')
  assert not uncommented, '\n'.join(uncommented)


def test_unknown_variant_is_an_error():
  with pytest.raises(ValueError, match='unknown variant'):
    thumos.get_config('sythetic')


def test_one_override_moves_linked_fields():
  synthetic = thumos.get_config('synthetic')
  synthetic.data.synthetic.half_width = 1024  # --config.data.synthetic.half_width=1024
  assert synthetic.model.feat_dim == synthetic.data.feature_dim == 2048
  official = activitynet12.get_config()
  official.model.feat_dim = 4096
  assert official.data.feature_dim == 4096
  debug = thumos.get_config('debug')
  debug.data.num_segments = 100
  assert debug.data.synthetic.num_segments == 100


def leaf_names(values: dict, prefix: str = ''):
  for key, value in values.items():
    if isinstance(value, dict):
      yield from leaf_names(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}'


@pytest.mark.parametrize('module, variant', VARIANTS)
def test_every_field_is_in_the_configuration_reference(module, variant):
  reference = (CONFIG_DIR.parent / 'docs' / 'configuration.md').read_text()
  missing = [name for name in leaf_names(module.get_config(variant).to_dict())
             if f'`{name}`' not in reference]
  assert not missing, f'docs/configuration.md lacks {missing}'
