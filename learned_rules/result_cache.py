"""Results kept in a workdir as soon as each is computed, so that a long study that is stopped resumes
where it was, and a finished one is read back in seconds instead of computed again.

Both stores write a new file beside the old one and rename it over, so that a study killed mid-write
leaves the previous contents intact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from flax import serialization


class ResultCache:
  """JSON results by key, kept in `<folder>/<name>` (rewritten after each new result)."""

  def __init__(self, folder: str, name: str = "cache.json"):
    self.path = os.path.join(folder, name)
    self.entries = {}
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.entries = json.load(f)

  def get(self, key: dict, compute: Callable[[], object]):
    """The result stored under `key` (a JSON-able dict), or `compute()`'s, stored first."""
    text = json.dumps(key, sort_keys=True)
    if text not in self.entries:
      self.entries[text] = compute()
      _replace(self.path, json.dumps(self.entries).encode())
    return self.entries[text]


def load_or_make_params(path: str, make: Callable[[], object]):
  """The parameters (a pytree of arrays) kept in the msgpack file `path`, or `make()`'s, written there
  first. Read back, the pytree's dicts are plain dicts of numpy arrays."""
  if os.path.exists(path):
    with open(path, "rb") as f:
      return serialization.msgpack_restore(f.read())
  params = make()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  _replace(path, serialization.to_bytes(params))
  return params


def _replace(path: str, data: bytes) -> None:
  with open(path + ".tmp", "wb") as f:
    f.write(data)
  os.replace(path + ".tmp", path)
