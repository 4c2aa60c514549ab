"""Event files that TensorBoard reads, written without TensorFlow."""

import io
import struct

import matplotlib.image
import numpy as np
import pytest

from backtal_jax.reporting import metric_writer


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


def accumulate(logdir):
  """The events as TensorBoard itself reads them."""
  event_accumulator = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
  accumulator = event_accumulator.EventAccumulator(
      str(logdir), size_guidance={event_accumulator.IMAGES: 0, event_accumulator.TENSORS: 0,
                                  event_accumulator.SCALARS: 0})
  return accumulator.Reload()


def tiny_png(height, width):
  buffer = io.BytesIO()
  matplotlib.image.imsave(buffer, np.zeros((height, width, 3)), format='png')
  return buffer.getvalue()


def test_tensorboard_reads_scalars_images_and_text(tmp_path):
  writer = metric_writer.MetricWriter(str(tmp_path))
  writer.write_scalars(3, {'train/loss': 0.5})
  png = tiny_png(7, 11)
  writer.write_images(9, {'plots/video_1': png})
  writer.write_texts(0, {'config': 'model:\n  hidden_dim: 128'})
  writer.close()
  accumulator = accumulate(tmp_path)
  assert [(e.step, e.value) for e in accumulator.Scalars('train/loss')] == [(3, 0.5)]
  (image,) = accumulator.Images('plots/video_1')
  assert (image.step, image.height, image.width, image.encoded_image_string) == (9, 7, 11, png)
  (text,) = accumulator.Tensors('config')
  assert text.tensor_proto.string_val == [b'model:\n  hidden_dim: 128']
  assert accumulator.summary_metadata['config'].plugin_data.plugin_name == 'text'


def test_writers_opened_in_the_same_second_keep_their_own_files(tmp_path, monkeypatch):
  monkeypatch.setattr(metric_writer.time, 'time', lambda: 1_800_000_000.25)
  first = metric_writer.MetricWriter(str(tmp_path))
  first.write_scalars(1, {'a': 1.0})
  second = metric_writer.MetricWriter(str(tmp_path))
  second.write_scalars(2, {'b': 2.0})
  first.close()
  second.close()
  paths = sorted(tmp_path.glob('events.out.tfevents.1800000000.*'))
  assert len(paths) == 2
  tags = [[v.tag for r in read_records(p)[1:] for v in decode(r).summary.value] for p in paths]
  assert sorted(tags) == [['a'], ['b']]


def decode(record):
  return pytest.importorskip('tensorboardX.proto.event_pb2').Event.FromString(record)


def test_hparams_decode_with_tensorboards_hparams_plugin(tmp_path):
  hparams_metadata = pytest.importorskip('tensorboard.plugins.hparams.metadata')
  writer = metric_writer.MetricWriter(str(tmp_path))
  writer.write_hparams({'train.seed': 7, 'model.affinity': 'paper', 'eval.only': False,
                        'train.learning_rate': 1e-4})
  writer.close()
  accumulator = accumulate(tmp_path)
  plugin_data = accumulator.summary_metadata['_hparams_/session_start_info'].plugin_data
  assert plugin_data.plugin_name == 'hparams'
  start = hparams_metadata.parse_session_start_info_plugin_data(plugin_data.content)
  assert start.hparams['train.seed'].number_value == 7
  assert start.hparams['model.affinity'].string_value == 'paper'
  assert start.hparams['eval.only'].bool_value is False
  assert start.hparams['train.learning_rate'].number_value == 1e-4


def test_a_reopened_folder_gets_no_point_twice(tmp_path):
  first = metric_writer.MetricWriter(str(tmp_path))
  first.write_scalars(3, {'train/loss': 1.0})
  first.write_texts(0, {'config': 'a'})
  first.close()
  again = metric_writer.MetricWriter(str(tmp_path))  # a resumed run, repeating step 3
  again.write_scalars(3, {'train/loss': 1.0, 'test/mAP_0.50': 0.5})
  again.write_scalars(4, {'train/loss': 0.5})
  again.write_texts(0, {'config': 'a'})
  again.close()
  accumulator = accumulate(tmp_path)
  assert [(e.step, e.value) for e in accumulator.Scalars('train/loss')] == [(3, 1.0), (4, 0.5)]
  assert [e.step for e in accumulator.Scalars('test/mAP_0.50')] == [3]
  assert len(accumulator.Tensors('config')) == 1
