"""TensorBoard summaries (scalars, PNG images, text) without TensorFlow.

An event file is a TFRecord stream of `Event` protocol buffers. The three summaries a run writes
need a handful of fields, so they are encoded here by hand rather than with tensorboardX. Why:
the file goes through etils.epath like every other file of the workdir, so a gs:// workdir works
with the same dependency (gcsfs) as the JSON files, where tensorboardX writes gs:// only through
its own google-cloud-storage client; the core install needs no protobuf runtime of a matching
version; and the encoding is small and checked by tests that read the files with TensorBoard's own
reader (EventAccumulator).
"""

import functools
import itertools
import os
import socket
import struct
import time
from typing import Callable
from typing import Iterator
from typing import Mapping

from etils import epath
import numpy as np


def _crc32c_table() -> list[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    table.append(crc)
  return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), the checksum TFRecord uses."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
  """One TFRecord: length, its masked CRC, the data, the data's masked CRC."""
  length = struct.pack('<Q', len(data))
  return (length + struct.pack('<I', _masked_crc(length)) + data +
          struct.pack('<I', _masked_crc(data)))


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    bits, value = value & 0x7F, value >> 7
    out.append(bits | (0x80 if value else 0))
    if not value:
      return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
  return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, body: bytes) -> bytes:
  """Event{wall_time = 1 (double), step = 2 (int64), body: file_version = 3 or summary = 5}."""
  return b'\x09' + struct.pack('<d', wall_time) + b'\x10' + _varint(step) + body


def _summary_event(wall_time: float, step: int, summary_value: bytes) -> bytes:
  return _event(wall_time, step, _length_delimited(5, _length_delimited(1, summary_value)))


def scalar_event(tag: str, value: float, step: int, wall_time: float) -> bytes:
  """Summary{value = 1: Value{tag = 1, simple_value = 2 (float)}} wrapped in an Event."""
  return _summary_event(wall_time, step,
                        _length_delimited(1, tag.encode()) + b'\x15' + struct.pack('<f', value))


def png_size(png: bytes) -> tuple[int, int]:
  """(height, width) from the PNG's IHDR chunk."""
  width, height = struct.unpack('>II', png[16:24])
  return height, width


def image_event(tag: str, png: bytes, step: int, wall_time: float) -> bytes:
  """Value{tag = 1, image = 4: Image{height = 1, width = 2, colorspace = 3, encoded = 4}}."""
  height, width = png_size(png)
  image = (b'\x08' + _varint(height) + b'\x10' + _varint(width) + b'\x18' + _varint(4)
           + _length_delimited(4, png))
  return _summary_event(wall_time, step,
                        _length_delimited(1, tag.encode()) + _length_delimited(4, image))


def text_event(tag: str, text: str, step: int, wall_time: float) -> bytes:
  """Value{tag = 1, metadata = 9: {plugin_data: {plugin_name: 'text'}}, tensor = 8: a scalar
  string TensorProto{dtype = 1: DT_STRING (7), tensor_shape = 2: {}, string_val = 8}}."""
  metadata = _length_delimited(1, _length_delimited(1, b'text'))
  tensor = b'\x08\x07' + _length_delimited(2, b'') + _length_delimited(8, text.encode())
  return _summary_event(wall_time, step, _length_delimited(1, tag.encode())
                        + _length_delimited(9, metadata) + _length_delimited(8, tensor))


def hparams_event(hparams: Mapping[str, str | float | bool], wall_time: float) -> bytes:
  """The HParams dashboard's session record: Value{tag '_hparams_/session_start_info', metadata
  {plugin_data {plugin_name 'hparams', content: HParamsPluginData{version = 1: 0,
  session_start_info = 3: {hparams = 1: map<string, google.protobuf.Value>, start_time_secs = 5}}}},
  tensor: an empty string}. A protobuf Value holds number_value = 2 (double), string_value = 3 or
  bool_value = 4."""
  entries = b''
  for name, value in hparams.items():
    if isinstance(value, bool):
      encoded = b'\x20' + _varint(int(value))
    elif isinstance(value, (int, float)):
      encoded = b'\x11' + struct.pack('<d', float(value))
    else:
      encoded = _length_delimited(3, str(value).encode())
    entries += _length_delimited(1, _length_delimited(1, name.encode())
                                 + _length_delimited(2, encoded))
  start = entries + b'\x29' + struct.pack('<d', wall_time)
  content = b'\x08\x00' + _length_delimited(3, start)
  metadata = _length_delimited(1, _length_delimited(1, b'hparams') + _length_delimited(2, content))
  tensor = b'\x08\x07' + _length_delimited(2, b'') + _length_delimited(8, b'')
  return _summary_event(wall_time, 0, _length_delimited(1, b'_hparams_/session_start_info')
                        + _length_delimited(9, metadata) + _length_delimited(8, tensor))


