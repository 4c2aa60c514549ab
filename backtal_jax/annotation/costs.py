"""What the clicks cost, per annotator, as text and a plot.

  python -m backtal_jax.annotation.costs --annotations=alice.json,bob.json \
      [--ground_truth=ground_truth.json] [--plot=costs.png]

Per annotator: videos annotated and done, active seconds per video (the page's clock, paused
while the tab is hidden or idle; Label Studio's lead_time), clicks per video and per minute of
video, background and action clicks apart. The paper argues that a background click costs what an
action click costs; these numbers measure it on one's own videos and annotators.

With a ground truth (ActivityNet layout, the videos by name): the share of background clicks that
fall inside an action instance, and of action clicks outside every instance of their class; and
for each pair of annotators, over the videos both annotated, their agreement on where clicks go:
the segments of the ground truth (its instances and the background gaps between them) are each
clicked or not by each annotator, and the report gives the share of segments on which the two
agree and Cohen's kappa of that choice (1: full agreement, 0: what chance gives), and the mean
Jaccard overlap of their checked classes.
"""

import dataclasses
import itertools
from typing import Mapping
from typing import Sequence

from absl import flags
from matplotlib import figure as mpl_figure
import numpy as np

from backtal_jax.annotation import annotation_file
from backtal_jax.annotation import class_list
from backtal_jax.annotation import to_labels
from backtal_jax.core import errors
from backtal_jax.data import annotations
from backtal_jax.data import click_simulation
from backtal_jax.data import clicks as clicks_lib

BACKGROUND = clicks_lib.BACKGROUND_TAG


@dataclasses.dataclass(frozen=True)
class Cost:
  """One annotator's effort and, with a ground truth, where the clicks fell."""
  annotator: str
  videos: int  # annotated (an entry in the file)
  done: int  # marked done
  seconds_per_video: float  # active seconds, mean over annotated videos
  background_per_video: float
  action_per_video: float
  clicks_per_minute: float  # all clicks per minute of annotated video
  background_inside_action: float | None  # share; None without a ground truth (or no click)
  action_outside_action: float | None


@dataclasses.dataclass(frozen=True)
class Agreement:
  """Two annotators over the videos both annotated (needs a ground truth)."""
  first: str
  second: str
  videos: int
  segments: int  # ground-truth segments (instances and background gaps) of those videos
  segment_agreement: float  # share of segments both clicked or both left alone
  kappa: float  # Cohen's kappa of that choice; nan when it is constant for both
  class_jaccard: float  # mean Jaccard overlap of the checked classes


def _share(hits: int, total: int) -> float | None:
  return hits / total if total else None


def _outside_class(click: clicks_lib.Click, video: annotations.Video,
                   class_names: Sequence[str]) -> bool:
  return not any(inst.start <= click.time <= inst.end and class_names[inst.label] == click.tag
                 for inst in video.instances)


def cost(one: annotation_file.AnnotationFile,
         ground_truth: annotations.GroundTruth | None = None) -> Cost:
  videos = list(one.videos.items())
  every = [c for _, v in videos for c in v.clicks]
  background = [c for c in every if c.tag == BACKGROUND]
  minutes = sum(v.duration for _, v in videos) / 60
  inside = outside = None
  if ground_truth is not None:
    known = [(name, v) for name, v in videos if name in ground_truth.videos]
    gt = ground_truth.videos
    bg = [(name, c) for name, v in known for c in v.clicks if c.tag == BACKGROUND]
    act = [(name, c) for name, v in known for c in v.clicks if c.tag != BACKGROUND]
    inside = _share(sum(clicks_lib.inside_any_instance(c.time, gt[n]) for n, c in bg), len(bg))
    outside = _share(sum(_outside_class(c, gt[n], ground_truth.class_names) for n, c in act),
                     len(act))
  count = max(len(videos), 1)
  return Cost(
      annotator=one.annotator, videos=len(videos), done=sum(v.done for _, v in videos),
      seconds_per_video=sum(v.active_seconds for _, v in videos) / count,
      background_per_video=len(background) / count,
      action_per_video=(len(every) - len(background)) / count,
      clicks_per_minute=len(every) / minutes if minutes else 0.0,
      background_inside_action=inside, action_outside_action=outside)


def segments(video: annotations.Video) -> list[tuple[float, float]]:
  """The ground truth's segments of a video: its instances and the background gaps."""
  return sorted([(inst.start, inst.end) for inst in video.instances] +
                click_simulation.background_gaps(video))


def clicked_segments(entry: annotation_file.VideoAnnotation, video: annotations.Video
                     ) -> np.ndarray:
  """bool [segments]: whether the annotator clicked inside each segment."""
  return np.array([any(start <= c.time <= end for c in entry.clicks)
                   for start, end in segments(video)], bool)


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
  """Agreement beyond chance of two yes/no ratings of the same items."""
  observed = np.mean(a == b)
  chance = np.mean(a) * np.mean(b) + np.mean(~a) * np.mean(~b)
  return float('nan') if chance == 1 else float((observed - chance) / (1 - chance))


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
  union = set(a) | set(b)
  return len(set(a) & set(b)) / len(union) if union else 1.0


