"""benchmarks/device_check.sh end to end at tiny shapes on the CPU (its --dry-run)."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_dry_run_writes_every_part_into_one_json(tmp_path):
  out = tmp_path / 'device_check.json'
  env = {**os.environ, 'PYTHONPATH': str(REPO), 'PYTHON': sys.executable}
  result = subprocess.run(['bash', str(REPO / 'benchmarks' / 'device_check.sh'), '--dry-run',
                           f'--out={out}'], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  kernel_rows = report['affinity_kernel']['results']
  assert {r['formulation'] for r in kernel_rows} == {'naive', 'fast'}
  assert all(r['correct'] for r in kernel_rows)
  assert [r['status'] for r in report['train_step']['results']] == ['ok']
  run = report['whole_run']
  assert run['seconds'] > 0 and len(run['mAP']) == 9
  scores = {int(epoch): score for epoch, score in run['epoch_scores'].items()}
  assert sorted(scores) == [1, 2]
  assert run['best_epoch'] == max(sorted(scores), key=scores.get)  # the first wins a tie


def test_unknown_argument_is_one_message():
  result = subprocess.run(['bash', str(REPO / 'benchmarks' / 'device_check.sh'), '--fast'],
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 2
  assert result.stderr.strip() == ("device_check.sh: unknown argument '--fast' (expected "
                                    '--out=FILE or --dry-run)')
