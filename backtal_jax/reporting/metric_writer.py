"""TensorBoard summaries (scalars, PNG images, text) without TensorFlow.

An event file is a TFRecord stream of `Event` protocol buffers. The three summaries a run writes
need a handful of fields, so they are encoded here by hand rather than with tensorboardX. Why:
the file goes through etils.epath like every other file of the workdir, so a gs:// workdir works
with the same dependency (gcsfs) as the JSON files, where tensorboardX writes gs:// only through
its own google-cloud-storage client; the core install needs no protobuf runtime of a matching
version; and the encoding is small and checked by tests that read the files with TensorBoard's own
reader (EventAccumulator).
"""

import itertools
import os
import socket
import struct
import time
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


_WRITERS_OPENED = itertools.count()


def event_file_name(wall_time: float) -> str:
  """Unique per writer: two writers opened in the same second on one host (two processes, or one
  process reopening) would otherwise share a name and the second would truncate the first."""
  return (f'events.out.tfevents.{int(wall_time):010d}.{socket.gethostname()}.{os.getpid()}.'
          f'{next(_WRITERS_OPENED)}')


class MetricWriter:
  """Appends summaries to one event file of its own under `logdir`; a no-op when not enabled."""

  def __init__(self, logdir: str, enabled: bool = True):
    self._file = None
    if not enabled:
      return
    directory = epath.Path(logdir)
    directory.mkdir(parents=True, exist_ok=True)
    now = time.time()
    self._file = (directory / event_file_name(now)).open('wb')
    self._file.write(tfrecord(_event(now, 0, _length_delimited(3, b'brain.Event:2'))))

  def _write(self, records: list[bytes]) -> None:
    if self._file is None:
      return
    self._file.write(b''.join(tfrecord(r) for r in records))
    self._file.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    now = time.time()
    self._write([scalar_event(tag, float(np.asarray(value)), int(step), now)
                 for tag, value in scalars.items()])

  def write_images(self, step: int, pngs: Mapping[str, bytes]) -> None:
    now = time.time()
    self._write([image_event(tag, png, int(step), now) for tag, png in pngs.items()])

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    now = time.time()
    self._write([text_event(tag, text, int(step), now) for tag, text in texts.items()])

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
