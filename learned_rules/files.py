"""The files of a run folder, on any path `etils.epath` understands: a local folder, or an object store
(`gs://bucket/...` on Cloud TPU, `s3://...`), for every command.

Object stores differ from a disk in two ways that matter here, and these helpers hide both:
- they cannot append to a file: `append_text` rewrites a remote file whole (a metrics file is small);
- they have no free-space query: `free_bytes` is None for them.
Orbax checkpoints go through epath and TensorStore themselves (`checkpointing.Checkpointer`); the gcs
scheme needs `gcsfs` installed (the `gcs` extra).
"""

from __future__ import annotations

import json
import os
import shutil

from etils import epath


def is_remote(path) -> bool:
  """Whether `path` names an object store (`scheme://...`) rather than the local filesystem."""
  return "://" in os.fspath(path)


def as_path(path) -> epath.Path:
  """`path` as an `epath.Path`: a local one made absolute, a remote one as given."""
  return epath.Path(path) if is_remote(path) else epath.Path(os.path.abspath(os.fspath(path)))


def join(path, *parts: str) -> str:
  """`os.path.join` for local and remote paths alike (`gs://b/run` + `x` is `gs://b/run/x`)."""
  return os.fspath(epath.Path(path).joinpath(*parts)) if is_remote(path) else os.path.join(path, *parts)


def makedirs(path) -> epath.Path:
  """Creates the folder `path` (and its parents) if missing; returns it."""
  folder = as_path(path)
  folder.mkdir(parents=True, exist_ok=True)
  return folder


def write_text(path, text: str) -> None:
  """Writes `text` to `path`, creating its folder."""
  makedirs(as_path(path).parent)
  as_path(path).write_text(text)


def write_bytes(path, data: bytes) -> None:
  """Writes `data` to `path`, creating its folder."""
  makedirs(as_path(path).parent)
  as_path(path).write_bytes(data)


def replace_bytes(path, data: bytes) -> None:
  """Writes `data` to `path` whole or not at all (creating its folder): locally into `<path>.tmp`,
  then renamed over `path`; on an object store an upload replaces the object only once it is complete,
  so a plain write is already atomic."""
  if is_remote(path):
    write_bytes(path, data)
    return
  makedirs(as_path(path).parent)
  with open(os.fspath(path) + ".tmp", "wb") as f:
    f.write(data)
  os.replace(os.fspath(path) + ".tmp", path)


def write_json(path, record, indent: int | None = 2) -> None:
  write_text(path, json.dumps(record, indent=indent))


def read_text(path) -> str:
  return as_path(path).read_text()


def read_bytes(path) -> bytes:
  return as_path(path).read_bytes()


def read_json(path):
  return json.loads(read_text(path))


def exists(path) -> bool:
  return as_path(path).exists()


def is_dir(path) -> bool:
  return as_path(path).is_dir()


def is_file(path) -> bool:
  return as_path(path).is_file()


def size(path) -> int:
  """The bytes of the file `path`."""
  return as_path(path).stat().length


def append_text(path, text: str) -> None:
  """Appends `text` to `path` (created if missing). A remote file is read and written whole: object
  stores cannot append, and their "append" mode silently starts the file over."""
  target = as_path(path)
  if not is_remote(path):
    with target.open("a") as f:
      f.write(text)
    return
  before = target.read_text() if target.exists() else ""
  target.write_text(before + text)


def free_bytes(path) -> int | None:
  """Free bytes on the disk of the local folder `path`; None for a remote one (no such limit)."""
  return None if is_remote(path) else shutil.disk_usage(os.fspath(as_path(path))).free