def tfrecords(data: bytes) -> Iterator[bytes]:
  """The records of a TFRecord stream; a last record cut short (a killed writer) is left out."""
  offset = 0
  while offset + 12 <= len(data):
    (length,) = struct.unpack('<Q', data[offset:offset + 8])
    if offset + 16 + length > len(data):
      return
    yield data[offset + 12:offset + 12 + length]
    offset += 16 + length


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    byte = data[offset]
    value |= (byte & 0x7F) << shift
    offset, shift = offset + 1, shift + 7
    if not byte & 0x80:
      return value, offset


def protobuf_fields(message: bytes) -> Iterator[tuple[int, int | bytes]]:
  """(field number, value) of each field of a protobuf message: varints as ints, the rest as
  bytes."""
  offset = 0
  while offset < len(message):
    key, offset = _read_varint(message, offset)
    field, wire = key >> 3, key & 7
    if wire == 0:
      value, offset = _read_varint(message, offset)
    elif wire == 1:
      value, offset = message[offset:offset + 8], offset + 8
    elif wire == 5:
      value, offset = message[offset:offset + 4], offset + 4
    else:  # 2: length-delimited
      length, offset = _read_varint(message, offset)
      value, offset = message[offset:offset + length], offset + length
    yield field, value


def written_points(logdir: epath.PathLike) -> set[tuple[str, int]]:
  """(tag, step) of every summary already in the event files of `logdir`, so that a resumed run
  does not write the same point twice."""
  points = set()
  directory = epath.Path(logdir)
  if not directory.exists():
    return points
  for path in directory.glob('events.out.tfevents.*'):
    for record in tfrecords(path.read_bytes()):
      fields = list(protobuf_fields(record))
      step = next((v for f, v in fields if f == 2), 0)
      for summary in (v for f, v in fields if f == 5):
        for value in (v for f, v in protobuf_fields(summary) if f == 1):
          tag = next((v for f, v in protobuf_fields(value) if f == 1), b'')
          points.add((tag.decode(), step))
  return points


_WRITERS_OPENED = itertools.count()


def event_file_name(wall_time: float) -> str:
  """Unique per writer: two writers opened in the same second on one host (two processes, or one
  process reopening) would otherwise share a name and the second would truncate the first."""
  return (f'events.out.tfevents.{int(wall_time):010d}.{socket.gethostname()}.{os.getpid()}.'
          f'{next(_WRITERS_OPENED)}')


class MetricWriter:
  """Appends summaries to one event file of its own under `logdir`; a no-op when not enabled.
  A point (tag, step) that an earlier writer of `logdir` wrote is not written again: a resumed
  run repeats the steps after its checkpoint with the same values."""

  def __init__(self, logdir: str, enabled: bool = True):
    self._file = None
    self._written: set[tuple[str, int]] = set()
    if not enabled:
      return
    directory = epath.Path(logdir)
    self._written = written_points(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = time.time()
    self._file = (directory / event_file_name(now)).open('wb')
    self._file.write(tfrecord(_event(now, 0, _length_delimited(3, b'brain.Event:2'))))

  def _write(self, step: int, events: Mapping[str, Callable[[], bytes]]) -> None:
    """Writes the events of `step` not written before, by tag."""
    if self._file is None:
      return
    new = [(tag, make) for tag, make in events.items() if (tag, step) not in self._written]
    self._written.update((tag, step) for tag, _ in new)
    self._file.write(b''.join(tfrecord(make()) for _, make in new))
    self._file.flush()

  def has_written(self, tag: str) -> bool:
    """Whether a point of `tag` is in the event files (a run's config, once per run)."""
    return any(t == tag for t, _ in self._written)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    now, step = time.time(), int(step)
    self._write(step, {tag: functools.partial(scalar_event, tag, float(np.asarray(value)), step,
                                              now) for tag, value in scalars.items()})

  def write_images(self, step: int, pngs: Mapping[str, bytes]) -> None:
    now, step = time.time(), int(step)
    self._write(step, {tag: functools.partial(image_event, tag, png, step, now)
                       for tag, png in pngs.items()})

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    now, step = time.time(), int(step)
    self._write(step, {tag: functools.partial(text_event, tag, text, step, now)
                       for tag, text in texts.items()})

  def write_hparams(self, hparams: Mapping[str, str | float | bool]) -> None:
    """The run's settings for TensorBoard's HParams dashboard (once per run)."""
    now = time.time()
    self._write(0, {'_hparams_/session_start_info': functools.partial(hparams_event, hparams,
                                                                      now)})

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
