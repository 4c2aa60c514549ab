// The annotation page: one video at a time, every change sent to the server at once.
'use strict';

const IDLE_SECONDS = 60;  // no key, mouse or playback for this long: the clock stops
const HEARTBEAT_SECONDS = 10;  // active time is saved at least this often while it grows
const TICK_MILLISECONDS = 250;  // the active-time clock's resolution
const SPEEDS = [0.25, 0.5, 1, 1.5, 2, 3, 4];
const SEEK_STEP_SECONDS = 1;

const page = {
  state: null,  // GET /api/state
  index: -1,  // the video shown
  entry: null,  // its annotation: {duration, classes, clicks, active_seconds, done}
  history: [],  // earlier entries of this video, for undo
  selected: -1,  // the selected click
  actionClass: 0,
  speed: 1,
  lastActivity: Date.now(),
  lastTick: Date.now(),
  unsavedActive: 0,
  saving: Promise.resolve(),
};
const $ = (id) => document.getElementById(id);
const player = $('player');

function video() { return page.state.videos[page.index]; }

function emptyEntry() {
  return {duration: player.duration, classes: [], clicks: [], active_seconds: 0, done: false};
}

function copy(entry) { return JSON.parse(JSON.stringify(entry)); }

function setStatus(text, kind) {
  $('save-status').textContent = text;
  $('save-status').className = kind;
}

// Saves are chained so that the server sees them in the order they were made.
function save() {
  const v = video();
  const body = JSON.stringify(page.entry);
  v.annotation = copy(page.entry);
  setStatus('saving', 'saving');
  page.saving = page.saving.then(async () => {
    try {
      const response = await fetch('/api/videos/' + encodeURIComponent(v.name),
                                   {method: 'PUT', body, keepalive: body.length < 60000});
      const reply = await response.json();
      if (!response.ok) throw new Error(reply.error);
      setStatus('saved', 'saved');
    } catch (e) {
      setStatus('not saved: ' + e.message, 'error');
    }
  });
  renderList();
}

// Every change goes through here: remember the entry before it, apply, save, draw.
function change(apply) {
  if (!page.entry || !(player.duration > 0)) return;
  page.history.push(copy(page.entry));
  apply(page.entry);
  page.entry.duration = player.duration;
  page.entry.clicks.sort((a, b) => a.time - b.time);
  save();
  render();
}

function addClick(tag) {
  const time = player.currentTime;
  change((entry) => entry.clicks.push({time, tag}));
  page.selected = page.entry.clicks.findIndex((c) => c.time === time && c.tag === tag);
  render();
}

function deleteClick(i) {
  if (i < 0 || i >= page.entry.clicks.length) return;
  change((entry) => entry.clicks.splice(i, 1));
  page.selected = -1;
  render();
}

function undo() {
  if (!page.history.length) return;
  page.entry = page.history.pop();
  page.selected = -1;
  save();
  render();
}

function toggleClass(name, checked) {
  change((entry) => {
    entry.classes = page.state.class_names.filter(
      (c) => c === name ? checked : entry.classes.includes(c));
  });
}

function setSpeed(step) {
  const i = Math.min(Math.max(SPEEDS.indexOf(page.speed) + step, 0), SPEEDS.length - 1);
  page.speed = SPEEDS[i];
  player.playbackRate = page.speed;
  $('speed').textContent = page.speed;
}

function open(index) {
  if (index < 0 || index >= page.state.videos.length) return;
  flushActive();
  page.index = index;
  page.history = [];
  page.selected = -1;
  page.entry = null;
  localStorage.setItem('backtal-last-video', video().name);
  player.src = '/video/' + encodeURIComponent(video().file);
  player.playbackRate = page.speed;
  $('video-name').textContent = video().name;
  renderList();
  render();
}

