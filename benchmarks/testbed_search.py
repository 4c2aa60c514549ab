"""A search of the semi-synthetic testbed's knobs (issue: the training loop, item 6).

Each setting changes recipe D (configs/thumos.py:synthetic) in one direction that the project's
design listed as untried (benchmarks/TESTBED_SEARCH.md names each), builds its own testbed under
--root/<setting>/testbed, and trains it with background clicks and with video labels only
(benchmarks/supervision_study.py does the training; finished runs are skipped, interrupted ones
resume). The table says, per setting, whether background clicks land in the paper's mAP@0.5 range on
real features (25 to 45) and by how much they beat video labels.

  python -m benchmarks.testbed_search --root=/tmp/search \
      --settings=default,smoothness_2 --seeds=0 --markdown=benchmarks/TESTBED_SEARCH.md
"""

import pathlib

from absl import app
from absl import flags
import numpy as np

from backtal_jax.reporting import averages
from backtal_jax.reporting import logs
from benchmarks import supervision_study

# One change of recipe D per setting, each along a direction the design listed as not yet
# tried, plus a second draw of the testbed itself to show how much the draw alone moves mAP.
SETTINGS = {
    'default': (),
    'testbed_seed_1': ('data.synthetic.seed=1',),
    'smoothness_2': ('data.synthetic.smoothness=2.0',),
    'motion_context_1': ('data.synthetic.motion_context=1.0',),
    'motion_context_1.25': ('data.synthetic.motion_context=1.25',),
    'motion_context_1.5': ('data.synthetic.motion_context=1.5',),
    'noise_2': ('data.synthetic.noise=2.0',),
    'context_length_0.5': ('data.synthetic.context_length=0.5',),
    'background_prototypes_32': ('data.synthetic.num_background_prototypes=32',),
    'distractors_1': ('data.synthetic.distractors_per_instance=1.0',),
}
PAPER_RANGE = (0.25, 0.45)  # mAP@0.5 BackTAL reaches on real features across the paper's tables
MIN_MARGIN = 0.05  # background clicks must beat video labels by this much mAP@0.5


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('root', None, 'Folder of the search (one subfolder per setting).',
                      required=True)
  flags.DEFINE_list('settings', list(SETTINGS), f'Settings to run, of {list(SETTINGS)}.')
  flags.DEFINE_list('runs', ['background/official', 'none/official'],
                    'supervision/affinity pairs trained per setting.')
  flags.DEFINE_list('seeds', ['0'], 'Training seeds.')
  flags.DEFINE_string('markdown', '', 'Write the table here as well.')


def verdict(background_map: float, margin: float) -> str:
  in_range = PAPER_RANGE[0] <= background_map <= PAPER_RANGE[1]
  return 'yes' if in_range and margin >= MIN_MARGIN else 'no'


def seed_mean(results: list[dict], value) -> float:
  """The mean of `value(result)` over the seeds' results; NaN when the run has none."""
  return float(np.mean([value(r) for r in results])) if results else float('nan')


def summarise(results: dict[str, dict[str, list[dict]]]) -> str:
  """Markdown: per setting, mAP@0.5 and average 0.1:0.7 (mean over seeds) for each run."""
  runs = sorted({run for per_run in results.values() for run in per_run})
  header = ['setting', 'seeds'] + [f'{run} @0.5' for run in runs]
  header += [f'{run} avg 0.1:0.7' for run in runs] + ['background - none @0.5', 'meets (a), (b)']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
  for setting, per_run in results.items():
    at_05 = {run: seed_mean(per_run.get(run, []), lambda r: supervision_study.map_at(r, 0.5))
             for run in runs}
    average = {run: seed_mean(per_run.get(run, []), lambda r: averages.upgrade_names(
        r['average_mAP'])['mAP_avg_0.1_0.7']) for run in runs}
    margin = at_05.get('background/official', np.nan) - at_05.get('none/official', np.nan)
    seeds = min(len(v) for v in per_run.values())
    cells = [setting, str(seeds)] + [f'{100 * at_05[run]:.1f}' for run in runs]
    cells += [f'{100 * average[run]:.1f}' for run in runs]
    cells += [f'{100 * margin:+.1f}', verdict(at_05.get('background/official', np.nan), margin)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv):
  del argv
  logs.quiet_library_logs()
  unknown = sorted(set(FLAGS.settings) - set(SETTINGS))
  if unknown:
    raise app.UsageError(f'--settings: unknown {unknown}; known: {list(SETTINGS)}')
  root = pathlib.Path(FLAGS.root)
  results: dict[str, dict[str, list[dict]]] = {}
  for setting in FLAGS.settings:
    for seed in (int(s) for s in FLAGS.seeds):
      for run in FLAGS.runs:
        supervision, affinity = run.split('/')
        result = supervision_study.run_one(root / setting, supervision, affinity, seed,
                                           SETTINGS[setting])
        results.setdefault(setting, {}).setdefault(run, []).append(result)
    supervision_study.publish(summarise(results), FLAGS.markdown)


if __name__ == '__main__':
  define_flags()
  app.run(main)
