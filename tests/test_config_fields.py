"""Declared config fields: every field of every config has a declaration, every shipped config
keeps them, and a value outside its declaration is refused before the first step."""

import pytest

from backtal_jax.core import fields
from backtal_jax.data import supervision
from backtal_jax.model import affinity
from backtal_jax.model import affinity_select
from backtal_jax.reporting import run_records
from backtal_jax.run import preflight
from configs import activitynet12
from configs import from_json
from configs import hacs
from configs import own_videos
from configs import thumos

CONFIGS = {f'{module.__name__}:{variant}': (module, variant)
           for module in (thumos, activitynet12) for variant in module.VARIANTS}
CONFIGS['configs.hacs:'] = (hacs, '')
CONFIGS['configs.own_videos:my_dataset'] = (own_videos, 'my_dataset')  # a folder, not a variant


def load(name):
  module, variant = CONFIGS[name]
  return module.get_config(variant)


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_every_field_of_every_config_is_declared_and_every_declaration_is_a_field(name):
  names = set(fields.leaf_names(load(name)))
  assert names - set(preflight.DECLARED_FIELDS) == set(), 'fields without a declaration'
  assert set(preflight.DECLARED_FIELDS) - names == set(), 'declarations of no field'


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_every_shipped_config_keeps_its_declarations(name):
  assert fields.violations(load(name), preflight.DECLARED_FIELDS) == []


def test_a_recorded_config_json_is_checked_like_its_source(tmp_path):
  config = thumos.get_config('debug')
  path = tmp_path / 'config.json'
  text = run_records.config_to_json(config)
  path.write_text(text.replace('"num_epochs": 2', '"num_epochs": 2.5'))
  assert fields.violations(from_json.get_config(str(path)), preflight.DECLARED_FIELDS) == [
      ('train.num_epochs', 2.5, 'an integer >= 1')]


@pytest.mark.parametrize('field, value, expected', [
    ('train.learning_rate', -0.01, 'a finite number > 0'),
    ('train.learning_rate', float('nan'), 'a finite number > 0'),
    ('model.dropout_rate', 1.5, 'a finite number in [0, 1)'),
    ('eval.act_thresh_step', 0.0, 'a finite number in [0.001, 1]'),
    ('eval.tiou_thresholds', (0.5, 1.5), 'a non-empty sequence of a finite number in (0, 1]'),
    ('eval.tiou_thresholds', (), 'a non-empty sequence of a finite number in (0, 1]'),
    ('data.synthetic.num_train_videos', 0, 'an integer >= 1 (or -1)'),
    ('model.affinity', 'fast', "one of ['official', 'paper']"),
    ('train.debug_transfer_guard', 1, 'True or False'),
])
def test_a_value_outside_its_declaration_is_one_problem_naming_field_value_and_range(
    field, value, expected):
  config = thumos.get_config('debug')
  group, *path, key = field.split('.')
  holder = config[group]
  for part in path:
    holder = holder[part]
  with holder.ignore_type():
    holder[key] = value
  problems = preflight.config_problems(config, 4, training=False)
  assert problems == [f'config.{field} is {value!r}, expected {expected}']


def test_thresholds_that_leave_no_threshold_are_refused():
  config = thumos.get_config('debug')
  config.eval.act_thresh_min, config.eval.act_thresh_max = 0.3, 0.2
  assert preflight.config_problems(config, 4, training=False) == [
      'config.eval.act_thresh_min (0.3) is not below config.eval.act_thresh_max (0.2): no '
      'threshold in between, so no proposal']


def test_declarations_accept_their_bounds_and_refuse_just_outside():
  open_low = fields.number(0, 1, low_open=True)
  assert not open_low.accepts(0) and open_low.accepts(1e-12) and open_low.accepts(1)
  assert not open_low.accepts(1.0000001) and not open_low.accepts(True)
  count = fields.integer(1, also=(-1,))
  assert count.accepts(-1) and count.accepts(1) and not count.accepts(0) and not count.accepts(2.0)
  assert fields.text(optional=True).accepts(None) and not fields.text().accepts(None)


API_CHECKS = {  # the Python API's own check of a field the pre-flight checks in a config
    'model.affinity': affinity.check_affinity,
    'model.affinity_kernel': affinity_select.check_affinity_kernel,
    'train.supervision': supervision.check_supervision,
    'train.action_clicks': supervision.check_action_clicks,
}


@pytest.mark.parametrize('name', sorted(API_CHECKS))
def test_the_python_api_refuses_a_value_with_the_preflights_message(name):
  config = load('configs.thumos:synthetic')
  fields.value_at(config, name.split('.')[0])[name.split('.')[1]] = 'mosaic'
  problems = [p for p in preflight.config_problems(config, 4) if p.startswith(f'config.{name} ')]
  with pytest.raises(ValueError) as raised:
    API_CHECKS[name]('mosaic')
  assert [str(raised.value)] == problems
