#!/usr/bin/env bash
# The device check (issue: accelerator speed, item 5), for a lent H100/H200, within 8 minutes:
#   1. the affinity formulations against the naive one on the device, then timed
#      (benchmarks/affinity_kernel.py at the THUMOS14 shape; a formulation that disagrees with the
#      naive one is reported incorrect and not timed);
#   2. the whole train step at the THUMOS14 shape (benchmarks/train_step.py), float32 and bfloat16;
#   3. a timed whole 40-epoch run of the synthetic testbed at official width (2048 features,
#      hidden 2048), evaluated once at the end.
# Every number goes into one JSON (--out). --dry-run does the same at tiny shapes on any machine.
#
#   bash benchmarks/device_check.sh --out=device_check.json [--dry-run]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=device_check.json
dry_run=0
for arg in "$@"; do
  case "$arg" in
    --out=*) out="${arg#--out=}" ;;
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "device_check.sh: unknown argument '$arg' (expected --out=FILE or --dry-run)" >&2
       exit 2 ;;
  esac
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python="${PYTHON:-python}"

if ((dry_run)); then
  kernel_args=(--shapes=2x9 --width=8 --affinity=official --modes=forward --precisions=default
               --formulations=naive,fast --warmup=0 --repeats=1)
  step_args=(--shapes=4x16 --width=8 --dtypes=float32 --warmup=0 --repeats=1)
  run_config=configs/thumos.py:debug
  # two epochs, every class scored: the best epoch is a choice the report can check
  run_args=(--config.train.num_epochs=2 --config.eval.num_plots=0 --config.eval.class_score_thresh=0)
else
  kernel_args=(--shapes=thumos14 --affinity=official --precisions=default,bfloat16
               --formulations=naive,fast,scaled_unfold,convolution --repeats=10)
  step_args=(--shapes=thumos14 --repeats=10)
  run_config=configs/thumos.py:synthetic
  run_args=(--config.data.synthetic.half_width=1024 --config.data.feature_dim=2048
            --config.model.feat_dim=2048 --config.model.hidden_dim=2048
            --config.model.filter_dim=512 --config.model.embed_hidden_dim=512
            --config.eval.every_epochs=40 --config.eval.num_plots=0)
fi

"$python" -m benchmarks.affinity_kernel "${kernel_args[@]}" --json_out="$work/affinity.json"
"$python" -m benchmarks.train_step "${step_args[@]}" --json_out="$work/train_step.json"

# The testbed is built before the clock starts: the timed part is the trainer alone.
"$python" -c "
import sys
from absl import flags
from backtal_jax.data import datasets
from ml_collections import config_flags
config_flags.DEFINE_config_file('config', '$run_config')
flags.FLAGS(sys.argv)
config = flags.FLAGS.config
config.data.features_root = '$work/testbed'
datasets.synthetic_root(config, '$work')
" "${run_args[@]}"
started=$(date +%s.%N)
"$python" -m backtal_jax.main --config="$run_config" --workdir="$work/run" \
  --config.data.features_root="$work/testbed" "${run_args[@]}" > "$work/run.log" 2>&1 \
  || { tail -20 "$work/run.log" >&2; exit 1; }
finished=$(date +%s.%N)

"$python" - "$work" "$out" "$started" "$finished" "$run_config" "${run_args[*]}" <<'PY'
import json, pathlib, sys
work, out, started, finished, config, args = sys.argv[1:]
work = pathlib.Path(work)
run = json.loads((work / 'run' / 'results.json').read_text())
# Each evaluated epoch's selection score, from its detections: what picked the best epoch.
from backtal_jax.data import annotations
from backtal_jax.evaluation import mean_ap
recorded = json.loads((work / 'run' / 'config.json').read_text())['config']
truth = str(annotations.load_ground_truth(recorded['eval']['ground_truth']).path)
tiou = recorded['eval']['tiou_thresholds']
metric = recorded['train']['selection_metric']
epoch_scores = {}
for detections in sorted((work / 'run' / 'detections').glob('epoch_*.json')):
  map_U = mean_ap.detection_map(truth, str(detections), subset=recorded['eval']['subset'],
                                tiou_thresholds=tuple(tiou))[0]
  score = (sum(map_U) / len(map_U) if metric == 'average' else
           map_U[[abs(t - float(metric[4:])) < 1e-9 for t in tiou].index(True)])
  epoch_scores[int(detections.stem.split('_')[1])] = float(score)
report = {
    'affinity_kernel': json.loads((work / 'affinity.json').read_text()),
    'train_step': json.loads((work / 'train_step.json').read_text()),
    'whole_run': {'config': config, 'overrides': args, 'seconds': float(finished) - float(started),
                  'best_epoch': run['best_epoch'], 'epoch_scores': epoch_scores,
                  'mAP': run['mAP'], 'tiou': run['tiou']},
}
pathlib.Path(out).write_text(json.dumps(report, indent=1) + '\n')
print(f"device check: whole run {report['whole_run']['seconds']:.1f} s; all numbers in {out}")
PY
