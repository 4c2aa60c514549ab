"""The supervision study on the semi-synthetic THUMOS14 testbed (issue: the training loop, item 6).

Trains configs/thumos.py:synthetic once per (supervision, affinity, seed), each in its own
workdir under --root (a finished run is skipped, an interrupted one resumes), then tabulates the
test mAP of the best epoch (picked on the test split by mAP@0.5, as the official code) as mean and
spread over the seeds.

  python -m benchmarks.supervision_study --root=/tmp/study \
      --runs=background/official,none/official --seeds=0,1,2 --markdown=benchmarks/STUDY.md
"""

import json
import pathlib
import time
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from backtal_jax.reporting import logs
from backtal_jax.run import train
from configs import thumos

TIOUS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('root', None, 'Folder of the runs (one workdir per run).', required=True)
  flags.DEFINE_list('runs', ['background/official', 'none/official', 'action/official',
                             'both/official', 'background/paper'],
                    'supervision/affinity pairs, in the order they are trained.')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Training seeds (init, dropout, data order).')
  flags.DEFINE_list('set', [],
                    'Extra config overrides, key=value (e.g. eval.class_score_thresh=0.25).')
  flags.DEFINE_string('markdown', '', 'Write the table here as well.')


def study_config(supervision: str, affinity: str, seed: int, overrides: Sequence[str]):
  config = thumos.get_config('synthetic')
  config.train.supervision = supervision
  config.model.affinity = affinity
  config.train.seed = seed
  config.data.shuffle_seed = seed
  for item in overrides:
    apply_override(config, item)
  return config


def apply_override(config, item: str) -> None:
  """Sets `group.field=value`, parsed as the field's current type; unknown fields are errors."""
  key, sep, text = item.partition('=')
  group, _, field = key.rpartition('.')
  target = config
  for part in filter(None, group.split('.')):
    target = target[part]
  if not sep or field not in target:
    raise KeyError(f'--set {item!r}: expected group.field=value naming an existing config field')
  current = target[field]
  if isinstance(current, bool):
    if text.lower() not in ('true', 'false'):
      raise ValueError(f'--set {item!r}: {key} is a bool, give true or false')
    target[field] = text.lower() == 'true'
  else:
    target[field] = type(current)(text)


def run_one(root: pathlib.Path, supervision: str, affinity: str, seed: int,
            overrides: Sequence[str]) -> dict:
  workdir = root / f'{supervision}_{affinity}_seed{seed}'
  results = workdir / 'results.json'
  if not results.exists():
    config = study_config(supervision, affinity, seed, overrides)
    config.data.features_root = str(root / 'testbed')  # one testbed for every run
    started = time.monotonic()
    train.train_and_evaluate(config, str(workdir))
    logging.info('%s: trained in %.0f s', workdir, time.monotonic() - started)
  return json.loads(results.read_text())


def map_at(result: dict, tiou: float) -> float:
  """The mAP at `tiou` from a run's results.json."""
  return result['mAP'][result['tiou'].index(tiou)]


def publish(table: str, markdown: str) -> None:
  """Prints the table and, if `markdown` names a file, writes it there too."""
  print(table, flush=True)
  if markdown:
    pathlib.Path(markdown).write_text(table + '\n')


def summarise(results: dict[str, list[dict]]) -> str:
  """Markdown: mAP (%) at 0.1..0.7 and their average, mean +- std over seeds."""
  header = ('| supervision / affinity | seeds | ' + ' | '.join(f'{t:.1f}' for t in TIOUS) +
            ' | avg 0.1:0.7 |')
  lines = [header, '|' + ' --- |' * (len(TIOUS) + 3)]
  for name, runs in results.items():
    if not runs:
      continue
    per_tiou = np.array([[map_at(r, t) for t in TIOUS] for r in runs]) * 100
    average = per_tiou.mean(axis=1)
    cells = [f'{m:.1f} ± {s:.1f}' for m, s in zip(per_tiou.mean(0), per_tiou.std(0))]
    lines.append(f'| {name} | {len(runs)} | ' + ' | '.join(cells) +
                 f' | {average.mean():.1f} ± {average.std():.1f} |')
  return '\n'.join(lines)


def main(argv):
  del argv
  logs.quiet_library_logs()
  root = pathlib.Path(FLAGS.root)
  seeds = [int(s) for s in FLAGS.seeds]
  results: dict[str, list[dict]] = {}
  for seed in seeds:
    for run in FLAGS.runs:
      supervision, affinity = run.split('/')
      results.setdefault(run, []).append(
          run_one(root, supervision, affinity, seed, FLAGS.set))
      publish(summarise(results), FLAGS.markdown)


if __name__ == '__main__':
  define_flags()
  app.run(main)
