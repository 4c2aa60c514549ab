"""The splits a run uses: training videos, the split that picks the best epoch, the test split.

The official code picks the best epoch on the test split itself (`config.train.selection_split =
'test'`). `'heldout'` instead keeps a seeded share of the training videos apart and picks on them,
scored against their ground truth, so the test split is only looked at once, at the end.
"""

import dataclasses
import hashlib
import json
from typing import Any

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from backtal_jax.core import errors
from backtal_jax.core import fields
from backtal_jax.core import files
from backtal_jax.core import membership
from backtal_jax.data import annotations
from backtal_jax.data import click_simulation
from backtal_jax.data import feeds
from backtal_jax.data import pipeline
from backtal_jax.data import seeding
from backtal_jax.data import supervision
from backtal_jax.data import synthetic

# config.data and the selection fields (core/fields.py), checked before the first step
CONFIG_FIELDS = {
    'data.dataset': fields.text(nonempty=True),
    'data.source': fields.choice('npz', 'tfds', 'synthetic'),
    'data.features_root': fields.text(optional=True),
    'data.train_split': fields.text(nonempty=True),
    'data.test_split': fields.text(nonempty=True),
    'data.num_segments': fields.integer(1),
    'data.feature_dim': fields.integer(1),
    'data.tfds_name': fields.text(nonempty=True),
    'data.tfds_data_dir': fields.text(optional=True),
    'data.frames_per_snippet': fields.integer(1),
    'data.shuffle_seed': fields.integer(0),
    'data.prefetch': fields.integer(0),
    'data.readers': fields.integer(1),
    'data.resident': fields.choice(*feeds.MODES),
    'data.resident_max_gb': fields.number(0),
    'train.selection_split': fields.choice('test', 'heldout'),
    'train.heldout_fraction': fields.number(0, 1, low_open=True, high_open=True),
    **{f'data.synthetic.{knob}': field for knob, field in synthetic.CONFIG_FIELDS.items()},
}


@dataclasses.dataclass(frozen=True)
class EvalSplit:
  """Videos to evaluate and the ground truth that scores them."""
  name: str  # 'test' or 'heldout', for logs and file names
  source: pipeline.Source
  ground_truth: annotations.GroundTruth  # class names
  ground_truth_json: Any  # what detection_map scores against: a path or a parsed dict
  subset: str  # ground-truth subset of these videos


class Subset:
  """Some examples of a source, by index."""

  def __init__(self, source: pipeline.Source, indices: np.ndarray):
    self.source, self.indices = source, np.asarray(indices)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict:
    return self.source[int(self.indices[index])]


class WithGroundTruthMetadata:
  """Training videos carry no frame_num/fps/duration; evaluation takes them from the ground truth
  (frame_num counts 16-frame snippets, as in the official test files)."""

  def __init__(self, source: pipeline.Source, ground_truth: annotations.GroundTruth,
               frames_per_snippet: int):
    self.source, self.ground_truth = source, ground_truth
    self.frames_per_snippet = frames_per_snippet

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    example = dict(self.source[index])
    video = self.ground_truth.videos[example['vid_name']]
    example['frame_num'] = np.int64(video.frame_num(self.frames_per_snippet))
    example['fps'] = np.float64(video.fps)
    example['duration'] = np.float64(video.duration)
    return example


