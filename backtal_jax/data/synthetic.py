"""The semi-synthetic testbed: real annotations, synthesized I3D-like features, official layout.

Real feature files cannot be downloaded here, so this writes stand-ins that the real loading path
reads unchanged: one npz per video in `OUT/<split>/<video>.npz` (THUMOS14 splits 'val' and
'test', ActivityNet1.2 'training' and 'validation'), with `feat_spa` and `feat_tem` float32
[W, T] channels-first, `cls_label` multi-hot float32 [C] and `vid_name`; training files add
`point_label` int32 [T] (real A1 clicks for THUMOS14, simulated background clicks for
ActivityNet1.2), test files `frame_num`, `fps` and `duration`. `frame_num` counts the video's
16-frame I3D snippets, round(duration x fps / 16), the convention of the official fixtures.

The features pose the paper's problem, action-context confusion (recipe D, the default; README, 'The
semi-synthetic testbed'): every video carries its classes' scene component (RGB half) everywhere,
stronger inside and around instances; actions add their class's motion component (flow half, a
little in RGB); snippets within a context length of an action carry a weaker share of its motion;
class-like distractor stretches sit in the background; a background mixture and noise cover
everything.
Every knob is a field of `default_config()`.

Each video's features depend only on the seed, the dataset and the video's name; the same seed
writes the same bytes (fixed zip timestamps), and each file appears atomically (written to a
hidden temporary name, then renamed), so an interrupted build leaves no partial npz behind.

  python -m backtal_jax.data.synthetic --dataset=thumos14 --out=DIR \
      [--num_segments=750 --half_width=1024 --seed=0 --set=noise=0.5 ...]
"""

import dataclasses
import logging
import os
import pathlib
import sys
import time
from typing import Mapping
from typing import Sequence
import zipfile

from absl import flags
import ml_collections
import numpy as np

from backtal_jax.core import errors
from backtal_jax.core import fields
from backtal_jax.data import annotations
from backtal_jax.data import click_simulation
from backtal_jax.data import clicks as clicks_lib
from backtal_jax.data import seeding

ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  ground_truth: str  # Shipped annotation name.
  train_split: str  # Ground-truth subset = official DATA_DIR split of the training videos.
  test_split: str
  num_segments: int  # The official T.
  clicks: str  # Default click source of the training videos.


DATASETS = {
    'thumos14': DatasetSpec('thumos14_gt', 'val', 'test', 750, 'A1'),
    'activitynet12': DatasetSpec('activitynet12_gt', 'training', 'validation', 100, 'simulated'),
}


def default_config(dataset: str = 'thumos14') -> ml_collections.ConfigDict:
  """Recipe D (module docstring) for `dataset`; strengths are multiples of unit-norm prototypes."""
  spec = DATASETS[dataset]
  c = ml_collections.ConfigDict()
  c.dataset = dataset  # 'thumos14' or 'activitynet12': annotations and splits.
  c.num_segments = spec.num_segments  # T, snippets per video (750 THUMOS14, 100 ActivityNet1.2).
  c.half_width = 1024  # W, channels of feat_spa and of feat_tem (official 1024; CPU demo 64).
  c.seed = 0  # Everything random derives from it (and the names of the videos).
  c.num_train_videos = -1  # Training videos written, first by name; -1: all.
  c.num_test_videos = -1  # Test videos written, first by name; -1: all.
  c.clicks = spec.clicks  # Training point labels: 'A1', 'A2', 'A3', 'union', 'random' (THUMOS14
  # human clicks) or 'simulated' (one background click per background gap, any dataset).
  c.simulated_action_clicks = False  # With clicks='simulated', also one action click per instance.
  c.frames_per_snippet = 16  # frame_num = round(duration * fps / frames_per_snippet).
  c.num_background_prototypes = 8  # Generic background vectors per half.
  c.scene_away = 1.0  # Scene strength of each video class away from its instances (RGB half).
  c.scene_inside = 2.0  # Scene strength inside the class's instances.
  c.scene_context = 2.5  # Scene strength in the context around the class's instances.
  c.scene_jitter = 0.3  # Scene strength x U(1 - jitter, 1 + jitter), drawn per video and class.
  c.rgb_motion_inside = 0.5  # Motion (action vector) strength in the RGB half inside instances.
  c.motion_inside = 3.0  # Motion strength in the flow half inside instances.
  c.motion_jitter = 0.2  # Inside motion x U(1 - jitter, 1 + jitter), drawn per instance.
  c.motion_context = 2.0  # Motion strength in the flow half in the context around instances.
  c.motion_away = 0.0  # Motion strength in the flow half elsewhere.
  c.context_length = 0.3  # Context before and after each instance, in instance lengths.
  c.distractors_per_instance = 0.5  # Distractor stretches per video ~ Poisson(this x instances).
  c.distractor_min_length = 0.5  # Distractor length ~ U(min, max) x the mean instance length.
  c.distractor_max_length = 1.5  # (Placed uniformly, wholly outside instances, or skipped.)
  c.distractor_scene = 2.5  # Scene strength of a distractor's class inside it (context level).
  c.distractor_motion = 2.0  # Flow-half motion strength of a distractor's class inside it.
  c.background_strength = 2.0  # Strength of the background mixture, both halves, everywhere.
  c.background_min_stretch = 20  # The mixture holds one prototype per stretch of snippets,
  c.background_max_stretch = 120  # of U{min..max} snippets;
  c.background_switch_prob = 0.7  # at each new stretch a new random prototype with this chance.
  c.noise = 1.0  # Expected L2 norm of the Gaussian noise of a snippet (both halves together).
  c.smoothness = 0.0  # Temporal Gaussian blur of the features, sigma in snippets; 0: off.
  return c


