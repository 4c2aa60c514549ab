"""Serves the background-click annotation page on 127.0.0.1 for the videos of a folder.

  python -m backtal_jax.annotate --config=configs/own_videos.py:my_dataset \
      --videos=my_dataset/videos --annotator=alice \
      --annotations=my_dataset/annotations/alice.json [--supervision=both] [--port=8765]

The page, its keys and the annotation file are described in README.md ("Background clicks on
your own videos"); backtal_jax.annotation holds the server and the file's layout.
"""

from absl import flags
from absl import logging
from ml_collections import config_flags

from backtal_jax.annotation import class_list
from backtal_jax.annotation import server
from backtal_jax.core import errors

FLAGS = flags.FLAGS


def define_flags() -> None:
  config_flags.DEFINE_config_file(
      'config', None, 'Config file (configs/*.py[:variant]): the class list is its dataset\'s '
      '(config.eval.ground_truth), and action clicks are offered when config.train.supervision '
      'is action or both.', lock_config=True)
  flags.DEFINE_string('classes', None, 'Text file of class names, one a line (instead of '
                      '--config).')
  flags.DEFINE_string('videos', None, 'Folder of the videos to annotate (what the browser plays: '
                      'mp4, webm, ...). A video is named by its file name without the extension.')
  flags.DEFINE_string('annotations', None, 'The annotator\'s file (JSON), written after every '
                      'change; created if absent, resumed if present.')
  flags.DEFINE_string('annotator', None, 'The annotator\'s name, stored in the file.')
  flags.DEFINE_enum('supervision', None, ['none', 'background', 'action', 'both'],
                    'Offer action clicks (action, both) or not; unset: config.train.supervision, '
                    'or background without --config.')
  flags.DEFINE_integer('port', 8765, 'Port on 127.0.0.1 (0: any free port).', lower_bound=0,
                       upper_bound=65535)
  flags.mark_flags_as_required(['videos', 'annotations', 'annotator'])


def main(argv) -> None:
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments: {argv[1:]}')
  config = FLAGS.config
  supervision = FLAGS.supervision or (config.train.supervision if config else 'background')
  session = server.open_session(FLAGS.videos, FLAGS.annotations, FLAGS.annotator,
                                class_list.resolve(config, FLAGS.classes), supervision)
  httpd = server.make_server(session, FLAGS.port)
  logging.info('%d videos in %s; saving to %s', len(session.videos), FLAGS.videos,
               FLAGS.annotations)
  print(f'Annotation page: {server.url(httpd)}  (Ctrl-C to stop; every change is already saved)',
        flush=True)
  with httpd:
    httpd.serve_forever()


if __name__ == '__main__':
  define_flags()
  errors.run(main)
