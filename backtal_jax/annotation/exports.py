"""Clicks from the JSON exports of two annotation tools people already use for video, read into
this package's annotation files (backtal_jax.annotation.annotation_file).

Label Studio (a project with `<Video name="video" frameRate="..."/>` and `<TimelineLabels>`;
"JSON" export): a list of tasks `{"data": {"video": URL}, "annotations": [{"completed_by",
"lead_time", "result": [...]}]}`. A `timelinelabels` result is `{"value": {"ranges": [{"start",
"end"}], "timelinelabels": [label]}}` with frames counted from 1 at the Video tag's frameRate, so
frame f is at (f - 1) / fps seconds; a `choices` result `{"value": {"choices": [...]}}` holds the
video-level classes. Each annotation becomes one annotator (`completed_by`), and its `lead_time`
the active time. The video is named by its file name without the extension, less the 8-character
prefix Label Studio gives uploaded files (`1a2b3c4d-clip.mp4`).

VGG Image Annotator 3 (its video annotator's project JSON): `file` (fid -> fname), `view` (vid ->
fid_list), `attribute` (aid -> {aname, options: {id: name}}) and `metadata` (mid -> {vid, z, xy,
av}), where `z` holds one time (a temporal point) or two (a segment), in seconds, and `av` the
attribute values (option ids for the select, radio and checkbox types). Metadata with no `z` and
no `xy` describe the whole file: their values are its video-level classes. The annotator is the
project's `creator`, else the file's name.

In both, a label 'background' (any case) or 'background_background' is a background click and any
other label an action click of that class; a range or segment becomes one click at its middle.
Neither export stores the videos' durations (nor Label Studio's the frame rate): they come from a
table (--metadata_csv, `vid_name,duration,fps` as for prediction).
"""

import json
import pathlib
import re
from typing import Any
from typing import Mapping
from typing import Sequence
import urllib.parse

from backtal_jax.annotation import annotation_file
from backtal_jax.core import errors

Metadata = Mapping[str, Mapping[str, float | None]]  # video -> {'duration', 'fps'}
LABEL_STUDIO_UPLOAD_PREFIX = re.compile(r'^[0-9a-f]{8}-')
VIA_PROJECT_KEYS = ('file', 'metadata', 'attribute')


def background_or_class(label: str) -> str:
  """The click tag of a tool's label."""
  if label.strip().lower() in ('background', annotation_file.BACKGROUND_TAG):
    return annotation_file.BACKGROUND_TAG
  return label.strip()


def video_name(location: str) -> str:
  """A video's name from its URL or path in a Label Studio task: the file name's stem."""
  parts = urllib.parse.urlsplit(location)
  path = urllib.parse.parse_qs(parts.query).get('d', [parts.path])[0]
  return LABEL_STUDIO_UPLOAD_PREFIX.sub('', pathlib.PurePosixPath(path).stem)


def _needed(metadata: Metadata, video: str, field: str, path) -> float:
  value = metadata.get(video, {}).get(field)
  if value is None:
    raise errors.UserError(f'{path}: video {video!r}: no {field}: give it in --metadata_csv '
                           '(columns vid_name,duration,fps)')
  return value


def _entry(path, video: str, clicks: Sequence[tuple[float, str]], classes: Sequence[str],
           metadata: Metadata, class_names: Sequence[str], active_seconds: float = 0.0
           ) -> annotation_file.VideoAnnotation:
  """One video's annotation, checked as the page's are (clicks inside the video, known classes)."""
  entry = {'duration': _needed(metadata, video, 'duration', path), 'classes': list(classes),
           'clicks': [{'time': t, 'tag': tag} for t, tag in clicks],
           'active_seconds': active_seconds, 'done': True}
  return annotation_file.parse_video(entry, f'{path}: video {video!r}', class_names)


def _label_studio_annotator(annotation: Mapping[str, Any]) -> str:
  who = annotation.get('completed_by', 'unknown')
  if isinstance(who, Mapping):
    who = who.get('email') or who.get('id', 'unknown')
  return f'labelstudio_{who}'


def _task_video(task: Mapping[str, Any], path) -> str:
  data = task.get('data', {})
  locations = [v for v in data.values() if isinstance(v, str)] if isinstance(data, Mapping) else []
  if not locations:
    raise errors.UserError(f'{path}: task {task.get("id")!r}: field data names no video')
  return video_name(data.get('video', locations[0]))


