"""Annotation files into the feature files' labels, so that `python -m backtal_jax.main` trains on
them unchanged.

  python -m backtal_jax.annotation.to_labels --config=my_config.py \
      --annotations=my_annotations/alice.json,my_annotations/bob.json [--source=union]

Each feature file of the training split (config.data.features_root / config.data.train_split)
gets `vid_name`, `cls_label` (multi-hot over the config's classes: the checked classes) and
`point_label` (int32 [T]: -100, a class index at action clicks, C at background clicks). A click
at t seconds of a video of d seconds lands on snippet int(t / d * T), T = config.data.num_segments,
as for the THUMOS14 annotators' files (backtal_jax.data.clicks). The files are rewritten through a
temporary file; every other array is kept as it was.

Annotation files are this package's own (written by the annotation page), or the JSON exports of
Label Studio (video timeline labels) and of the VGG Image Annotator (backtal_jax.annotation.
exports). Among several annotators, `--source` picks one by name, their union, or a random
annotator per video (seeded by the video's name), as for the THUMOS14 annotators.

Every problem is found before any file is written and reported together, each naming the video and
the value: a click outside its video, an annotated video without a feature file, a feature file no
annotation covers, a class outside the config's list, a feature file of another length than T.
"""

import dataclasses
import pathlib
from typing import Mapping
from typing import Sequence

from absl import flags
import ml_collections
from ml_collections import config_flags
import numpy as np

from backtal_jax.annotation import annotation_file
from backtal_jax.annotation import class_list
from backtal_jax.annotation import exports
from backtal_jax.core import errors
from backtal_jax.data import clicks as clicks_lib
from backtal_jax.data import features
from backtal_jax.data import synthetic
from backtal_jax.data import unannotated


@dataclasses.dataclass(frozen=True)
class VideoLabels:
  """One video's labels as the official training files store them."""
  video_labels_C: np.ndarray  # float32 multi-hot
  click_labels_T: np.ndarray  # int32


def by_annotator(found: Sequence[annotation_file.AnnotationFile]
                 ) -> dict[str, annotation_file.AnnotationFile]:
  """The files by annotator name: two files of one annotator would double their clicks."""
  named = {}
  for one in found:
    if one.annotator in named:
      raise errors.UserError(f'{one.path}: field annotator: {one.annotator!r} is also the '
                             f'annotator of {named[one.annotator].path}')
    named[one.annotator] = one
  return named


def check_source(source: str, annotators: Sequence[str]) -> str:
  """The source to use: an annotator's name, 'union' or 'random'; unset means the only one."""
  if not source:
    if len(annotators) != 1:
      raise errors.UserError(f'--source: {len(annotators)} annotators ({", ".join(annotators)}): '
                             'name one, or union or random')
    return annotators[0]
  if source not in (*annotators, 'union', 'random'):
    raise errors.UserError(f'--source: {source!r} is neither an annotator of the files '
                           f'({", ".join(annotators)}) nor union or random')
  return source


def chosen(named: Mapping[str, annotation_file.AnnotationFile], video: str, source: str,
           seed: int) -> list[annotation_file.VideoAnnotation]:
  """The annotations of `video` the source stands for: one annotator's, or all of them (union).

  The annotator itself is chosen by data.clicks.choose_clicks, so that 'random' picks the same
  annotator here as for the THUMOS14 annotators' files."""
  who = {name: {v: name for v in one.videos} for name, one in named.items()}
  if source == 'union':
    return [named[name].videos[video] for name in sorted(named) if video in named[name].videos]
  name = clicks_lib.choose_clicks(who, video, source, seed)
  return [] if name is None else [named[name].videos[video]]


def video_labels(annotated: Sequence[annotation_file.VideoAnnotation], class_names: Sequence[str],
                 num_segments: int, video: str) -> VideoLabels:
  """cls_label from the checked classes, point_label from the clicks (union: all of them; where
  two annotators' clicks share a snippet, the later annotator by name wins, as a later click does
  within one annotator's clicks)."""
  labels_C = np.zeros(len(class_names), np.float32)
  labels_C[[class_names.index(c) for one in annotated for c in one.classes]] = 1.0
  labels_T = np.full(num_segments, clicks_lib.IGNORE_LABEL, np.int32)
  for one in annotated:  # each annotator's clicks at their own measure of the duration
    one_T = clicks_lib.click_labels(one.clicks, duration=one.duration, num_segments=num_segments,
                                    class_names=class_names, video=video)
    labels_T = np.where(one_T != clicks_lib.IGNORE_LABEL, one_T, labels_T)
  return VideoLabels(labels_C, labels_T)


def class_problems(named: Mapping[str, annotation_file.AnnotationFile],
                   class_names: Sequence[str]) -> list[str]:
  """Classes checked or clicked that the config's list lacks, naming the video and the class."""
  problems = []
  for one in named.values():
    for video, entry in sorted(one.videos.items()):
      used = [*entry.classes, *(c.tag for c in entry.clicks if c.tag != clicks_lib.BACKGROUND_TAG)]
      for name in dict.fromkeys(used):
        if name not in class_names:
          problems.append(f'{one.path}: video {video!r}: class {name!r} is not in the config\'s '
                          f'class list {list(class_names)}')
  return problems


