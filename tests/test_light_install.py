"""The core install: no TensorFlow Datasets (an extra) unless a run reads the TFDS copy."""

import json
import subprocess
import sys
import textwrap

# Imports what training, evaluation and checkpoints need and lists the TFDS modules that came
# along; then makes tensorflow_datasets impossible to import, as after `pip install backtal_jax`,
# and asks for the TFDS source.
SCRIPT = textwrap.dedent('''
    import json
    import sys
    from backtal_jax.run import checkpoint
    from backtal_jax import evaluate
    from backtal_jax import main
    from backtal_jax.run import train
    from backtal_jax.data import pipeline
    from configs import thumos
    heavy = sorted(m for m in sys.modules if m.split('.')[0] in (
        'tensorflow_datasets', 'tensorflow', 'pyarrow', 'array_record'))
    sys.modules['tensorflow_datasets'] = None
    config = thumos.get_data_config()
    config.source = 'tfds'
    try:
      pipeline.open_source(config, 'test', num_classes=20, train=False)
      message = ''
    except ValueError as e:
      message = str(e)
    print(json.dumps({'heavy': heavy, 'message': message}))
    ''')


def test_training_imports_no_tfds_and_the_tfds_source_names_the_extra():
  result = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True, text=True,
                          check=False, timeout=120)
  assert result.returncode == 0, result.stderr
  found = json.loads(result.stdout.splitlines()[-1])
  assert found['heavy'] == []
  assert "config.data.source='tfds'" in found['message']
  assert "pip install 'backtal_jax[tfds]'" in found['message']
