"""Seconds for post-processing plus mAP over all of THUMOS14 test and ActivityNet1.2 validation.

  python -m benchmarks.eval_speed [--repeats=3]

Inputs resemble the official-code fixtures (../shared/fixtures/reference/postprocess_*): real
video ids, durations and instances from the shipped ground truth; a CAS of smooth noise (std ~0.3)
raised by ~1.5 inside each ground-truth instance of its class; softmaxed video scores where the
video's classes pass the threshold; feature_supp_1 [T, 64] with larger norms inside instances;
frame_num = int(duration * fps / 16). Seeded. Generation is not timed; each stage reports its
best time over the repeats.
"""

import json
import time

from absl import app
from absl import flags
import numpy as np

from backtal_jax.data import resources
from backtal_jax.evaluation import mean_ap
from backtal_jax.evaluation import postprocess
from configs import activitynet12
from configs import thumos

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_integer('repeats', 3, 'Timed repeats per stage; the best is reported.')
  flags.DEFINE_integer('feature_dim', 64, 'Width of feature_supp_1 (fixtures: 64).')


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], std: float) -> np.ndarray:
  """Noise along axis 0 with snippet-to-snippet correlation ~0.7, as in the fixtures' CAS."""
  white = rng.normal(size=shape)
  kernel = np.ones(5) / np.sqrt(5)
  smooth = np.apply_along_axis(lambda x: np.convolve(x, kernel, mode='same'), 0, white)
  return std * (0.6 * smooth + 0.4 * white)


def synthetic_video(rng, entry, class_index, num_snippets, num_classes, feature_dim):
  """(cas_TxC1, video_scores_C1, feature_TxH, frame_num, duration) for one ground-truth video."""
  duration = float(entry['duration'])
  cas_TxC1 = smooth_noise(rng, (num_snippets, num_classes + 1), 0.3)
  feature_TxH = rng.normal(size=(num_snippets, feature_dim))
  logits_C1 = rng.normal(size=num_classes + 1)
  for ann in entry['annotations']:
    c = class_index[ann['label']]
    first = min(int(ann['segment'][0] / duration * num_snippets), num_snippets - 1)
    last = min(max(first + 1, int(np.ceil(ann['segment'][1] / duration * num_snippets))),
               num_snippets)
    cas_TxC1[first:last, c] += 1.5 + 0.3 * rng.normal(size=last - first)
    feature_TxH[first:last] *= 1.5
    logits_C1[c] = 5.0
  scores_C1 = np.exp(logits_C1) / np.exp(logits_C1).sum()
  frame_num = int(duration * entry.get('fps', 30) / 16)
  return (cas_TxC1.astype(np.float32), scores_C1.astype(np.float32),
          feature_TxH.astype(np.float32), frame_num, duration)


def best_time(fn, repeats):
  times, result = [], None
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - start)
  return min(times), result


def benchmark(title, gt_name, config, num_snippets, repeats, feature_dim):
  gt_path = resources.annotation_path(gt_name)
  gt = json.loads(gt_path.read_text())
  class_names = gt['activity_list']
  class_index = {c: i for i, c in enumerate(class_names)}
  subset = config.eval.subset
  rng = np.random.default_rng(0)
  videos = {vid: synthetic_video(rng, entry, class_index, num_snippets, len(class_names),
                                 feature_dim)
            for vid, entry in gt['database'].items() if entry['subset'] == subset}

  def run_postprocess():
    return {'results': {
        vid: postprocess.detect_video(cas, scores, feature, frame_num=frame_num,
                                      duration=duration, class_names=class_names, config=config)
        for vid, (cas, scores, feature, frame_num, duration) in videos.items()}}

  def run_map():
    return mean_ap.detection_map(gt_path, predictions, subset=subset,
                                    tiou_thresholds=config.eval.tiou_thresholds)

  seconds_post, predictions = best_time(run_postprocess, repeats)
  seconds_map, (map_U, average) = best_time(run_map, repeats)
  num_detections = sum(len(d) for d in predictions['results'].values())
  print(f'{title}: {len(videos)} videos, T={num_snippets}, {len(class_names)} classes, '
        f'{num_detections} detections, mAP avg {average:.4f}')
  print(f'  post-processing {seconds_post:.3f} s   mAP {seconds_map:.3f} s   '
        f'total {seconds_post + seconds_map:.3f} s')


def main(argv):
  del argv
  benchmark('THUMOS14 test', 'thumos14_gt', thumos.get_config(), 750, FLAGS.repeats,
            FLAGS.feature_dim)
  benchmark('ActivityNet1.2 validation', 'activitynet12_gt', activitynet12.get_config(), 100,
            FLAGS.repeats, FLAGS.feature_dim)


if __name__ == '__main__':
  define_flags()
  app.run(main)
