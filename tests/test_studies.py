"""The supervision study and the testbed search: config overrides and the tables they print."""

import pytest

from benchmarks import supervision_study
from benchmarks import testbed_search

TIOU = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def fake_result(map_at_05: float, average: float) -> dict:
  return {'tiou': TIOU, 'mAP': [0.0] * 4 + [map_at_05] + [0.0] * 4,
          'average_mAP': {'mAP_avg_0.1_0.7': average}}


def test_study_config_sets_the_run_and_parses_overrides_as_the_field_type():
  overrides = ['data.synthetic.noise=2.5', 'data.synthetic.num_background_prototypes=32',
               'data.synthetic.simulated_action_clicks=false', 'eval.only=True']
  config = supervision_study.study_config('none', 'paper', 2, overrides)
  assert (config.train.supervision, config.model.affinity) == ('none', 'paper')
  assert config.train.seed == config.data.shuffle_seed == 2
  assert config.data.synthetic.noise == 2.5
  assert config.data.synthetic.num_background_prototypes == 32
  assert config.data.synthetic.simulated_action_clicks is False
  assert config.eval.only is True


@pytest.mark.parametrize('item, error', [
    ('data.synthetic.nosie=2.0', KeyError),
    ('data.synthetic.noise', KeyError),
    ('eval.only=yes', ValueError),
    ('data.synthetic.num_background_prototypes=many', ValueError),
])
def test_study_config_rejects_bad_overrides(item, error):
  with pytest.raises(error):
    supervision_study.study_config('background', 'official', 0, [item])


@pytest.mark.parametrize('setting', sorted(testbed_search.SETTINGS))
def test_every_search_setting_changes_an_existing_testbed_knob(setting):
  default = supervision_study.study_config('background', 'official', 0, [])
  changed = supervision_study.study_config('background', 'official', 0,
                                           testbed_search.SETTINGS[setting])
  differs = changed.data.synthetic.to_dict() != default.data.synthetic.to_dict()
  assert differs == (setting != 'default')


def test_search_table_reports_margin_and_verdict_from_the_seed_means():
  results = {
      'good': {'background/official': [fake_result(0.36, 0.40), fake_result(0.38, 0.42)],
               'none/official': [fake_result(0.30, 0.35), fake_result(0.30, 0.35)]},
      'small_margin': {'background/official': [fake_result(0.33, 0.4)],
                       'none/official': [fake_result(0.30, 0.35)]},
      'too_high': {'background/official': [fake_result(0.60, 0.6)],
                   # a results.json of the version before the names of reporting/averages.py
                   'none/official': [{**fake_result(0.30, 0.0),
                                      'average_mAP': {'0.1:0.7': 0.35, 'all scored': 0.1}}]},
  }
  rows = testbed_search.summarise(results).splitlines()[2:]
  cells = [[c.strip() for c in row.strip('|').split('|')] for row in rows]
  assert cells[0] == ['good', '2', '37.0', '30.0', '41.0', '35.0', '+7.0', 'yes']
  assert cells[1][-2:] == ['+3.0', 'no']
  assert cells[2] == ['too_high', '1', '60.0', '30.0', '60.0', '35.0', '+30.0', 'no']