player.addEventListener('loadedmetadata', () => {
  const saved = video().annotation;
  page.entry = saved ? copy(saved) : emptyEntry();
  player.playbackRate = page.speed;
  const last = page.entry.clicks.length ? page.entry.clicks[page.entry.clicks.length - 1].time : 0;
  player.currentTime = last;  // resume where this video's annotation stopped
  render();
});
player.addEventListener('timeupdate', drawPlayhead);
player.addEventListener('play', () => { $('play').textContent = 'pause'; });
player.addEventListener('pause', () => { $('play').textContent = 'play'; });

function clickCount(v) { return v.annotation ? v.annotation.clicks.length : 0; }

function renderList() {
  const list = $('video-list');
  list.replaceChildren();
  page.state.videos.forEach((v, i) => {
    const item = document.createElement('li');
    item.textContent = v.name + ' ';
    item.dataset.name = v.name;
    const count = document.createElement('span');
    count.className = 'count';
    count.textContent = '(' + clickCount(v) + ')';
    item.append(count);
    if (i === page.index) item.classList.add('current');
    if (v.annotation && v.annotation.done) item.classList.add('done');
    item.addEventListener('click', () => open(i));
    list.append(item);
  });
  const done = page.state.videos.filter((v) => v.annotation && v.annotation.done).length;
  $('progress').textContent = done + ' of ' + page.state.videos.length + ' done';
}

function drawPlayhead() {
  const duration = player.duration > 0 ? player.duration : 1;
  $('playhead').style.left = (100 * player.currentTime / duration) + '%';
  $('clock').textContent = player.currentTime.toFixed(2) + ' / ' +
      (player.duration > 0 ? player.duration.toFixed(2) : '?') + ' s';
}

function label(tag) {
  return tag === page.state.background_tag ? 'background' : 'action: ' + tag;
}

function render() {
  drawPlayhead();
  const timeline = $('timeline');
  timeline.querySelectorAll('.mark').forEach((m) => m.remove());
  const list = $('click-list');
  list.replaceChildren();
  const entry = page.entry;
  $('done').checked = Boolean(entry && entry.done);
  document.querySelectorAll('#class-boxes input').forEach((box) => {
    box.checked = Boolean(entry && entry.classes.includes(box.value));
  });
  if (!entry) return;
  entry.clicks.forEach((click, i) => {
    const kind = click.tag === page.state.background_tag ? 'background' : 'action';
    const mark = document.createElement('div');
    mark.className = 'mark ' + kind + (i === page.selected ? ' selected' : '');
    mark.style.left = (100 * click.time / entry.duration) + '%';
    mark.title = label(click.tag) + ' at ' + click.time.toFixed(2) + ' s';
    mark.dataset.time = click.time;
    mark.addEventListener('click', (event) => {
      event.stopPropagation();
      page.selected = i;
      player.currentTime = click.time;
      render();
    });
    timeline.append(mark);
    const item = document.createElement('li');
    item.textContent = click.time.toFixed(2) + ' s, ' + label(click.tag);
    item.dataset.time = click.time;
    if (i === page.selected) item.classList.add('selected');
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.textContent = 'delete';
    remove.className = 'delete';
    remove.addEventListener('click', () => deleteClick(i));
    item.append(remove);
    list.append(item);
  });
  $('active-time').textContent = 'active ' + Math.round(entry.active_seconds) + ' s';
}

$('timeline').addEventListener('click', (event) => {
  if (!(player.duration > 0)) return;
  const box = event.currentTarget.getBoundingClientRect();
  player.currentTime = player.duration * (event.clientX - box.left) / box.width;
});
$('play').addEventListener('click', () => { player.paused ? player.play() : player.pause(); });
$('done').addEventListener('change', (event) => {
  const checked = event.target.checked;
  change((entry) => { entry.done = checked; });
});

function handleKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.tagName === 'SELECT') return;
  const key = event.key;
  const actions = {
    ' ': () => { player.paused ? player.play() : player.pause(); },
    'b': () => addClick(page.state.background_tag),
    'z': undo,
    'Delete': () => deleteClick(page.selected),
    'Backspace': () => deleteClick(page.selected),
    'ArrowLeft': () => { player.currentTime = Math.max(player.currentTime - SEEK_STEP_SECONDS, 0); },
    'ArrowRight': () => { player.currentTime = Math.min(player.currentTime + SEEK_STEP_SECONDS,
                                                        player.duration); },
    '[': () => setSpeed(-1),
    ']': () => setSpeed(1),
    'n': () => open(page.index + 1),
    'p': () => open(page.index - 1),
    'd': () => change((entry) => { entry.done = !entry.done; }),
  };
  if (page.state.action_clicks) {
    actions['a'] = () => addClick(page.state.class_names[page.actionClass]);
    for (let i = 0; i < Math.min(page.state.class_names.length, 9); i++) {
      actions[String(i + 1)] = () => { page.actionClass = i; $('action-select').value = i; };
    }
  }
  if (!(key in actions)) return;
  event.preventDefault();
  actions[key]();
}

// Active time: the time between ticks counts while the tab is visible and the annotator did
// something (or the video played) within IDLE_SECONDS; saved with every change and at least every
// HEARTBEAT_SECONDS while it grows.
function markActive() { page.lastActivity = Date.now(); }

function tickActive() {
  const now = Date.now();
  const elapsed = (now - page.lastTick) / 1000;
  page.lastTick = now;
  const visible = document.visibilityState === 'visible';
  if (!player.paused) markActive();
  const idle = (now - page.lastActivity) / 1000 > IDLE_SECONDS;
  if (!visible || idle || !page.entry) return;
  page.entry.active_seconds += elapsed;
  page.unsavedActive += elapsed;
  $('active-time').textContent = 'active ' + Math.round(page.entry.active_seconds) + ' s';
  if (page.unsavedActive >= HEARTBEAT_SECONDS) flushActive();
}

function flushActive() {
  if (!page.entry || !page.unsavedActive || !(player.duration > 0)) return;
  page.unsavedActive = 0;
  page.entry.duration = player.duration;
  save();
}

async function start() {
  page.state = await (await fetch('/api/state')).json();
  document.body.classList.toggle('background-only', !page.state.action_clicks);
  $('annotator').textContent = 'annotator: ' + page.state.annotator;
  const boxes = $('class-boxes');
  const select = $('action-select');
  page.state.class_names.forEach((name, i) => {
    const box = document.createElement('label');
    const input = document.createElement('input');
    input.type = 'checkbox';
    input.value = name;
    input.addEventListener('change', () => toggleClass(name, input.checked));
    box.append(input, ' ' + name);
    boxes.append(box);
    const option = document.createElement('option');
    option.value = i;
    option.textContent = (i < 9 ? (i + 1) + ': ' : '') + name;
    select.append(option);
  });
  select.addEventListener('change', () => { page.actionClass = Number(select.value); });
  document.addEventListener('keydown', (event) => { markActive(); handleKey(event); });
  // A button or box keeps no focus after a mouse click, so that space stays play / pause.
  document.addEventListener('click', (event) => {
    if (['BUTTON', 'INPUT'].includes(event.target.tagName)) event.target.blur();
  });
  ['mousemove', 'mousedown', 'wheel'].forEach((name) => document.addEventListener(name, markActive));
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'hidden') flushActive(); else markActive();
  });
  page.lastTick = Date.now();
  setInterval(tickActive, TICK_MILLISECONDS);
  // Resume: the video last opened in this browser, else the first one not done.
  const last = page.state.videos.findIndex(
    (v) => v.name === localStorage.getItem('backtal-last-video'));
  const firstOpen = page.state.videos.findIndex((v) => !(v.annotation && v.annotation.done));
  open(last >= 0 ? last : Math.max(firstOpen, 0));
}

start();
