"""benchmarks/side_by_side.py without the official checkout: its table and its refusals (the
timed comparison itself needs the official code and runs for minutes: benchmarks/RESULTS.md)."""

import subprocess
import sys

import pytest

from benchmarks import side_by_side

REPO = side_by_side.REPO_ROOT


def test_map_table_keeps_tiou_01_to_07_in_percent_and_averages_them():
  tiou = [0.1 * i for i in range(1, 10)]  # 0.30000000000000004 and the like, as computed
  table = side_by_side.map_table(tiou, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
  assert list(table) == ['0.1', '0.2', '0.3', '0.4', '0.5', '0.6', '0.7', 'average_0.1:0.7']
  assert table['0.5'] == pytest.approx(50.0)
  assert table['average_0.1:0.7'] == pytest.approx(60.0)


def test_commands_run_the_same_files_for_the_same_epochs(tmp_path):
  official = side_by_side.official_command('/src/BackTAL', tmp_path / 'testbed', tmp_path, 3, 0)
  ours = side_by_side.backtal_jax_command(tmp_path / 'testbed', tmp_path, 3)
  assert f'--features_root={tmp_path / "testbed"}' in official
  assert f'--config.data.features_root={tmp_path / "testbed"}' in ours
  assert '--epochs=3' in official
  assert {'--config.train.num_epochs=3', '--config.eval.every_epochs=3'} <= set(ours)
  assert ours[1:4] == ['-m', 'backtal_jax.main', '--config=configs/thumos.py:synthetic']


@pytest.mark.parametrize('flags, message', [
    (['--official_repo=/nonexistent'], 'no tools/train.py there'),
    (['--official_repo=/nonexistent', '--order=official'], '--order must name'),
])
def test_refuses_before_any_work(tmp_path, flags, message):
  result = subprocess.run([sys.executable, '-m', 'benchmarks.side_by_side', *flags,
                           f'--json_out={tmp_path / "out.json"}', f'--root={tmp_path / "root"}'],
                          cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode != 0 and message in result.stderr
  assert not (tmp_path / 'root').exists() and not (tmp_path / 'out.json').exists()
