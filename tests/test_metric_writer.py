"""Event files that TensorBoard reads, written without TensorFlow."""

import struct

import pytest

from backtal_jax import metric_writer


def read_records(path):
  data = path.read_bytes()
  records, offset = [], 0
  while offset < len(data):
    (length,) = struct.unpack('<Q', data[offset:offset + 8])
    (length_crc,) = struct.unpack('<I', data[offset + 8:offset + 12])
    assert length_crc == metric_writer._masked_crc(data[offset:offset + 8])
    payload = data[offset + 12:offset + 12 + length]
    (payload_crc,) = struct.unpack('<I', data[offset + 12 + length:offset + 16 + length])
    assert payload_crc == metric_writer._masked_crc(payload)
    records.append(payload)
    offset += 16 + length
  return records


def test_crc32c_check_value():
  assert metric_writer.crc32c(b'123456789') == 0xE3069283  # the standard CRC-32C check value


def test_scalars_decode_with_tensorboards_own_protobuf(tmp_path):
  event_pb2 = pytest.importorskip('tensorboardX.proto.event_pb2')
  writer = metric_writer.MetricWriter(str(tmp_path))
  writer.write_scalars(7, {'train/loss': 2.5, 'test/mAP@0.50': 0.125})
  writer.write_scalars(300, {'train/loss': 1.25})
  writer.close()
  (path,) = tmp_path.glob('events.out.tfevents.*')
  events = [event_pb2.Event.FromString(r) for r in read_records(path)]
  assert events[0].file_version == 'brain.Event:2'
  scalars = [(e.step, v.tag, v.simple_value) for e in events[1:] for v in e.summary.value]
  assert scalars == [(7, 'train/loss', 2.5), (7, 'test/mAP@0.50', 0.125), (300, 'train/loss', 1.25)]


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metric_writer.MetricWriter(str(tmp_path / 'tb'), enabled=False)
  writer.write_scalars(1, {'loss': 1.0})
  writer.close()
  assert not (tmp_path / 'tb').exists()
