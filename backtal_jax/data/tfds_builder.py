"""A TFDS dataset of the official per-video feature files, stored as ArrayRecord.

Building once turns thousands of .npz files into a few ArrayRecord shards that
`tfds.data_source` reads by index, without TensorFlow. The examples are validated by
`features.read_video` on the way in and keep the sorted-file-name order of the official loader
(shuffling disabled), so index i is the same video from either source and both give the same
batches. Splits keep the official names (THUMOS14: 'val' and 'test').

  python -m backtal_jax.data.tfds_builder --config=thumos14 --manual_dir=/data/THUMOS14 \
      --data_dir=~/tensorflow_datasets
"""

import dataclasses
import os

from absl import flags
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from backtal_jax.core import errors
from backtal_jax.data import feature_scan
from backtal_jax.data import features


@dataclasses.dataclass
class FeatureConfig(tfds.core.BuilderConfig):
  """One dataset's splits and static shapes."""

  train_split: str = 'val'
  test_split: str = 'test'
  num_classes: int = 20
  num_segments: int = 750
  feature_dim: int = 2048


CONFIGS = (
    FeatureConfig(name='thumos14', description='THUMOS14, official I3D features.'),
    FeatureConfig(name='activitynet12', description='ActivityNet1.2, official I3D features.',
                  train_split='training', test_split='validation', num_classes=100,
                  num_segments=100),
    FeatureConfig(name='hacs', description='HACS, official I3D features.',
                  train_split='training', test_split='validation', num_classes=200,
                  num_segments=200),
    FeatureConfig(name='thumos14_synthetic', feature_dim=128,
                  description='Semi-synthetic THUMOS14 testbed (backtal_jax.data.synthetic).'),
    FeatureConfig(name='activitynet12_synthetic', feature_dim=128,
                  description='Semi-synthetic ActivityNet1.2 testbed (backtal_jax.data.synthetic).',
                  train_split='training', test_split='validation', num_classes=100,
                  num_segments=100),
)


def _exact_float64() -> tfds.features.Tensor:
  """A float64 scalar stored as raw bytes: TFDS's default proto float is float32, which would
  round durations and frame rates, and with them every detection's time in seconds."""
  return tfds.features.Tensor(shape=(), dtype=np.float64, encoding=tfds.features.Encoding.BYTES)


class BacktalFeatures(tfds.core.GeneratorBasedBuilder):
  """Official-layout BackTAL features read from a manual directory."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = list(CONFIGS)
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download the official BackTAL I3D features (github.com/VividLe/BackTAL, "Data '
      'Preparation") and pass the dataset directory, the one holding <split>/*.npz (e.g. '
      'THUMOS14/val and THUMOS14/test), as --manual_dir.')

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This file. TFDS 4.9.10 derives it through `importlib_resources`, which it imports but does
    not install on Python >= 3.9 (github.com/tensorflow/datasets/issues/11212)."""
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=config.description,
        features=tfds.features.FeaturesDict({
            'vid_name': tfds.features.Text(),
            'features': tfds.features.Tensor(
                shape=(config.num_segments, config.feature_dim), dtype=np.float32),
            'video_labels': tfds.features.Tensor(shape=(config.num_classes,), dtype=np.float32),
            'click_labels': tfds.features.Tensor(shape=(config.num_segments,), dtype=np.int32),
            'frame_num': tfds.features.Scalar(dtype=np.int64),
            'fps': _exact_float64(),
            'duration': _exact_float64(),
        }),
        disable_shuffling=True,
        homepage='https://github.com/VividLe/BackTAL',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    return {
        config.train_split: self._generate_examples(dl_manager.manual_dir, config.train_split,
                                                    train=True),
        config.test_split: self._generate_examples(dl_manager.manual_dir, config.test_split,
                                                   train=False),
    }

  def _generate_examples(self, manual_dir, split: str, *, train: bool):
    config = self.builder_config
    for index, path in enumerate(features.list_split(manual_dir, split)):
      record = features.read_video(
          path, num_classes=config.num_classes, feature_dim=config.feature_dim,
          num_segments=config.num_segments, require_clicks=train, require_metadata=not train)
      yield index, features.to_example(record)


def data_source(name: str, split: str, data_dir: str | None = None):
  """Random access to a built split, through ArrayRecord: no TensorFlow involved."""
  return tfds.data_source(name, split=split, data_dir=data_dir)


def check_manual_dir(config: FeatureConfig, manual_dir: str) -> None:
  """Every problem of the files of both splits at once, before any work (headers only)."""
  problems = []
  for split, train in ((config.train_split, True), (config.test_split, False)):
    problems += feature_scan.scan_split(
        manual_dir, split, num_classes=config.num_classes, feature_dim=config.feature_dim,
        num_segments=config.num_segments, train=train)[1]
  if problems:
    raise errors.Problems(problems, f'in {manual_dir} before building')


def build(config_name: str, manual_dir: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Builds (or finds already built) one config of the dataset."""
  builder = BacktalFeatures(config=config_name, data_dir=data_dir,
                            file_format=tfds.core.FileFormat.ARRAY_RECORD)
  if not builder.is_prepared():
    check_manual_dir(builder.builder_config, manual_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_enum('config', 'thumos14', [c.name for c in CONFIGS], 'Dataset to build.')
  flags.DEFINE_string('manual_dir', None, 'Directory holding <split>/*.npz.', required=True)
  flags.DEFINE_string('data_dir', '~/tensorflow_datasets', 'Where TFDS writes the dataset.')


def main(argv):
  del argv
  builder = build(FLAGS.config, FLAGS.manual_dir, os.path.expanduser(FLAGS.data_dir))
  print(builder.info)


if __name__ == '__main__':
  define_flags()
  errors.run(main)