def agreement(first: annotation_file.AnnotationFile, second: annotation_file.AnnotationFile,
              ground_truth: annotations.GroundTruth) -> Agreement:
  shared = sorted(set(first.videos) & set(second.videos) & set(ground_truth.videos))
  a = [clicked_segments(first.videos[n], ground_truth.videos[n]) for n in shared]
  b = [clicked_segments(second.videos[n], ground_truth.videos[n]) for n in shared]
  a, b = (np.concatenate(x) if x else np.zeros(0, bool) for x in (a, b))
  return Agreement(
      first=first.annotator, second=second.annotator, videos=len(shared), segments=a.size,
      segment_agreement=float(np.mean(a == b)) if a.size else float('nan'),
      kappa=cohen_kappa(a, b) if a.size else float('nan'),
      class_jaccard=float(np.mean([jaccard(first.videos[n].classes, second.videos[n].classes)
                                   for n in shared])) if shared else float('nan'))


def _percent(share: float | None) -> str:
  return '     -' if share is None else f'{100 * share:5.1f}%'


def format_report(costs: Sequence[Cost], agreements: Sequence[Agreement]) -> str:
  lines = ['annotator        videos  done  s/video  bg/video  action/video  clicks/min  '
           'bg in action  action outside']
  for c in costs:
    lines.append(f'{c.annotator:<16} {c.videos:>6}  {c.done:>4}  {c.seconds_per_video:>7.1f}  '
                 f'{c.background_per_video:>8.2f}  {c.action_per_video:>12.2f}  '
                 f'{c.clicks_per_minute:>10.2f}  {_percent(c.background_inside_action):>12}  '
                 f'{_percent(c.action_outside_action):>14}')
  if agreements:
    lines += ['', 'annotators                       videos  segments  agree  kappa  class Jaccard']
    for g in agreements:
      pair = f'{g.first} / {g.second}'
      lines.append(f'{pair:<32} {g.videos:>6}  {g.segments:>8}  {_percent(g.segment_agreement)}'
                   f'  {g.kappa:5.2f}  {g.class_jaccard:13.2f}')
  return '\n'.join(lines)


def plot(costs: Sequence[Cost], path: str) -> None:
  """Seconds per video and clicks per minute of video, per annotator, side by side."""
  names = [c.annotator for c in costs]
  x = np.arange(len(costs))
  figure = mpl_figure.Figure(figsize=(9, 3.5))  # no pyplot: no GUI backend, no global state
  left, right = figure.subplots(1, 2)
  left.bar(x, [c.seconds_per_video for c in costs], color='#777')
  left.set(title='active seconds per video', xticks=x, xticklabels=names)
  per_minute = [c.clicks_per_minute for c in costs]
  background_share = [c.background_per_video / max(c.background_per_video + c.action_per_video,
                                                     1e-9) for c in costs]
  right.bar(x, np.multiply(per_minute, background_share), color='#2b6fd6', label='background')
  right.bar(x, np.multiply(per_minute, np.subtract(1, background_share)),
            bottom=np.multiply(per_minute, background_share), color='#e08a00', label='action')
  right.set(title='clicks per minute of video', xticks=x, xticklabels=names)
  right.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def report(files: Mapping[str, annotation_file.AnnotationFile],
           ground_truth: annotations.GroundTruth | None = None
           ) -> tuple[list[Cost], list[Agreement]]:
  costs = [cost(files[name], ground_truth) for name in sorted(files)]
  agreements = [] if ground_truth is None else [
      agreement(files[a], files[b], ground_truth) for a, b in itertools.combinations(sorted(files),
                                                                                     2)]
  return costs, agreements


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_list('annotations', None, 'Annotation files (the page\'s, or Label Studio or VIA '
                    'exports).')
  flags.DEFINE_string('ground_truth', '', 'Ground-truth JSON (ActivityNet layout) or a shipped '
                      'name: where the clicks fell, and the agreement between annotators.')
  flags.DEFINE_string('classes', '', 'Text file of class names, one a line (without '
                      '--ground_truth: the classes of exports).')
  flags.DEFINE_string('metadata_csv', '', 'vid_name,duration,fps: the durations exports lack.')
  flags.DEFINE_string('plot', '', 'Write the plot (PNG) here.')
  flags.mark_flags_as_required(['annotations'])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments: {argv[1:]}')
  ground_truth = (annotations.load_ground_truth(FLAGS.ground_truth) if FLAGS.ground_truth
                  else None)
  class_names = (ground_truth.class_names if ground_truth else
                 class_list.read_text_file(FLAGS.classes) if FLAGS.classes else ())
  files = to_labels.read_annotators(FLAGS.annotations, class_names, FLAGS.metadata_csv)
  costs, agreements = report(files, ground_truth)
  print(format_report(costs, agreements))
  if FLAGS.plot:
    plot(costs, FLAGS.plot)
    print(f'Plot: {FLAGS.plot}')


if __name__ == '__main__':
  define_flags()
  errors.run(main)
