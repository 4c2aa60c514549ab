"""The core install: no TensorFlow Datasets (an extra) unless a run reads the TFDS copy."""

import subprocess
import sys
import textwrap


# Runs with tensorflow_datasets made impossible to import, as after `pip install backtal_jax`.
WITHOUT_TFDS = textwrap.dedent('''
    import sys
    sys.modules['tensorflow_datasets'] = None
    from backtal_jax import checkpoint, evaluate, main, train
    from backtal_jax.data import pipeline
    from configs import thumos
    config = thumos.get_data_config()
    config.source = 'tfds'
    try:
      pipeline.open_source(config, 'test', num_classes=20, train=False)
    except ValueError as e:
      print(e)
    ''')


def test_core_modules_import_without_tfds_and_tfds_source_says_what_to_install():
  result = subprocess.run([sys.executable, '-c', WITHOUT_TFDS], capture_output=True, text=True,
                          check=False, timeout=120)
  assert result.returncode == 0, result.stderr
  assert "config.data.source='tfds'" in result.stdout
  assert "pip install 'backtal_jax[tfds]'" in result.stdout


def test_training_imports_neither_tfds_nor_its_dependencies():
  """Checked where tensorflow-datasets is installed (CI): importing it is what costs."""
  check = subprocess.run(
      [sys.executable, '-c', 'import sys; from backtal_jax import main, train, evaluate; '
       'print(sorted(m for m in sys.modules if m.split(".")[0] in '
       '("tensorflow_datasets", "tensorflow", "pyarrow", "array_record")))'],
      capture_output=True, text=True, check=True, timeout=120)
  assert check.stdout.strip() == '[]'
