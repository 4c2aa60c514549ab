"""Seconds to read an official-width .pth (THUMOS14: F = H = 2048) without and with PyTorch.

  python -m benchmarks.pth_load [--repeats=5] [--folder=/tmp/backtal_pth]

Writes the official checkpoint layout ({'epoch', 'state_dict'}, random float32 weights, 29.5 M
parameters, 118 MB) in both serialisations (torch is needed to write them and for the
comparison), then times, each in a fresh Python process so that imports count as a user sees
them: `backtal_jax.load_official_checkpoint` (importing backtal_jax.model.official_weights, which
brings JAX and orbax, reading, converting to the Flax layout), `backtal_jax.model.torch_pickle.load`
alone (numpy only), and `import torch; torch.load(path, weights_only=True)`. Also the read alone in
this process, best of the repeats. The page cache is warm (each file was just written or read).
"""

import os
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

from backtal_jax.model import torch_pickle

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_integer('repeats', 5, 'Timed repeats; the median (processes) and the best '
                       '(in-process reads) are reported.')
  flags.DEFINE_string('folder', '/tmp/backtal_pth', 'Where the .pth files are written.')


# official name -> shape at the THUMOS14 width
OFFICIAL_SHAPES = {
    'filter_module.conv_1.0.weight': (512, 2048, 1), 'filter_module.conv_1.0.bias': (512,),
    'filter_module.conv_2.0.weight': (1, 512, 1), 'filter_module.conv_2.0.bias': (1,),
    'embedding_module.conv_1.weight': (512, 2048, 3), 'embedding_module.conv_1.bias': (512,),
    'embedding_module.conv_2.weight': (32, 512, 3), 'embedding_module.conv_2.bias': (32,),
    'base_module.conv_1.weight': (2048, 2048, 3), 'base_module.conv_2.weight': (2048, 2048, 3),
    'classifier_module.conv.weight': (21, 2048, 1),
}

OURS = ('from backtal_jax import load_official_checkpoint; import sys; '
        'load_official_checkpoint(sys.argv[1])')
READER_ONLY = ('from backtal_jax.model import torch_pickle; import sys; '
               'torch_pickle.load(sys.argv[1])')
TORCH = 'import torch, sys; torch.load(sys.argv[1], map_location="cpu", weights_only=True)'


def write_files(folder: str) -> dict[str, str]:
  import torch  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  state_dict = {name: torch.from_numpy(rng.standard_normal(shape, np.float32) * 0.01)
                for name, shape in OFFICIAL_SHAPES.items()}
  os.makedirs(folder, exist_ok=True)
  paths = {}
  for label, zip_format in (('legacy (official files)', False), ('zip', True)):
    paths[label] = os.path.join(folder, f'thumos14_{"zip" if zip_format else "legacy"}.pth')
    torch.save({'epoch': 37, 'state_dict': state_dict}, paths[label],
               _use_new_zipfile_serialization=zip_format)
  return paths


def process_seconds(code: str, path: str, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    started = time.perf_counter()
    subprocess.run([sys.executable, '-c', code, path], check=True)
    times.append(time.perf_counter() - started)
  return float(np.median(times))


def read_seconds(read, path: str, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    started = time.perf_counter()
    read(path)
    times.append(time.perf_counter() - started)
  return min(times)


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top
  paths = write_files(FLAGS.folder)
  n = sum(int(np.prod(shape)) for shape in OFFICIAL_SHAPES.values())
  print(f'{n / 1e6:.1f} M parameters, {os.path.getsize(paths["zip"]) / 1e6:.0f} MB per file')
  print('| file | process: load_official_checkpoint | process: torch_pickle.load | '
        'process: torch.load | read: torch_pickle | read: torch |')
  print('| --- | --- | --- | --- | --- | --- |')
  for label, path in paths.items():
    ours = process_seconds(OURS, path, FLAGS.repeats)
    reader_only = process_seconds(READER_ONLY, path, FLAGS.repeats)
    theirs = process_seconds(TORCH, path, FLAGS.repeats)
    read_ours = read_seconds(torch_pickle.load, path, FLAGS.repeats)
    read_theirs = read_seconds(
        lambda p: torch.load(p, map_location='cpu', weights_only=True), path, FLAGS.repeats)
    print(f'| {label} | {ours:.2f} s | {reader_only:.2f} s | {theirs:.2f} s | {read_ours:.3f} s | '
          f'{read_theirs:.3f} s |')


if __name__ == '__main__':
  define_flags()
  app.run(main)