class Supervised:
  """Training examples whose click labels follow config.train.supervision; action clicks are
  simulated from the ground truth, seeded per video name, or (action_clicks='file') those the
  feature file's point_label holds, such as clicks imported from the annotation page."""

  def __init__(self, source: pipeline.Source, kind: str, ground_truth: annotations.GroundTruth,
               num_segments: int, seed: int, action_clicks: str = 'simulated'):
    supervision.check_supervision(kind)
    supervision.check_action_clicks(action_clicks)
    self.source, self.kind, self.ground_truth = source, kind, ground_truth
    self.num_segments, self.seed, self.action_source = num_segments, seed, action_clicks

  def __len__(self) -> int:
    return len(self.source)

  def action_clicks(self, vid_name: str, click_labels_T: np.ndarray) -> np.ndarray | None:
    if not supervision.needs_action_clicks(self.kind):
      return None
    if self.action_source == 'file':
      return supervision.file_action_clicks(click_labels_T, self.ground_truth.num_classes)
    if membership.videos_outside([vid_name], self.ground_truth.subset_of)[0]:
      raise KeyError(f'{vid_name}: no ground truth in {self.ground_truth.path} to simulate action '
                     'clicks from (config.train.supervision)')
    return click_simulation.simulate_clicks(
        self.ground_truth.videos[vid_name], self.num_segments, self.ground_truth.num_classes,
        seeding.named_rng(self.seed, vid_name, 'action_clicks'), background=False, actions=True)

  def __getitem__(self, index: int) -> dict:
    example = dict(self.source[index])
    example['click_labels'] = supervision.supervised_clicks(
        example['click_labels'], self.action_clicks(example['vid_name'], example['click_labels']),
        self.ground_truth.num_classes, self.kind)
    return example


def features_root(config: ml_collections.ConfigDict, workdir: str) -> epath.Path:
  """The folder holding <split>/*.npz: config.data.features_root, or where the synthetic testbed
  is built when that is unset."""
  if config.data.source == 'synthetic' and not config.data.features_root:
    return default_synthetic_root(config, workdir)
  return epath.Path(config.data.features_root)


def synthetic_root(config: ml_collections.ConfigDict, workdir: str) -> epath.Path:
  """Builds the semi-synthetic testbed once per filesystem.

  Process 0 builds first and the others wait at a barrier, then check for themselves: on a shared
  filesystem they find it built; on a host's own disk they build the same (seeded) copy. Every
  process reaches the barrier, so none pairs it with another collective.
  """
  root = features_root(config, workdir)
  if jax.process_index() == 0:
    _build_once(config.data.synthetic, root)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('synthetic testbed built')
    if jax.process_index() != 0:
      _build_once(config.data.synthetic, root)
  return root


def default_synthetic_root(config: ml_collections.ConfigDict, workdir: str) -> epath.Path:
  """WORKDIR/synthetic_data; for a workdir on an object store (gs://) a folder under the home
  directory instead, one per settings, since the testbed is written and read as local files."""
  if '://' not in str(workdir):
    return epath.Path(workdir) / 'synthetic_data'
  settings = json.dumps(config.data.synthetic.to_dict(), sort_keys=True).encode()
  return (epath.Path('~').expanduser() / 'backtal_synthetic_data' /
          hashlib.sha256(settings).hexdigest()[:12])


def _build_once(synthetic_config: ml_collections.ConfigDict, root: epath.Path) -> None:
  """Builds the testbed under `root` unless a marker says it is there with these settings."""
  marker = root / 'COMPLETE.json'
  settings = synthetic_config.to_dict()
  if marker.exists() and json.loads(marker.read_text()) == settings:
    return
  if marker.exists():
    raise errors.UserError(f'{root} holds a testbed built with other settings ({marker}); remove '
                           'it or point config.data.features_root elsewhere.')
  logging.info('Building the semi-synthetic testbed in %s', root)
  synthetic.build(synthetic_config, root, progress=True)
  files.write_json_atomically(marker, settings)  # the marker appears whole or not at all


def _open(config, root, split, *, train):
  data_config = config.data
  if data_config.source == 'synthetic':
    data_config = ml_collections.ConfigDict(config.data.to_dict())
    data_config.source, data_config.features_root = 'npz', str(root)
  return pipeline.open_source(data_config, split, num_classes=config.model.num_classes, train=train)


def check_shapes(config: ml_collections.ConfigDict) -> None:
  """The testbed's width follows config.data.synthetic.half_width unless feature_dim is set
  apart (configs tie the rest): say so before building files the model cannot read."""
  if config.data.source == 'synthetic':
    built = (config.data.synthetic.num_segments, 2 * config.data.synthetic.half_width)
    if built != (config.data.num_segments, config.data.feature_dim):
      raise errors.UserError(f'config.data.synthetic builds T, F = {built} but config.data expects '
                             f'{(config.data.num_segments, config.data.feature_dim)}')