def read_label_studio(tasks: Sequence[Any], path, class_names: Sequence[str],
                      metadata: Metadata) -> list[annotation_file.AnnotationFile]:
  """A Label Studio JSON export: one annotation file per annotator."""
  by_annotator: dict[str, dict[str, annotation_file.VideoAnnotation]] = {}
  for task in tasks:
    if not isinstance(task, Mapping):
      raise errors.UserError(f'{path}: expected a list of tasks, found {task!r}')
    video = _task_video(task, path)
    for annotation in task.get('annotations', []):
      if annotation.get('was_cancelled'):
        continue
      clicks, classes = [], []
      for result in annotation.get('result', []):
        value = result.get('value', {})
        if result.get('type') == 'choices':
          classes.extend(value.get('choices', []))
        elif result.get('type') == 'timelinelabels':
          fps = _needed(metadata, video, 'fps', path)
          for span in value.get('ranges', []):
            middle = (float(span['start']) + float(span['end'])) / 2
            clicks.extend(((middle - 1) / fps, background_or_class(label))
                          for label in value.get('timelinelabels', []))
      by_annotator.setdefault(_label_studio_annotator(annotation), {})[video] = _entry(
          path, video, clicks, classes, metadata, class_names,
          float(annotation.get('lead_time') or 0.0))
  return [annotation_file.AnnotationFile(name, tuple(class_names), videos, pathlib.Path(path))
          for name, videos in sorted(by_annotator.items())]


def _via_values(project: Mapping[str, Any], av: Mapping[str, Any]) -> list[str]:
  """The labels of a VIA metadata's attribute values (option ids become option names)."""
  labels = []
  for aid, value in av.items():
    options = project['attribute'].get(aid, {}).get('options', {})
    for part in str(value).split(',') if options else [str(value)]:
      if part.strip():
        labels.append(options.get(part.strip(), part.strip()))
  return labels


def read_via(project: Mapping[str, Any], path, class_names: Sequence[str],
             metadata: Metadata) -> list[annotation_file.AnnotationFile]:
  """A VIA3 video project: one annotation file (one annotator)."""
  view_video = {vid: video_name(project['file'][view['fid_list'][0]]['fname'])
                for vid, view in project.get('view', {}).items() if view.get('fid_list')}
  clicks: dict[str, list[tuple[float, str]]] = {}
  classes: dict[str, list[str]] = {}
  for mid, meta in project['metadata'].items():
    if meta.get('vid') not in view_video:
      raise errors.UserError(f'{path}: metadata {mid!r}: view {meta.get("vid")!r} names no file')
    video, z = view_video[meta['vid']], meta.get('z', [])
    labels = _via_values(project, meta.get('av', {}))
    clicks.setdefault(video, [])
    if not z and not meta.get('xy'):
      classes.setdefault(video, []).extend(labels)
    elif z:
      clicks[video].extend((sum(map(float, z)) / len(z), background_or_class(label))
                           for label in labels)
  videos = {video: _entry(path, video, clicks[video], classes.get(video, []), metadata,
                          class_names) for video in clicks}
  annotator = project.get('project', {}).get('creator') or pathlib.Path(path).stem
  return [annotation_file.AnnotationFile(annotator, tuple(class_names), videos,
                                         pathlib.Path(path))]


def read(path: str | pathlib.Path, class_names: Sequence[str], metadata: Metadata | None = None
         ) -> list[annotation_file.AnnotationFile]:
  """The annotation files in `path`: this package's own file, or a Label Studio or VIA export."""
  path = pathlib.Path(path)
  try:
    data = json.loads(path.read_text(encoding='utf-8'))
  except json.JSONDecodeError as e:
    raise errors.UserError(f'{path}: not valid JSON ({e})') from None
  if isinstance(data, Mapping) and 'format' in data:
    return [annotation_file.parse(data, path)]
  if isinstance(data, list):
    return read_label_studio(data, path, class_names, metadata or {})
  if isinstance(data, Mapping) and all(key in data for key in VIA_PROJECT_KEYS):
    return read_via(data, path, class_names, metadata or {})
  raise errors.UserError(f'{path}: neither an annotation file of this package (field format), a '
                         'Label Studio JSON export (a list of tasks) nor a VIA3 project '
                         f'(fields {", ".join(VIA_PROJECT_KEYS)})')
