"""The annotation page's local server: the page, the videos, the class list and a JSON API.

The standard library's http.server, not a web framework: the page needs five routes on
127.0.0.1 for one person at a time, and a framework would be one more dependency for every
install of the package. Videos are served with HTTP Range requests (206 Partial Content), which
browsers need to seek in a video.

Routes: `GET /` the page; `GET /static/NAME` its script and style; `GET /api/state` the annotator,
the class list, the supervision and every video with its saved annotation; `GET /video/FILE` a
video file; `PUT /api/videos/NAME` one video's new annotation, checked and saved at once.
"""

import dataclasses
import http.server
import importlib.resources
import json
import mimetypes
import pathlib
import re
from typing import Sequence
import urllib.parse

from backtal_jax.annotation import annotation_file
from backtal_jax.core import errors
from backtal_jax.data import supervision as supervision_lib

VIDEO_SUFFIXES = ('.mp4', '.webm', '.ogv', '.ogg', '.m4v', '.mov', '.mkv')
STATIC_FILES = {'index.html': 'text/html', 'app.js': 'text/javascript', 'style.css': 'text/css'}
COPY_CHUNK_BYTES = 1 << 20
_RANGE = re.compile(r'bytes=(\d*)-(\d*)$')


@dataclasses.dataclass(frozen=True)
class Session:
  """What the server serves: the videos of one folder, annotated into one annotator's file."""
  video_dir: pathlib.Path
  videos: dict[str, str]  # video name (file stem) -> file name
  store: annotation_file.Store
  supervision: str  # config.train.supervision: action clicks are offered for 'action' and 'both'


def list_videos(video_dir: str | pathlib.Path) -> dict[str, str]:
  """The folder's video files by name (file stem), sorted; one error if none or two share a
  stem (their clicks would go to one video)."""
  video_dir = pathlib.Path(video_dir)
  if not video_dir.is_dir():
    raise errors.UserError(f'--videos: {video_dir} is not a folder')
  found = {}
  for path in sorted(video_dir.iterdir()):
    if path.suffix.lower() not in VIDEO_SUFFIXES:
      continue
    if path.stem in found:
      raise errors.UserError(f'--videos: {video_dir} holds {found[path.stem]} and {path.name}: '
                             f'two videos named {path.stem!r}')
    found[path.stem] = path.name
  if not found:
    raise errors.UserError(
        f'--videos: {video_dir} holds no video file ({", ".join(VIDEO_SUFFIXES)})')
  return found


def open_session(video_dir: str | pathlib.Path, annotations_path: str | pathlib.Path,
                 annotator: str, class_names: Sequence[str], supervision: str) -> Session:
  supervision_lib.check_supervision(supervision)
  videos = list_videos(video_dir)
  store = annotation_file.Store(annotations_path, annotator, class_names)
  return Session(pathlib.Path(video_dir), videos, store, supervision)


def state(session: Session) -> dict:
  saved = session.store.current
  return {
      'annotator': saved.annotator,
      'class_names': list(saved.class_names),
      'action_clicks': supervision_lib.needs_action_clicks(session.supervision),
      'background_tag': annotation_file.BACKGROUND_TAG,
      'videos': [{'name': name, 'file': file,
                  'annotation': saved.videos[name].to_json() if name in saved.videos else None}
                 for name, file in session.videos.items()],
  }


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
  """The inclusive [first, last] byte range of a Range header (one range), None for the whole
  file; raises ValueError when the header cannot be satisfied."""
  if not header:
    return None
  match = _RANGE.match(header.strip())
  if not match or match.groups() == ('', ''):
    raise ValueError(header)
  first, last = match.groups()
  if first == '':  # the last N bytes
    return max(size - int(last), 0), size - 1
  first, last = int(first), min(int(last) if last else size - 1, size - 1)
  if first >= size or last < first:
    raise ValueError(header)
  return first, last


