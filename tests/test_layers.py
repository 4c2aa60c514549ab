"""The package's layers, as import-linter holds them: the real tree keeps every contract, and an
import that crosses a layer is caught (so a broken contract fails CI the minute it is written)."""

import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LINT_IMPORTS = shutil.which('lint-imports') or str(pathlib.Path(sys.executable).parent /
                                                   'lint-imports')


def lint_imports(root: pathlib.Path) -> subprocess.CompletedProcess:
  return subprocess.run([LINT_IMPORTS, '--config', str(root / 'pyproject.toml'), '--no-cache'],
                        cwd=root, env={'PYTHONPATH': str(root), 'PATH': '/usr/bin:/bin'},
                        capture_output=True, text=True, timeout=120)


def copy_of_package(tmp_path: pathlib.Path) -> pathlib.Path:
  shutil.copytree(REPO / 'backtal_jax', tmp_path / 'backtal_jax',
                  ignore=shutil.ignore_patterns('__pycache__', 'annotations'))
  shutil.copy(REPO / 'pyproject.toml', tmp_path / 'pyproject.toml')
  return tmp_path


def test_the_package_keeps_every_contract(tmp_path):
  result = lint_imports(copy_of_package(tmp_path))
  assert result.returncode == 0, result.stdout + result.stderr
  assert '0 broken' in result.stdout


@pytest.mark.parametrize('module, line, contract', [
    ('model/network.py', 'from backtal_jax.run import train_state',
     'The network imports no data, mesh, run or evaluation code'),
    ('model/network.py', 'from backtal_jax.core import sharding',
     'The network imports no data, mesh, run or evaluation code'),
    ('model/losses.py', 'import flax', 'Losses take arrays'),
    ('data/features.py', 'from backtal_jax.evaluation import postprocess',
     'Data imports no network, evaluation, reporting or run code'),
    ('evaluation/mean_ap.py', 'import jax', 'Evaluation over arrays'),
    ('evaluation/evaluator.py', 'from backtal_jax.run import checkpoint',
     'The evaluation engine imports no checkpoint or run code'),
    ('reporting/logs.py', 'from backtal_jax import main', 'Nothing imports the commands'),
])
def test_an_import_across_a_layer_is_caught(tmp_path, module, line, contract):
  root = copy_of_package(tmp_path)
  path = root / 'backtal_jax' / module
  source = path.read_text()
  docstring_end = source.index('"""', 3) + 3  # after the module docstring
  path.write_text(source[:docstring_end] + '\n' + line + '\n' + source[docstring_end:])
  result = lint_imports(root)
  assert result.returncode == 1, result.stdout
  broken = result.stdout.split('Broken contracts')[-1]
  assert contract in broken, result.stdout