# Every knob's type and range (core/fields.py); the pre-flight checks them (data.synthetic.*).
_STRENGTHS = ('scene_away', 'scene_inside', 'scene_context', 'rgb_motion_inside', 'motion_inside',
              'motion_context', 'motion_away', 'context_length', 'distractors_per_instance',
              'distractor_scene', 'distractor_motion', 'background_strength', 'noise',
              'smoothness')
CONFIG_FIELDS = {
    'dataset': fields.choice(*DATASETS),
    'num_segments': fields.integer(1),
    'half_width': fields.integer(1),
    'seed': fields.integer(0),
    'num_train_videos': fields.integer(1, also=(-1,)),
    'num_test_videos': fields.integer(1, also=(-1,)),
    'clicks': fields.choice(*clicks_lib.SOURCES, 'simulated'),
    'simulated_action_clicks': fields.flag(),
    'frames_per_snippet': fields.integer(1),
    'num_background_prototypes': fields.integer(1),
    'scene_jitter': fields.number(0, 1),
    'motion_jitter': fields.number(0, 1),
    'distractor_min_length': fields.number(0, low_open=True),
    'distractor_max_length': fields.number(0, low_open=True),
    'background_min_stretch': fields.integer(1),
    'background_max_stretch': fields.integer(1),
    'background_switch_prob': fields.number(0, 1),
    **{knob: fields.number(0) for knob in _STRENGTHS},
}


def config_problems(config: ml_collections.ConfigDict) -> list[str]:
  """Every knob set to something that cannot build a testbed, by name."""
  problems = [f'{knob}={value!r}: expected {expected}'
              for knob, value, expected in fields.violations(config, CONFIG_FIELDS)]
  if problems:  # the comparisons below need numbers
    return problems
  if config.distractor_max_length < config.distractor_min_length:
    problems.append(f'distractor_max_length={config.distractor_max_length}: expected >= '
                    f'distractor_min_length ({config.distractor_min_length})')
  if config.background_max_stretch < config.background_min_stretch:
    problems.append(f'background_max_stretch={config.background_max_stretch}: expected >= '
                    f'background_min_stretch ({config.background_min_stretch})')
  return problems


def check_config(config: ml_collections.ConfigDict) -> None:
  problems = config_problems(config)
  if problems:
    raise errors.UserError('Synthetic testbed settings that cannot work:\n  ' +
                           '\n  '.join(problems))


@dataclasses.dataclass(frozen=True)
class Prototypes:
  """Unit-variance Gaussian vectors / sqrt(W), so each has norm about 1."""
  scene_CxW: np.ndarray
  motion_CxW: np.ndarray
  background_rgb_MxW: np.ndarray
  background_flow_MxW: np.ndarray


