"""TensorBoard event files of scalar summaries, written and read with the standard library only.

TensorBoard reads a folder of `events.out.tfevents.*` files. Each file is a sequence of TFRecords, each
record one serialised `Event` protocol buffer; the first event names the format (`file_version:
"brain.Event:2"`), the others carry a `Summary` of `simple_value` scalars. The protocol buffers and the
record framing are encoded here by hand, so neither TensorFlow, tensorboardX nor protobuf is needed
(`flax.metrics.tensorboard` and clu's writers pull in TensorFlow; see STYLE.md, Metrics).

Wire format (tensorflow/core/util/event.proto, tensorflow/core/framework/summary.proto):

  Event:   wall_time double = 1; step int64 = 2; file_version string = 3; summary Summary = 5
  Summary: repeated Value value = 1
  Value:   tag string = 1; simple_value float = 2

TFRecord framing (tensorflow/core/lib/io/record_writer.cc): uint64 little-endian length, masked crc32c
of those 8 bytes, the data, masked crc32c of the data, where mask(c) = ((c >> 15) | (c << 17)) +
0xa282ead8 mod 2**32.

Files are opened and written through `etils.epath`, so a logdir may be any path epath understands
(local, `gs://`, ...). A writer opens its file once and only appends to the open handle: remote
filesystems often cannot reopen a file for appending.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import struct
import time
from collections.abc import Iterator, Mapping

from etils import epath

FILE_VERSION = "brain.Event:2"
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1
_file_counter = itertools.count()  # tells apart files one process opens within the same second


# ------------------------------------------------------------------------------------------------
# crc32c (Castagnoli), table-driven, reflected polynomial 0x82F63B78 (RFC 3720, appendix B.4).


def _crc32c_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    table.append(crc)
  return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
  """The crc32c of `data`, continuing from `crc` (the crc32c of what came before, 0 at the start)."""
  crc ^= _U32
  table = _CRC32C_TABLE
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ _U32


def masked_crc32c(data: bytes) -> int:
  """The crc32c of `data` masked as TFRecords store it (a crc of data that holds crcs is then safe)."""
  crc = crc32c(data)
  return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def _frame(data: bytes) -> bytes:
  length = struct.pack("<Q", len(data))
  return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


# ------------------------------------------------------------------------------------------------
# Protocol buffer encoding: only the wire types these messages use.


def _varint(value: int) -> bytes:
  value &= _U64  # a negative int64 is its 64-bit two's complement: ten bytes
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint((field << 3) | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
  return _key(field, 2) + _varint(len(payload)) + payload


def _encode_event(wall_time: float, step: int, file_version: str = "", summary: bytes | None = None) -> bytes:
  out = _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(step)
  if file_version:
    out += _length_delimited(3, file_version.encode())
  if summary is not None:
    out += _length_delimited(5, summary)
  return out


def _encode_summary(values: Mapping[str, float]) -> bytes:
  return b"".join(
    _length_delimited(1, _length_delimited(1, tag.encode()) + _key(2, 5) + struct.pack("<f", float(value)))
    for tag, value in values.items()
  )


# ------------------------------------------------------------------------------------------------
# Writing.


class EventWriter:
  """Writes scalar summaries to a new event file `logdir/events.out.tfevents.<s>.<host>.<pid>.<n>`.

  Use as a context manager, or call `close()`. Records are buffered: call `flush()` on log steps so
  TensorBoard (which reads files as they grow) sees them. On an object store (`gs://...`), where a
  file being written is not visible until it is closed, `flush()` writes the file whole instead (its
  records so far: scalar logs are small), so a live TensorBoard sees those too.
  """

  def __init__(self, logdir: str | os.PathLike):
    self.logdir = epath.Path(logdir)
    self.logdir.mkdir(parents=True, exist_ok=True)
    name = (
      f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{next(_file_counter)}"
    )
    self.path = self.logdir / name
    # files.is_remote's test, written out: importing the package would load what a live view must not need
    self._remote = "://" in os.fspath(logdir)
    self._file = io.BytesIO() if self._remote else self.path.open("wb")
    self._file.write(_frame(_encode_event(time.time(), 0, file_version=FILE_VERSION)))
    self.flush()

  def scalars(self, step: int, values: Mapping[str, float], wall_time: float | None = None) -> None:
    """One event at `step` holding one `simple_value` per tag (values are stored as float32)."""
    if self._file is None:
      raise ValueError(f"EventWriter for {self.path} is closed")
    wall_time = time.time() if wall_time is None else float(wall_time)
    summary = _encode_summary({str(tag): float(value) for tag, value in values.items()})
    self._file.write(_frame(_encode_event(wall_time, int(step), summary=summary)))

  def flush(self) -> None:
    if self._file is None:
      return
    if self._remote:
      self.path.write_bytes(self._file.getvalue())
    else:
      self._file.flush()

  def close(self) -> None:
    """Flushes and closes the file; closing twice is allowed."""
    if self._file is not None:
      self.flush()
      self._file.close()
      self._file = None

  def __enter__(self) -> EventWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


# ------------------------------------------------------------------------------------------------
# Reading (for tests, and to read back a run without TensorBoard).


def _read_records(data: bytes, name: str) -> Iterator[bytes]:
  """The records of one file. A record cut short at the end (its writer still running, or killed
  mid-write) ends the file, as in TensorBoard; a crc that does not match raises ValueError."""
  pos = 0
  while pos + 12 <= len(data):
    header, (length_crc,) = data[pos : pos + 8], struct.unpack_from("<I", data, pos + 8)
    if masked_crc32c(header) != length_crc:
      raise ValueError(f"{name}: bad length crc in the record at byte {pos}")
    (length,) = struct.unpack("<Q", header)
    end = pos + 12 + length + 4
    if end > len(data):
      return
    payload = data[pos + 12 : pos + 12 + length]
    if masked_crc32c(payload) != struct.unpack_from("<I", data, end - 4)[0]:
      raise ValueError(f"{name}: bad data crc in the record at byte {pos}")
    yield payload
    pos = end


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    byte = data[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    shift += 7
    if not byte & 0x80:
      return value, pos


def _fields(message: bytes) -> Iterator[tuple[int, int | bytes]]:
  """(field number, value) pairs: varints as int, fixed64/fixed32 and length-delimited as bytes."""
  pos = 0
  while pos < len(message):
    key, pos = _read_varint(message, pos)
    field, wire_type = key >> 3, key & 7
    if wire_type == 0:
      value, pos = _read_varint(message, pos)
    elif wire_type in (1, 5):
      size = 8 if wire_type == 1 else 4
      value, pos = message[pos : pos + size], pos + size
    elif wire_type == 2:
      size, pos = _read_varint(message, pos)
      value, pos = message[pos : pos + size], pos + size
    else:
      raise ValueError(f"unsupported protobuf wire type {wire_type}")
    yield field, value


def _event_scalars(event: bytes) -> Iterator[tuple[int, str, float]]:
  step, summaries = 0, []
  for field, value in _fields(event):
    if field == 2:
      step = value - (1 << 64) if value >= 1 << 63 else value
    elif field == 5:
      summaries.append(value)
  for summary in summaries:
    for field, value in _fields(summary):
      if field != 1:
        continue
      tag, simple_value = None, None
      for value_field, item in _fields(value):
        if value_field == 1:
          tag = item.decode()
        elif value_field == 2:
          (simple_value,) = struct.unpack("<f", item)
      if tag is not None and simple_value is not None:
        yield step, tag, simple_value


def read_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
  """tag -> [(step, value), ...] from every event file in `logdir`, files in name order (as TensorBoard
  reads them), events in file order. Only `simple_value` scalars are read."""
  out: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(epath.Path(logdir).glob("*tfevents*"), key=lambda p: p.name):
    for record in _read_records(path.read_bytes(), path.name):
      for step, tag, value in _event_scalars(record):
        out.setdefault(tag, []).append((step, value))
  return out