def make_handler(session: Session) -> type[http.server.BaseHTTPRequestHandler]:
  static_root = importlib.resources.files('backtal_jax.annotation') / 'static'

  class Handler(http.server.BaseHTTPRequestHandler):
    """One request; the routes are in the module docstring."""

    def log_message(self, format, *args):  # noqa: A002 (http.server's name)
      del format, args  # quiet: the page saves often

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None):
      self.send_response(status)
      self.send_header('Content-Type', content_type)
      self.send_header('Content-Length', str(len(body)))
      self.send_header('Cache-Control', 'no-store')
      for key, value in (extra or {}).items():
        self.send_header(key, value)
      self.end_headers()
      if self.command != 'HEAD':
        self.wfile.write(body)

    def _json(self, status: int, data) -> None:
      self._send(status, json.dumps(data).encode(), 'application/json')

    def do_HEAD(self):
      self.do_GET()

    def do_GET(self):
      path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
      if path in ('/', '/index.html'):
        path = '/static/index.html'
      if path.startswith('/static/') and path[len('/static/'):] in STATIC_FILES:
        name = path[len('/static/'):]
        self._send(200, (static_root / name).read_bytes(), STATIC_FILES[name])
      elif path == '/favicon.ico':
        self._send(204, b'', 'image/x-icon')
      elif path == '/api/state':
        self._json(200, state(session))
      elif path.startswith('/video/') and path[len('/video/'):] in session.videos.values():
        self._video(session.video_dir / path[len('/video/'):])
      else:
        self._json(404, {'error': f'no such page: {path}'})

    def _video(self, path: pathlib.Path) -> None:
      size = path.stat().st_size
      try:
        span = byte_range(self.headers.get('Range'), size)
      except ValueError:
        self._send(416, b'', 'text/plain', {'Content-Range': f'bytes */{size}'})
        return
      first, last = span or (0, size - 1)
      self.send_response(206 if span else 200)
      self.send_header('Content-Type', mimetypes.guess_type(path.name)[0] or 'video/mp4')
      self.send_header('Accept-Ranges', 'bytes')
      self.send_header('Content-Length', str(last - first + 1))
      if span:
        self.send_header('Content-Range', f'bytes {first}-{last}/{size}')
      self.end_headers()
      if self.command == 'HEAD':
        return
      with open(path, 'rb') as f:
        f.seek(first)
        try:
          _copy_bytes(f, self.wfile, last - first + 1)
        except (BrokenPipeError, ConnectionResetError):
          pass  # the browser dropped the request after seeking elsewhere

    def do_PUT(self):
      path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
      name = path[len('/api/videos/'):]
      if not path.startswith('/api/videos/') or name not in session.videos:
        self._json(404, {'error': f'no such video: {path}'})
        return
      try:
        entry = json.loads(self.rfile.read(int(self.headers.get('Content-Length', 0))))
        entry['file'] = session.videos[name]
        saved = session.store.update_video(name, entry)
      except (ValueError, TypeError) as e:  # a body that is not a JSON object
        self._json(400, {'error': f'video {name!r}: not a JSON object ({e})'})
        return
      except annotation_file.AnnotationFileError as e:
        self._json(400, {'error': str(e)})
        return
      self._json(200, saved.to_json())

  return Handler


def _copy_bytes(source, destination, count: int) -> None:
  while count > 0:
    chunk = source.read(min(COPY_CHUNK_BYTES, count))
    if not chunk:
      return
    destination.write(chunk)
    count -= len(chunk)


def make_server(session: Session, port: int) -> http.server.ThreadingHTTPServer:
  """The server on 127.0.0.1:port (0: any free port), not yet serving: only this machine's
  browser can reach it, since the page writes files without asking who is there."""
  try:
    server = http.server.ThreadingHTTPServer(('127.0.0.1', port), make_handler(session))
  except OSError as e:
    raise errors.UserError(f'--port: cannot serve on 127.0.0.1:{port} ({e.strerror}); pass '
                           'another port, or 0 for any free one') from None
  server.daemon_threads = True
  return server


def url(server: http.server.HTTPServer) -> str:
  return f'http://127.0.0.1:{server.server_address[1]}/'