def make_prototypes(config: ml_collections.ConfigDict, num_classes: int) -> Prototypes:
  rng = seeding.named_rng(config.seed, config.dataset, 'prototypes')
  w, k = config.half_width, config.num_background_prototypes
  draw = lambda n: (rng.standard_normal((n, w)) / np.sqrt(w)).astype(np.float32)
  return Prototypes(scene_CxW=draw(num_classes), motion_CxW=draw(num_classes),
                    background_rgb_MxW=draw(k), background_flow_MxW=draw(k))


def snippet_centres(video: annotations.Video, num_segments: int) -> np.ndarray:
  """Centre times (t + 0.5) / T x duration of the snippets, in seconds."""
  return (np.arange(num_segments) + 0.5) / num_segments * video.duration


def class_masks(video: annotations.Video, classes: Sequence[int], centres_T: np.ndarray,
                context_length: float) -> tuple[np.ndarray, np.ndarray]:
  """Per video class, the snippets inside its instances and those only in their context."""
  inside_AxT = np.zeros((len(classes), len(centres_T)), bool)
  around_AxT = np.zeros_like(inside_AxT)
  for inst in video.instances:
    row = classes.index(inst.label)
    margin = context_length * inst.length
    inside_AxT[row] |= (centres_T >= inst.start) & (centres_T <= inst.end)
    around_AxT[row] |= (centres_T >= inst.start - margin) & (centres_T <= inst.end + margin)
  return inside_AxT, around_AxT & ~inside_AxT


def inside_motion(video: annotations.Video, classes: Sequence[int], centres_T: np.ndarray,
                  config: ml_collections.ConfigDict, rng: np.random.Generator) -> np.ndarray:
  """Flow-half motion strength inside instances, jittered per instance (overlaps: the larger)."""
  motion_AxT = np.zeros((len(classes), len(centres_T)), np.float32)
  for inst in video.instances:
    level = config.motion_inside * rng.uniform(1 - config.motion_jitter, 1 + config.motion_jitter)
    covered = (centres_T >= inst.start) & (centres_T <= inst.end)
    row = classes.index(inst.label)
    motion_AxT[row] = np.where(covered, np.maximum(motion_AxT[row], level), motion_AxT[row])
  return motion_AxT


def distractor_mask(video: annotations.Video, classes: Sequence[int], centres_T: np.ndarray,
                    config: ml_collections.ConfigDict, rng: np.random.Generator) -> np.ndarray:
  """Class-like stretches placed uniformly, wholly outside every instance, per video class."""
  mask_AxT = np.zeros((len(classes), len(centres_T)), bool)
  if not video.instances:
    return mask_AxT
  mean_length = np.mean([inst.length for inst in video.instances])
  count = rng.poisson(config.distractors_per_instance * len(video.instances))
  starts = np.array([inst.start for inst in video.instances])
  ends = np.array([inst.end for inst in video.instances])
  for _ in range(count):
    length = mean_length * rng.uniform(config.distractor_min_length, config.distractor_max_length)
    row = rng.integers(len(classes))
    candidates = rng.uniform(0, max(video.duration - length, 0), size=64)
    free = ~((candidates[:, None] < ends) & (candidates[:, None] + length > starts)).any(axis=1)
    if free.any():
      begin = candidates[np.argmax(free)]
      mask_AxT[row] |= (centres_T >= begin) & (centres_T <= begin + length)
  return mask_AxT


def background_mixture(num_segments: int, config: ml_collections.ConfigDict,
                       rng: np.random.Generator) -> np.ndarray:
  """One-hot [M, T] background prototype per snippet, held for stretches of snippets."""
  choice_T = np.empty(num_segments, np.int64)
  current, t = rng.integers(config.num_background_prototypes), 0
  while t < num_segments:
    if t and rng.uniform() < config.background_switch_prob:
      current = rng.integers(config.num_background_prototypes)
    stretch = rng.integers(config.background_min_stretch, config.background_max_stretch + 1)
    choice_T[t:t + stretch] = current
    t += stretch
  return (np.arange(config.num_background_prototypes)[:, None] == choice_T).astype(np.float32)


