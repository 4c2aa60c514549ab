"""The annotation page's server without a browser: Range requests, checked saves, one file per
annotator."""

import json
import threading
import urllib.error
import urllib.request

import pytest

from backtal_jax.annotation import annotation_file
from backtal_jax.annotation import server
from backtal_jax.core import errors

CLASSES = ('Jump', 'Wave')
VIDEO_BYTES = bytes(range(256)) * 4  # stands in for a video: the server only reads bytes


@pytest.fixture
def running(tmp_path):
  (tmp_path / 'videos').mkdir()
  (tmp_path / 'videos' / 'clip_a.webm').write_bytes(VIDEO_BYTES)
  (tmp_path / 'videos' / 'notes.txt').write_text('not a video')
  session = server.open_session(tmp_path / 'videos', tmp_path / 'alice.json', 'alice', CLASSES,
                                'background')
  httpd = server.make_server(session, 0)
  thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
  thread.start()
  yield server.url(httpd), tmp_path
  httpd.shutdown()
  httpd.server_close()


def get(url: str, headers=None):
  with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as response:
    return response.status, dict(response.headers), response.read()


def put(url: str, entry) -> tuple[int, dict]:
  request = urllib.request.Request(url, data=json.dumps(entry).encode(), method='PUT')
  try:
    with urllib.request.urlopen(request) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


@pytest.mark.parametrize('header,first,last', [('bytes=10-19', 10, 19), ('bytes=1000-', 1000, 1023),
                                               ('bytes=-24', 1000, 1023),
                                               ('bytes=1020-5000', 1020, 1023)])
def test_videos_are_served_in_ranges_so_the_browser_can_seek(running, header, first, last):
  url, _ = running
  status, headers, body = get(url + 'video/clip_a.webm', {'Range': header})
  assert status == 206 and body == VIDEO_BYTES[first:last + 1]
  assert headers['Content-Range'] == f'bytes {first}-{last}/{len(VIDEO_BYTES)}'
  status, headers, body = get(url + 'video/clip_a.webm')
  assert status == 200 and body == VIDEO_BYTES and headers['Accept-Ranges'] == 'bytes'
  with pytest.raises(urllib.error.HTTPError, match='416'):
    get(url + 'video/clip_a.webm', {'Range': 'bytes=5000-'})


def test_state_lists_the_videos_and_a_bad_save_is_refused_without_touching_the_file(running):
  url, folder = running
  _, _, body = get(url + 'api/state')
  state = json.loads(body)
  assert [v['name'] for v in state['videos']] == ['clip_a']  # notes.txt is no video
  assert state['class_names'] == list(CLASSES) and not state['action_clicks']
  good = {'duration': 3.0, 'classes': ['Wave'], 'active_seconds': 2.5,
          'clicks': [{'time': 1.25, 'tag': 'background_background'}]}
  assert put(url + 'api/videos/clip_a', good)[0] == 200
  saved = (folder / 'alice.json').read_text()
  for bad, message in [({**good, 'clicks': [{'time': 3.5, 'tag': 'background_background'}]},
                        'outside the video'),
                       ({**good, 'classes': ['Dance']}, "'Dance'"),
                       ({**good, 'clicks': [{'time': 1.0, 'tag': 'Dance'}]}, "'Dance'")]:
    status, reply = put(url + 'api/videos/clip_a', bad)
    assert status == 400 and message in reply['error'] and "video 'clip_a'" in reply['error']
  assert put(url + 'api/videos/clip_b', good)[0] == 404  # no such video in the folder
  assert (folder / 'alice.json').read_text() == saved
  [clip_a] = annotation_file.read(folder / 'alice.json').videos.values()
  assert (clip_a.classes, clip_a.active_seconds, clip_a.file) == (('Wave',), 2.5, 'clip_a.webm')


def test_one_file_per_annotator(tmp_path):
  (tmp_path / 'clip_a.mp4').write_bytes(VIDEO_BYTES)
  server.open_session(tmp_path, tmp_path / 'alice.json', 'alice', CLASSES, 'background')
  with pytest.raises(errors.UserError, match="annotator is 'alice', but --annotator is 'bob'"):
    server.open_session(tmp_path, tmp_path / 'alice.json', 'bob', CLASSES, 'background')
  with pytest.raises(errors.UserError, match="class 'Wave' is not in the config's class list"):
    server.open_session(tmp_path, tmp_path / 'alice.json', 'alice', ('Jump',), 'background')


def test_a_port_in_use_is_a_user_error(tmp_path):
  (tmp_path / 'clip_a.mp4').write_bytes(VIDEO_BYTES)
  session = server.open_session(tmp_path, tmp_path / 'alice.json', 'alice', CLASSES, 'background')
  with server.make_server(session, 0) as first:
    with pytest.raises(errors.UserError, match=f'--port: cannot serve on 127.0.0.1:'
                       f'{first.server_address[1]}'):
      server.make_server(session, first.server_address[1])
