"""One orbax `CheckpointManager` per run: the train state (theta, optimizer state, step, carried stream
state) and the config that made it.

A workdir whose checkpoint came from an incompatible config is refused, never overwritten: only the
fields in `RESUMABLE_FIELDS` (how long to train, how often to log or save, how to evaluate) may differ
between the saved and the current config.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

# Dotted config prefixes that may change when a run is resumed.
RESUMABLE_FIELDS = (
  "train.num_steps",
  "train.log_every",
  "train.checkpoint_every",
  "train.max_to_keep",
  "eval",
  "baseline_synapses_off",
  "mesh",  # a run resumes on any mesh: checkpoints restore onto the new shardings
)


def _abstract(x):
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return np.zeros(np.shape(x), np.asarray(x).dtype)


class IncompatibleCheckpointError(RuntimeError):
  """The workdir holds a checkpoint written under a config this run cannot continue."""


def config_to_dict(cfg) -> dict:
  """JSON-ready plain dict of a ConfigDict (tuples become lists)."""
  raw = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
  return json.loads(json.dumps(raw, default=list))


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  flat = {}
  for k, v in d.items():
    name = f"{prefix}{k}"
    if isinstance(v, dict):
      flat.update(_flatten(v, name + "."))
    else:
      flat[name] = v
  return flat


def config_differences(saved: dict, current: dict) -> list[str]:
  """Dotted fields whose values differ and that a resumed run may not change."""
  a, b = _flatten(saved), _flatten(current)
  fields = sorted(set(a) | set(b))
  resumable = lambda f: any(f == p or f.startswith(p + ".") for p in RESUMABLE_FIELDS)  # noqa: E731
  return [
    f"{f}: saved {a.get(f)!r}, now {b.get(f)!r}" for f in fields if a.get(f) != b.get(f) and not resumable(f)
  ]


class Checkpointer:
  """Saves and restores `(train_state, config)` under `workdir/checkpoints`."""

  def __init__(self, workdir: str, max_to_keep: int = 3, create: bool = True):
    """Opens `workdir/checkpoints`; with `create=False` a missing one raises FileNotFoundError
    instead of being created (for readers such as experiments.evaluate)."""
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    if not create and not os.path.isdir(self.directory):
      raise FileNotFoundError(f"no checkpoints in {self.directory}; run experiments.remember first")
    # Synchronous saves: the meta step donates its state, so a background save must not read it later.
    if create:
      options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
      )
    else:
      options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, max_to_keep=None)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "config"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def saved_config(self, step: int | None = None) -> dict | None:
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    restored = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return dict(restored["config"])

  def check_compatible(self, cfg) -> None:
    """Raises `IncompatibleCheckpointError` if the latest checkpoint's config cannot be resumed."""
    saved = self.saved_config()
    if saved is None:
      return
    diffs = config_differences(saved, config_to_dict(cfg))
    if diffs:
      raise IncompatibleCheckpointError(
        f"{self.directory} holds a checkpoint (step {self.latest_step()}) written under another "
        f"config; refusing to resume or overwrite it. Use a new --workdir, or restore the config. "
        f"Differences: {'; '.join(diffs)}"
      )

  def save(self, step: int, train_state, cfg) -> None:
    """Saves synchronously; a sharded state is written by every process, each its own shards."""
    self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(train_state), config=ocp.args.JsonSave(config_to_dict(cfg))
      ),
      force=True,
    )
    self._manager.wait_until_finished()

  def restore(self, like, step: int | None = None):
    """Restores the train state with the structure, shapes, dtypes and shardings of `like` (jax
    arrays keep theirs: a checkpoint written on one mesh restores onto any other, or one device)."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(_abstract, like)
    try:
      restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
      )
    except ValueError as e:  # orbax refuses some mismatches itself (e.g. onto a sharded target)
      raise IncompatibleCheckpointError(
        f"{self.directory} step {step} holds a state of another layout than this config's: {e}"
      ) from e
    # Orbax restores the saved shapes whatever the target's: a state of another layout must not pass.
    wrong = [
      f"{jax.tree_util.keystr(path)}: saved {np.shape(x)}, expected {np.shape(ref)}"
      for (path, x), ref in zip(
        jax.tree_util.tree_leaves_with_path(restored["state"]), jax.tree.leaves(like), strict=False
      )
      if np.shape(x) != np.shape(ref)
    ]
    if wrong or jax.tree.structure(restored["state"]) != jax.tree.structure(abstract):
      raise IncompatibleCheckpointError(
        f"{self.directory} step {step} holds a state of another layout than this config's: "
        + ("; ".join(wrong[:5]) or "another tree structure")
      )
    return jax.tree.map(
      lambda x, ref: x if isinstance(ref, jax.Array) else jax.numpy.asarray(x, dtype=np.asarray(ref).dtype),
      restored["state"],
      like,
    )

  def close(self) -> None:
    self._manager.close()
