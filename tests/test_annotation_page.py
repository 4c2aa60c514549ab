"""The annotation page in a real browser: headless Chromium driven by Selenium, on videos made by
ffmpeg, against the real server (python -m backtal_jax.annotate)."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

webdriver = pytest.importorskip(
    'selenium.webdriver', reason='selenium is not installed (pip install -e .[annotate-test])')
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
TOOLS = {'chromium': shutil.which('chromium') or shutil.which('chromium-browser'),
         'chromedriver': shutil.which('chromedriver'), 'ffmpeg': shutil.which('ffmpeg')}
pytestmark = pytest.mark.skipif(
    not all(TOOLS.values()),
    reason=f'needs {", ".join(k for k, v in TOOLS.items() if not v)} '
           '(apt-get install chromium chromium-driver ffmpeg)')
WAIT_SECONDS = 20
BACKGROUND = 'background_background'


def make_video(path: pathlib.Path, seconds: int, pattern: str) -> None:
  """A few seconds of VP8 video (Chromium plays WebM on every build)."""
  subprocess.run([TOOLS['ffmpeg'], '-loglevel', 'error', '-y', '-f', 'lavfi', '-i',
                  f'{pattern}=duration={seconds}:size=160x120:rate=25', '-c:v', 'libvpx',
                  '-b:v', '200k', str(path)], check=True)


@pytest.fixture
def folder(tmp_path):
  videos = tmp_path / 'videos'
  videos.mkdir()
  make_video(videos / 'clip_a.webm', 3, 'testsrc')
  make_video(videos / 'clip_b.webm', 2, 'testsrc2')
  (tmp_path / 'classes.txt').write_text('Jump\nWave\n')
  return tmp_path


def start_server(folder: pathlib.Path) -> tuple[subprocess.Popen, str]:
  """The command as a user runs it, on a free port; returns the process and the printed URL."""
  server = subprocess.Popen(
      [sys.executable, '-m', 'backtal_jax.annotate', f'--videos={folder / "videos"}',
       f'--classes={folder / "classes.txt"}', f'--annotations={folder / "alice.json"}',
       '--annotator=alice', '--supervision=both', '--port=0'],
      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
      env={**os.environ, 'PYTHONPATH': str(REPO)})
  line = server.stdout.readline()
  assert line.startswith('Annotation page: http://127.0.0.1:'), line
  return server, line.split()[2]


@pytest.fixture
def browser():
  options = webdriver.ChromeOptions()
  options.binary_location = TOOLS['chromium']
  for argument in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--mute-audio',
                   '--autoplay-policy=no-user-gesture-required', '--window-size=1280,900'):
    options.add_argument(argument)
  driver = webdriver.Chrome(options=options, service=Service(TOOLS['chromedriver']))
  yield driver
  driver.quit()


def player(driver, expression: str):
  return driver.execute_script(f'return document.getElementById("player").{expression}')


def wait_for(driver, condition, what: str):
  return WebDriverWait(driver, WAIT_SECONDS).until(lambda _: condition(), message=what)


def open_page(driver, url: str, video: str) -> None:
  driver.get(url)
  wait_for(driver, lambda: (driver.find_element(By.ID, 'video-name').text == video and
                            player(driver, 'readyState') >= 1), f'{video} loaded')


def press(driver, *keys: str) -> None:
  body = driver.find_element(By.TAG_NAME, 'body')
  for key in keys:
    body.send_keys(key)


def seek_by_key(driver, key: str) -> float:
  """Moves the paused player with an arrow key; the time it settles on."""
  before = player(driver, 'currentTime')
  press(driver, key)
  wait_for(driver, lambda: player(driver, 'currentTime') != before and
           not player(driver, 'seeking'), 'seeked')
  return player(driver, 'currentTime')


def saved(folder: pathlib.Path) -> dict:
  return json.loads((folder / 'alice.json').read_text())['videos']


def saved_clicks(folder: pathlib.Path, video: str) -> list:
  entry = saved(folder).get(video)
  return [(c['time'], c['tag']) for c in entry['clicks']] if entry else []


def shown_clicks(driver) -> list:
  return [float(item.get_attribute('data-time'))
          for item in driver.find_elements(By.CSS_SELECTOR, '#click-list li')]


def check_the_clock_stops_when_idle_or_hidden(driver) -> None:
  """The active-time clock of the open video, with the browser's signals emulated: the last input
  a minute ago, then the tab hidden (though the mouse moves), then shown again."""
  active = lambda: driver.execute_script('return page.entry.active_seconds')
  wait_for(driver, lambda: player(driver, 'paused'), 'paused')
  driver.execute_script('page.lastActivity = Date.now() - (IDLE_SECONDS + 1) * 1000')
  idle_from = active()
  time.sleep(1)
  assert active() == idle_from
  set_visibility(driver, 'hidden', then='markActive()')
  hidden_from = active()
  time.sleep(1)
  assert active() == hidden_from
  set_visibility(driver, 'visible')
  wait_for(driver, lambda: active() > hidden_from, 'the clock runs again')


def set_visibility(driver, state: str, then: str = '') -> None:
  """Emulates the tab becoming `state` ('hidden' or 'visible'), then runs `then` in the page."""
  driver.execute_script(
      'Object.defineProperty(document, "visibilityState", {configurable: true, get: () => '
      f'"{state}"}}); document.dispatchEvent(new Event("visibilitychange")); {then}')


def test_keys_boxes_reload_and_a_killed_server_lose_nothing(folder, browser):
  server, url = start_server(folder)
  started = time.monotonic()
  try:
    open_page(browser, url, 'clip_a')
    press(browser, ' ')  # play ...
    wait_for(browser, lambda: player(browser, 'currentTime') > 0.4, 'playing')
    press(browser, ' ')  # ... and pause
    wait_for(browser, lambda: player(browser, 'paused'), 'paused')
    first = player(browser, 'currentTime')
    press(browser, 'b')
    second = seek_by_key(browser, '\ue014')  # right arrow: 1 s ahead
    press(browser, '2', 'a')  # an action click of the second class, Wave
    third = seek_by_key(browser, '\ue014')
    press(browser, 'b', 'z')  # a background click, undone
    press(browser, 'b')  # again, then its mark selected and deleted with the Delete key
    wait_for(browser, lambda: len(saved_clicks(folder, 'clip_a')) == 3, 'third click saved')
    browser.find_elements(By.CSS_SELECTOR, '#timeline .mark')[2].click()
    press(browser, '\ue017')  # Delete
    wait_for(browser, lambda: len(saved_clicks(folder, 'clip_a')) == 2, 'third click deleted')
    press(browser, 'b')  # and once more, deleted with its button in the click list
    wait_for(browser, lambda: len(saved_clicks(folder, 'clip_a')) == 3, 'third click saved')
    browser.find_elements(By.CSS_SELECTOR, '#click-list button.delete')[2].click()
    press(browser, ']', ']', '[')  # speed 1 -> 2 -> 1.5
    assert player(browser, 'playbackRate') == 1.5
    browser.find_element(By.CSS_SELECTOR, '#class-boxes input[value="Jump"]').click()
    expected = [(first, BACKGROUND), (second, 'Wave')]
    wait_for(browser, lambda: saved_clicks(folder, 'clip_a') == expected and
             saved(folder)['clip_a']['classes'] == ['Jump'], 'clicks and class saved')
    assert 0.4 < first < second < third <= 3.0
    browser.find_elements(By.CSS_SELECTOR, '#timeline .mark')[0].click()  # a mark seeks to it
    wait_for(browser, lambda: player(browser, 'currentTime') == first, 'seeked to the mark')
    press(browser, 'n')  # the next video, one click there, and back
    open_page_state = lambda: browser.find_element(By.ID, 'video-name').text
    wait_for(browser, lambda: open_page_state() == 'clip_b' and player(browser, 'readyState') >= 1,
             'clip_b loaded')
    press(browser, 'b', 'd')  # a click at 0 s, and the video marked done
    wait_for(browser, lambda: saved(folder).get('clip_b', {}).get('done'), 'clip_b done saved')
    assert saved_clicks(folder, 'clip_b') == [(0, BACKGROUND)]
    wait_for(browser, lambda: '1 of 2 done' in browser.find_element(By.ID, 'progress').text,
             'done count')
    press(browser, 'p')
    wait_for(browser, lambda: open_page_state() == 'clip_a' and
             browser.execute_script('return page.entry !== null'), 'back to clip_a')
    check_the_clock_stops_when_idle_or_hidden(browser)
  finally:
    server.send_signal(signal.SIGKILL)  # mid-session, without warning
    server.wait()
  session_seconds = time.monotonic() - started
  after_kill = saved(folder)
  assert saved_clicks(folder, 'clip_a') == expected
  assert after_kill['clip_a']['classes'] == ['Jump'] and after_kill['clip_a']['duration'] == 3.0
  assert after_kill['clip_b']['done']
  # The page's clock saves with each change and on leaving a video.
  assert 0 < after_kill['clip_a']['active_seconds'] <= session_seconds
  server, url = start_server(folder)  # the same file, resumed
  try:
    open_page(browser, url, 'clip_a')  # the video last opened in this browser
    wait_for(browser, lambda: shown_clicks(browser) == [first, second], 'clicks shown again')
    assert len(browser.find_elements(By.CSS_SELECTOR, '#timeline .mark')) == 2
    assert browser.find_element(By.CSS_SELECTOR,
                                '#class-boxes input[value="Jump"]').is_selected()
    assert not browser.find_element(By.CSS_SELECTOR,
                                    '#class-boxes input[value="Wave"]').is_selected()
    assert player(browser, 'currentTime') == second  # resumed at the last click
  finally:
    server.send_signal(signal.SIGKILL)
    server.wait()
  without_time = lambda videos: {name: {k: v for k, v in entry.items() if k != 'active_seconds'}
                                 for name, entry in videos.items()}
  assert without_time(saved(folder)) == without_time(after_kill)  # opening changed nothing
