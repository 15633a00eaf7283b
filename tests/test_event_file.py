"""learned_rules/event_file.py: crc32c, the round trip through `read_scalars`, TensorBoard's own reader."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from learned_rules import event_file


@pytest.mark.parametrize(
  "data, expected",
  [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),  # the check value of CRC-32C
    (bytes(32), 0x8A9136AA),  # RFC 3720, B.4
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
  ],
)
def test_crc32c_known_vectors(data, expected):
  assert event_file.crc32c(data) == expected


def test_crc32c_continues():
  assert event_file.crc32c(b"56789", event_file.crc32c(b"1234")) == 0xE3069283


def _write_run(logdir):
  with event_file.EventWriter(logdir) as writer:
    writer.scalars(0, {"loss": 1.5, "recall/bit_accuracy": 0.5})
    writer.scalars(10, {"loss": 0.75, "recall/bit_accuracy": 0.625}, wall_time=1.0e9)
    writer.scalars(20, {"loss": np.float32(0.25)})
    writer.flush()
    writer.scalars(2**40, {"loss": float("nan")})
  return writer.path


def test_file_name_and_first_record(tmp_path):
  path = _write_run(tmp_path / "logs")
  prefix, host_pid_n = path.name.split(".tfevents.")
  assert prefix == "events.out"
  seconds, *_, pid, n = host_pid_n.split(".")
  assert seconds.isdigit() and pid.isdigit() and n.isdigit()
  data = path.read_bytes()
  (length,) = struct.unpack_from("<Q", data)
  first_event = data[12 : 12 + length]
  assert b"brain.Event:2" in first_event


def test_round_trip(tmp_path):
  _write_run(tmp_path)
  scalars = event_file.read_scalars(tmp_path)
  assert sorted(scalars) == ["loss", "recall/bit_accuracy"]
  assert scalars["recall/bit_accuracy"] == [(0, 0.5), (10, 0.625)]
  assert [step for step, _ in scalars["loss"]] == [0, 10, 20, 2**40]
  assert [value for _, value in scalars["loss"][:3]] == [1.5, 0.75, 0.25]
  assert math.isnan(scalars["loss"][3][1])


def test_several_files_and_negative_step(tmp_path):
  with event_file.EventWriter(tmp_path) as writer:
    writer.scalars(-3, {"a": 1.0})
  with event_file.EventWriter(tmp_path) as writer:
    writer.scalars(5, {"a": 2.0})
  assert event_file.read_scalars(tmp_path) == {"a": [(-3, 1.0), (5, 2.0)]}


def test_reader_checks_crcs_and_tolerates_a_cut_last_record(tmp_path):
  path = _write_run(tmp_path)
  data = path.read_bytes()
  path.write_bytes(data[:-5])  # the last record cut short, as while its writer is still running
  assert [step for step, _ in event_file.read_scalars(tmp_path)["loss"]] == [0, 10, 20]
  corrupt = bytearray(data)
  corrupt[-6] ^= 0x01  # a byte of the last record's data
  path.write_bytes(bytes(corrupt))
  with pytest.raises(ValueError, match="crc"):
    event_file.read_scalars(tmp_path)


def test_closed_writer_refuses(tmp_path):
  writer = event_file.EventWriter(tmp_path)
  writer.close()
  writer.close()
  with pytest.raises(ValueError, match="closed"):
    writer.scalars(0, {"a": 1.0})


def test_tensorboard_reads_the_file(tmp_path):
  """TensorBoard's own reader (which checks the record crcs too) sees every scalar."""
  _write_run(tmp_path)
  accumulator = EventAccumulator(str(tmp_path))
  accumulator.Reload()
  assert sorted(accumulator.Tags()["scalars"]) == ["loss", "recall/bit_accuracy"]
  recall = accumulator.Scalars("recall/bit_accuracy")
  assert [(e.step, e.value) for e in recall] == [(0, 0.5), (10, 0.625)]
  assert recall[1].wall_time == 1.0e9
  loss = accumulator.Scalars("loss")
  assert [e.step for e in loss] == [0, 10, 20, 2**40]
  assert [e.value for e in loss[:3]] == [1.5, 0.75, 0.25]
  assert math.isnan(loss[3].value)
  assert accumulator.file_version == 2.0
