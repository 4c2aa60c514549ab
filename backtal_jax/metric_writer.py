"""TensorBoard scalar summaries without TensorFlow.

An event file is a TFRecord stream of `Event` protocol buffers. Scalars need only a handful of
fields, so they are encoded here by hand: no TensorFlow, no protobuf dependency, and the file goes
through etils.epath, so a gs:// workdir works like a local one.
"""

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


def scalar_event(tag: str, value: float, step: int, wall_time: float) -> bytes:
  """Summary{value = 1: Value{tag = 1, simple_value = 2 (float)}} wrapped in an Event."""
  summary_value = _length_delimited(1, tag.encode()) + b'\x15' + struct.pack('<f', value)
  return _event(wall_time, step, _length_delimited(5, _length_delimited(1, summary_value)))


class MetricWriter:
  """Appends scalar summaries to one event file under `logdir`; a no-op when not enabled."""

  def __init__(self, logdir: str, enabled: bool = True):
    self._file = None
    if not enabled:
      return
    directory = epath.Path(logdir)
    directory.mkdir(parents=True, exist_ok=True)
    now = time.time()
    name = f'events.out.tfevents.{int(now)}.{socket.gethostname()}'
    self._file = (directory / name).open('wb')
    self._file.write(tfrecord(_event(now, 0, _length_delimited(3, b'brain.Event:2'))))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._file is None:
      return
    now = time.time()
    for tag, value in scalars.items():
      self._file.write(tfrecord(scalar_event(tag, float(np.asarray(value)), int(step), now)))
    self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