FeatureFiles = Mapping[str, tuple[pathlib.Path, int]]  # video -> (file, snippets stored)


def feature_files(features_root, split: str, feature_dim: int) -> FeatureFiles:
  """The split's feature files by video name (their vid_name, else the file name), with T."""
  found = {}
  for path in features.list_split(features_root, split):
    header = features.read_header(path, feature_dim=feature_dim)
    found[header.vid_name or path.stem] = (path, header.num_snippets)
  return found


def plan(named: Mapping[str, annotation_file.AnnotationFile], files: FeatureFiles,
         class_names: Sequence[str], num_segments: int, source: str, seed: int
         ) -> dict[str, VideoLabels]:
  """Every feature file's labels, or one error listing every problem."""
  problems = class_problems(named, class_names)
  annotated = sorted({video for one in named.values() for video in one.videos})
  for video in annotated:
    if video not in files:
      problems.append(f'video {video!r} has no feature file (annotated in '
                      f'{", ".join(str(one.path) for one in named.values() if video in one.videos)}'
                      ')')
  labels = {}
  for video, (path, num_snippets) in sorted(files.items()):
    if num_snippets != num_segments:
      problems.append(f'{path}: video {video!r}: {num_snippets} snippets, but '
                      f'config.data.num_segments is {num_segments}')
      continue
    chosen_ones = chosen(named, video, source, seed)
    if not chosen_ones:
      problems.append(f'{path}: feature file of video {video!r}, which source {source!r} has no '
                      'annotation of')
      continue
    if not problems:
      labels[video] = video_labels(chosen_ones, list(class_names), num_segments, video)
  if problems:
    raise errors.Problems(problems, 'in the annotations and the feature files')
  return labels


def write_labels(path: pathlib.Path, video: str, labels: VideoLabels) -> None:
  """The file with vid_name, cls_label and point_label set, everything else kept as stored."""
  with features.open_npz(path) as archive:
    arrays = {key: archive[key] for key in archive.files}
  arrays.update(vid_name=np.array(video), cls_label=labels.video_labels_C,
                point_label=labels.click_labels_T)
  synthetic.write_npz(path, arrays)


def read_annotators(annotation_paths: Sequence[str], class_names: Sequence[str],
                    metadata_csv: str = '') -> dict[str, annotation_file.AnnotationFile]:
  """Every annotator's annotations in the files (an export may hold several annotators)."""
  metadata = unannotated.read_metadata_csv(metadata_csv) if metadata_csv else {}
  return by_annotator([one for path in annotation_paths
                       for one in exports.read(path, class_names, metadata)])


def import_labels(config: ml_collections.ConfigDict, annotation_paths: Sequence[str],
                  source: str = '', seed: int = 0, metadata_csv: str = ''
                  ) -> dict[str, VideoLabels]:
  """Writes the labels of config.data.train_split's feature files; returns them by video."""
  class_names = class_list.from_config(config)
  named = read_annotators(annotation_paths, class_names, metadata_csv)
  source = check_source(source, sorted(named))
  files = feature_files(config.data.features_root, config.data.train_split,
                        config.data.feature_dim)
  labels = plan(named, files, class_names, config.data.num_segments, source, seed)
  for video, video_labels_ in labels.items():
    write_labels(files[video][0], video, video_labels_)
  return labels


FLAGS = flags.FLAGS


def define_flags() -> None:
  config_flags.DEFINE_config_file(
      'config', None, 'Config file: the classes (config.eval.ground_truth), T '
      '(config.data.num_segments) and the files (config.data.features_root, train_split).',
      lock_config=True)
  flags.DEFINE_list('annotations', None, 'Annotation files (the page\'s, or Label Studio or VIA '
                    'JSON exports), one per annotator.')
  flags.DEFINE_string('source', '', 'An annotator\'s name, union or random (unset: the only '
                      'annotator).')
  flags.DEFINE_integer('seed', 0, 'Seed of the random annotator per video (--source=random).')
  flags.DEFINE_string('metadata_csv', '', 'CSV with the columns vid_name,duration,fps: the '
                      'durations (and Label Studio\'s frame rate) that exports do not store.')
  flags.mark_flags_as_required(['config', 'annotations'])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments: {argv[1:]}')
  labels = import_labels(FLAGS.config, FLAGS.annotations, FLAGS.source, FLAGS.seed,
                         FLAGS.metadata_csv)
  clicked = sum(int((v.click_labels_T != clicks_lib.IGNORE_LABEL).sum()) for v in labels.values())
  print(f'Labels written into {len(labels)} feature files of '
        f'{pathlib.Path(FLAGS.config.data.features_root) / FLAGS.config.data.train_split} '
        f'({clicked} clicked snippets).')


if __name__ == '__main__':
  define_flags()
  errors.run(main)
