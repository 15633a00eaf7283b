"""Results kept in a workdir as soon as each is computed, so that a long study that is stopped resumes
where it was, and a finished one is read back in seconds instead of computed again.

The workdir may be local or remote (`files`). Locally both stores write a new file beside the old one
and rename it over, so that a study killed mid-write leaves the previous contents intact.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from flax import serialization

from learned_rules import files


class ResultCache:
  """JSON results by key, kept in `<folder>/<name>` (rewritten after each new result)."""

  def __init__(self, folder: str, name: str = "cache.json"):
    self.path = files.join(folder, name)
    self.entries = files.read_json(self.path) if files.exists(self.path) else {}

  def get(self, key: dict, compute: Callable[[], object]):
    """The result stored under `key` (a JSON-able dict), or `compute()`'s, stored first."""
    text = json.dumps(key, sort_keys=True)
    if text not in self.entries:
      self.entries[text] = compute()
      files.replace_bytes(self.path, json.dumps(self.entries).encode())
    return self.entries[text]


def load_or_make_params(path: str, make: Callable[[], object]):
  """The parameters (a pytree of arrays) kept in the msgpack file `path`, or `make()`'s, written there
  first. Read back, the pytree's dicts are plain dicts of numpy arrays."""
  if files.exists(path):
    return serialization.msgpack_restore(files.read_bytes(path))
  params = make()
  files.replace_bytes(path, serialization.to_bytes(params))  # creates the folder
  return params