def heldout_indices(num_videos: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(training, held-out) indices: a seeded share of the videos, at least one, kept apart
  (`fraction` in (0, 1): CONFIG_FIELDS)."""
  order = seeding.named_rng(seed, 'heldout').permutation(num_videos)
  count = max(1, int(round(num_videos * fraction)))
  return np.sort(order[count:]), np.sort(order[:count])


def heldout_ground_truth_json(ground_truth_path, names: list[str]) -> dict:
  """The ground-truth file restricted to the held-out videos, so mAP is over those alone."""
  raw = json.loads(epath.Path(ground_truth_path).read_text())
  raw['database'] = {name: raw['database'][name] for name in names}
  return raw


def batch_spec(config: ml_collections.ConfigDict) -> pipeline.BatchSpec:
  """The static per-example shapes of training and evaluation batches."""
  return pipeline.BatchSpec(config.data.num_segments, config.data.feature_dim,
                            config.model.num_classes)


@dataclasses.dataclass
class Datasets:
  """Sources of one run and the loader factory."""
  config: ml_collections.ConfigDict
  train: pipeline.Source
  selection: EvalSplit
  test: EvalSplit

  def train_feed(self, start: pipeline.DataPosition, mesh: jax.sharding.Mesh):
    """The step's inputs from `start` on: device-resident or streamed (feeds.train_feed)."""
    return feeds.train_feed(self.train, self.config, batch_spec(self.config), start, mesh)


def check_class_count(ground_truth: annotations.GroundTruth,
                      config: ml_collections.ConfigDict) -> None:
  """The ground truth names the classes the model scores: as many as config.model.num_classes."""
  if ground_truth.num_classes != config.model.num_classes:
    raise errors.UserError(f'{ground_truth.path} lists {ground_truth.num_classes} classes but '
                           f'config.model.num_classes is {config.model.num_classes}')


def open_datasets(config: ml_collections.ConfigDict, workdir: str,
                  ground_truth: annotations.GroundTruth | None = None) -> Datasets:
  """The run's splits from config.data, config.train and config.eval; `ground_truth`: the one
  the pre-flight read (else it is read here)."""
  check_shapes(config)
  if not config.eval.ground_truth:
    raise errors.UserError('config.eval.ground_truth is not set: give the ground-truth JSON of the '
                           'dataset (for HACS, the official HACS_segments_v1.1.1.json), e.g. '
                           '--config.eval.ground_truth=/data/HACS/HACS_segments_v1.1.1.json')
  ground_truth = ground_truth or annotations.load_ground_truth(config.eval.ground_truth)
  check_class_count(ground_truth, config)
  root = synthetic_root(config, workdir) if config.data.source == 'synthetic' else None
  train = _open(config, root, config.data.train_split, train=True)
  test = EvalSplit('test', _open(config, root, config.data.test_split, train=False), ground_truth,
                   str(ground_truth.path), config.eval.subset)
  selection = test  # selection_split 'test' or 'heldout' (CONFIG_FIELDS)
  if config.train.selection_split == 'heldout':
    kept, heldout = heldout_indices(len(train), config.train.heldout_fraction, config.train.seed)
    heldout_source = WithGroundTruthMetadata(Subset(train, heldout), ground_truth,
                                             config.data.frames_per_snippet)
    names = [heldout_source[i]['vid_name'] for i in range(len(heldout_source))]
    selection = EvalSplit('heldout', heldout_source, ground_truth,
                          heldout_ground_truth_json(ground_truth.path, names),
                          config.data.train_split)
    train = Subset(train, kept)
  train = Supervised(train, config.train.supervision, ground_truth, config.data.num_segments,
                     config.train.seed, config.train.action_clicks)
  return Datasets(config, train, selection, test)