def smooth_time(feat_WxT: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian blur along time, renormalised at the ends (so edges keep their scale)."""
  radius = int(np.ceil(3 * sigma))
  weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
  num_segments = feat_WxT.shape[1]
  padded = np.pad(feat_WxT, ((0, 0), (radius, radius)))
  total_T = np.convolve(np.ones(num_segments, np.float32), weights, mode='same')
  blurred = sum(w * padded[:, i:i + num_segments] for i, w in enumerate(weights))
  return (blurred / total_T).astype(np.float32)


def video_features(video: annotations.Video, prototypes: Prototypes,
                   config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
  """(feat_spa_WxT, feat_tem_WxT) of one video: prototypes times per-snippet coefficients."""
  rng = seeding.named_rng(config.seed, config.dataset, video.name, 'features')
  classes = list(video.labels)
  centres_T = snippet_centres(video, config.num_segments)
  inside_AxT, around_AxT = class_masks(video, classes, centres_T, config.context_length)
  distract_AxT = distractor_mask(video, classes, centres_T, config, rng)
  jitter_A = rng.uniform(1 - config.scene_jitter, 1 + config.scene_jitter, len(classes))
  scene_AxT = jitter_A[:, None] * np.select(
      [inside_AxT, around_AxT, distract_AxT],
      [config.scene_inside, config.scene_context, config.distractor_scene], config.scene_away)
  flow_motion_AxT = np.select(
      [inside_AxT, around_AxT, distract_AxT],
      [inside_motion(video, classes, centres_T, config, rng), config.motion_context,
       config.distractor_motion], config.motion_away)
  background_MxT = config.background_strength * background_mixture(
      config.num_segments, config, rng)
  rgb_coef = np.concatenate([scene_AxT, config.rgb_motion_inside * inside_AxT, background_MxT])
  flow_coef = np.concatenate([flow_motion_AxT, background_MxT])
  rgb_basis = np.concatenate([prototypes.scene_CxW[classes], prototypes.motion_CxW[classes],
                              prototypes.background_rgb_MxW])
  flow_basis = np.concatenate([prototypes.motion_CxW[classes], prototypes.background_flow_MxW])
  noise_scale = config.noise / np.sqrt(2 * config.half_width)
  halves = []
  for basis, coef in ((rgb_basis, rgb_coef), (flow_basis, flow_coef)):
    feat_WxT = basis.T @ coef.astype(np.float32)
    feat_WxT += noise_scale * rng.standard_normal(feat_WxT.shape, np.float32)
    if config.smoothness > 0:
      feat_WxT = smooth_time(feat_WxT, config.smoothness)
    halves.append(feat_WxT.astype(np.float32))
  return halves[0], halves[1]


def multi_hot(video: annotations.Video, num_classes: int) -> np.ndarray:
  label_C = np.zeros(num_classes, np.float32)
  label_C[list(video.labels)] = 1.0
  return label_C


def write_npz(path: pathlib.Path, arrays: Mapping[str, np.ndarray]) -> None:
  """np.savez's layout with fixed timestamps (same arrays, same bytes), appearing atomically."""
  tmp = path.with_name(f'.{path.name}.tmp')
  try:
    with zipfile.ZipFile(tmp, 'w', zipfile.ZIP_STORED) as archive:
      for key, value in arrays.items():
        info = zipfile.ZipInfo(f'{key}.npy', date_time=ZIP_DATE_TIME)
        with archive.open(info, 'w', force_zip64=True) as f:
          np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


def train_point_labels(videos: Sequence[annotations.Video], gt: annotations.GroundTruth,
                       config: ml_collections.ConfigDict) -> Mapping[str, np.ndarray]:
  if config.clicks == 'simulated':
    labels = click_simulation.simulate_point_labels(
        videos, config.num_segments, gt.num_classes, seed=config.seed,
        actions=config.simulated_action_clicks)
    unclicked = sorted(v for v, label_T in labels.items() if not (label_T == gt.num_classes).any())
    logging.info('%d of %d training videos have no background gap of a whole snippet, so no '
                 'background click: %s', len(unclicked), len(videos), unclicked[:20])
    return labels
  if config.dataset != 'thumos14':
    raise errors.UserError(f"Human clicks exist for thumos14 only; use clicks='simulated' for "
                     f'{config.dataset}')
  return clicks_lib.build_point_labels(videos, gt.class_names, config.num_segments,
                                       source=config.clicks, seed=config.seed).labels


def _first(videos: list[annotations.Video], count: int) -> list[annotations.Video]:
  return videos if count < 0 else videos[:count]


def build(config: ml_collections.ConfigDict, out_dir: str | os.PathLike,
          progress: bool = False) -> dict[str, list[pathlib.Path]]:
  """Writes the testbed under out_dir/<split>/; returns the files written per split."""
  check_config(config)
  spec = DATASETS[config.dataset]
  gt = annotations.load_ground_truth(spec.ground_truth)
  prototypes = make_prototypes(config, gt.num_classes)
  train = _first(gt.subset(spec.train_split), config.num_train_videos)
  jobs = [(spec.train_split, v) for v in train] + [
      (spec.test_split, v) for v in _first(gt.subset(spec.test_split), config.num_test_videos)]
  point_labels = train_point_labels(train, gt, config)
  written = {spec.train_split: [], spec.test_split: []}
  for split in written:
    (pathlib.Path(out_dir) / split).mkdir(parents=True, exist_ok=True)
  started = last_report = time.monotonic()
  for done, (split, video) in enumerate(jobs, start=1):
    feat_spa_WxT, feat_tem_WxT = video_features(video, prototypes, config)
    arrays = {'feat_spa': feat_spa_WxT, 'feat_tem': feat_tem_WxT,
              'cls_label': multi_hot(video, gt.num_classes), 'vid_name': np.array(video.name)}
    if split == spec.train_split:
      arrays['point_label'] = point_labels[video.name]
    else:
      arrays['frame_num'] = np.array(video.frame_num(config.frames_per_snippet), np.int64)
      arrays['fps'] = np.array(video.fps, np.float64)
      arrays['duration'] = np.array(video.duration, np.float64)
    path = pathlib.Path(out_dir) / split / f'{video.name}.npz'
    write_npz(path, arrays)
    written[split].append(path)
    now = time.monotonic()
    if progress and (now - last_report > 0.5 or done == len(jobs)):
      last_report = now
      eta = (now - started) / done * (len(jobs) - done)
      sys.stderr.write(f'\r{done}/{len(jobs)} videos, {now - started:.1f} s, ETA {eta:.1f} s  ')
  if progress:
    sys.stderr.write('\n')
  return written


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """Sets 'knob=value' strings on config, converting each value to the knob's type."""
  for item in overrides:
    key, sep, value = item.partition('=')
    if not sep or key not in config:
      raise errors.UserError(
          f'--set expects knob=value with a knob of default_config(), got {item!r}')
    kind = type(config[key])
    try:
      config[key] = value.lower() in ('1', 'true') if kind is bool else kind(value)
    except ValueError:
      raise errors.UserError(f'--set {item!r}: {key} takes a {kind.__name__}') from None


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags, defined only when it runs (so importing this module defines none)."""
  flags.DEFINE_enum('dataset', 'thumos14', sorted(DATASETS), 'Dataset to imitate.')
  flags.DEFINE_string('out', None, 'Output folder (gets one sub-folder per split).', required=True)
  flags.DEFINE_integer('num_segments', None, "T; default: the dataset's (750 or 100).")
  flags.DEFINE_integer('half_width', 1024, 'Channels of each half (RGB, flow).')
  flags.DEFINE_integer('seed', 0, 'Random seed.')
  flags.DEFINE_integer('num_train_videos', -1, 'Training videos to write; -1: all.')
  flags.DEFINE_integer('num_test_videos', -1, 'Test videos to write; -1: all.')
  flags.DEFINE_multi_string('set', [], 'Any other knob of default_config(): knob=value.')


def main(argv: Sequence[str]) -> None:
  del argv
  config = default_config(FLAGS.dataset)
  config.half_width, config.seed = FLAGS.half_width, FLAGS.seed
  config.num_train_videos, config.num_test_videos = FLAGS.num_train_videos, FLAGS.num_test_videos
  if FLAGS.num_segments is not None:
    config.num_segments = FLAGS.num_segments
  apply_overrides(config, FLAGS.set)
  started = time.monotonic()
  written = build(config, FLAGS.out, progress=True)
  size = sum(p.stat().st_size for paths in written.values() for p in paths)
  counts = ', '.join(f'{split}: {len(paths)}' for split, paths in written.items())
  print(f'Wrote {counts} videos, {size / 1e6:.1f} MB, to {FLAGS.out} in '
        f'{time.monotonic() - started:.1f} s')


if __name__ == '__main__':
  define_flags()
  errors.run(main)
