"""One orbax `CheckpointManager` per run: the train state (theta, optimizer state, step, carried stream
state), the config that made it, and the environment (library versions, device kind) it ran in.

A workdir whose checkpoint came from an incompatible config is refused, never overwritten: only the
fields in `RESUMABLE_FIELDS` (how long to train, how often to log or save, how to evaluate) may differ
between the saved and the current config. A checkpoint's train-state layout is checked against the
expected one before anything is read (`IncompatibleCheckpointError`, naming the fields that differ).

Crash safety (docs/RELIABILITY.md): orbax writes a step into `<step>.orbax-checkpoint-tmp*` and renames it
when complete, so a save cut short is never listed as a step (and its leftover is removed when a writer
opens the directory). A listed step that cannot be read back (a truncated or missing file) raises
`DamagedCheckpointError`; `restore_latest` then falls back to the step before it, with a warning.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from learned_rules import files

# Dotted config prefixes that may change when a run is resumed.
RESUMABLE_FIELDS = (
  "train.num_steps",
  "train.log_every",
  "train.checkpoint_every",
  "train.max_to_keep",
  "eval",
  "baseline_synapses_off",
  "mesh",  # a run resumes on any mesh: checkpoints restore onto the new shardings
  "train.max_nonfinite_steps",
)

# Config fields added after runs were written without them, and the value their absence means: a saved
# config that lacks one compares as if it held that value (a different value is still a difference).
OPTIONAL_FIELDS = {
  "net.trained_synapses": False,
  "net.random_input_synapses": 0.0,
  "task.score_reachable": True,
  "task.hold_for_latency": False,
  "task.first_scored_step": 0,
  "train.estimator.kind": "truncated",
  "train.estimator.window": 0,
  "train.estimator.horizon": 0,
  "train.estimator.population": 0,
  "train.estimator.std": 0.0,
  "train.mixture": [],
  "train.init_rule": "",
  "train.error_init": 0.0,
  "train.decay_steps": 0,
  "rule.reference_fan_in": 0,
  "rule.scale_rate": False,
  "rule.rate_power": 0.5,
  "rule.decay_power": 1.0,
  "rule.center_synapses": False,
  "rule.error_input": False,
}

# Libraries whose versions every run records (`environment`); a resumed run warns when they changed.
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "ml-collections")
ITEMS = ("state", "config", "environment")
DAMAGED_DIR = "checkpoints_damaged"  # where a trainer moves damaged steps (kept for inspection)


def _abstract(x):
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return np.zeros(np.shape(x), np.asarray(x).dtype)


class IncompatibleCheckpointError(RuntimeError):
  """The workdir holds a checkpoint written under a config (or state layout) this run cannot continue."""


class DamagedCheckpointError(RuntimeError):
  """A finished checkpoint that cannot be read back (truncated, missing or corrupt files)."""


class WorkdirError(RuntimeError):
  """The workdir cannot be created or written, or has too little free space for the run's checkpoints."""


def environment() -> dict:
  """What a run ran on: Python and `LIBRARIES` versions, the JAX backend and the kind and number of
  devices. Recorded in `config.json` and in every checkpoint."""
  versions = {}
  for name in LIBRARIES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return {
    "python": platform.python_version(),
    **versions,
    "backend": jax.default_backend(),
    "device_kind": jax.devices()[0].device_kind,
    "device_count": jax.device_count(),
    "process_count": jax.process_count(),
  }


# The device count may change on resume (a run resumes on any mesh); these may not, bit for bit.
_REPRODUCIBILITY_KEYS = ("python", *LIBRARIES, "backend", "device_kind")


def environment_differences(saved: dict, current: dict) -> list[str]:
  """`"jax: 0.6.0 -> 0.7.0"` for every library version, backend or device kind that differs."""
  return [
    f"{k}: {saved.get(k)} -> {current.get(k)}"
    for k in _REPRODUCIBILITY_KEYS
    if saved.get(k) != current.get(k)
  ]


def check_workdir(workdir: str, needed_bytes: int) -> None:
  """Creates `workdir` (local, or remote as `files` takes it) and checks that a file can be written
  there and, on a local disk, that `needed_bytes` are free.

  Raises `WorkdirError` (before anything is compiled or trained) otherwise; leaves nothing behind
  but the directory itself.
  """
  try:
    folder = files.makedirs(workdir)
  except OSError as e:
    raise WorkdirError(f"workdir {workdir}: cannot create it: {e.strerror or e}") from e
  probe = folder / f".write_test.{os.getpid()}"
  try:
    if files.is_remote(workdir):
      probe.write_bytes(b"\0" * 16)
    else:
      with open(probe, "wb") as f:
        f.write(b"\0" * 4096)
        f.flush()
        os.fsync(f.fileno())
  except OSError as e:
    raise WorkdirError(f"workdir {workdir} is not writable: {e.strerror or e}") from e
  finally:
    if probe.exists():
      probe.unlink()
  free = files.free_bytes(workdir)
  if free is not None and free < needed_bytes:
    raise WorkdirError(
      f"workdir {workdir} has {free / 2**20:.1f} MiB free, the run's checkpoints need about "
      f"{needed_bytes / 2**20:.1f} MiB (train.max_to_keep + 1 of them); free some space or use "
      "another --workdir"
    )


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _layout(tree) -> dict[str, tuple]:
  """`{"theta/body/w1": shape}` of every leaf: the same names for a train state and for the tree of
  array metadata orbax saved for it (which turns dataclasses and named tuples into dicts and lists)."""
  return {
    "/".join(_key_name(k) for k in path): tuple(getattr(x, "shape", np.shape(x)))
    for path, x in jax.tree_util.tree_leaves_with_path(tree)
  }


def layout_differences(saved, expected) -> list[str]:
  """Leaves missing from `saved`, unexpected in it, or of other shapes than in `expected`."""
  a, b = _layout(saved), _layout(expected)
  diffs = [f"{p}: missing from the checkpoint" for p in b if p not in a]
  diffs += [f"{p}: in the checkpoint, not expected" for p in a if p not in b]
  diffs += [f"{p}: saved {a[p]}, expected {b[p]}" for p in b if p in a and a[p] != b[p]]
  return diffs


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
  """Dotted fields whose values differ and that a resumed run may not change (a field of
  `OPTIONAL_FIELDS` missing on either side reads as its default)."""
  a, b = ({**OPTIONAL_FIELDS, **_flatten(c)} for c in (saved, current))
  fields = sorted(set(a) | set(b))
  resumable = lambda f: any(f == p or f.startswith(p + ".") for p in RESUMABLE_FIELDS)  # noqa: E731
  return [
    f"{f}: saved {a.get(f)!r}, now {b.get(f)!r}" for f in fields if a.get(f) != b.get(f) and not resumable(f)
  ]


class Checkpointer:
  """Saves and restores `(train_state, config, environment)` under `workdir/checkpoints`."""

  def __init__(self, workdir: str, max_to_keep: int = 3, create: bool = True):
    """Opens `workdir/checkpoints`; with `create=False` a missing one raises FileNotFoundError
    instead of being created (for readers such as experiments.evaluate)."""
    self.directory = os.fspath(files.as_path(workdir) / "checkpoints")
    if not create and not files.is_dir(self.directory):
      raise FileNotFoundError(f"no checkpoints in {self.directory}; run experiments.remember first")
    # Synchronous saves: the meta step donates its state, so a background save must not read it later.
    # A writer removes the leftovers of saves cut short (`<step>.orbax-checkpoint-tmp*`); they are
    # never listed as steps in any case.
    if create:
      options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True
      )
    else:
      options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, max_to_keep=None)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The finished steps, oldest first (a save cut short is not one)."""
    return sorted(self._manager.all_steps())

  def saved_config(self, step: int | None = None) -> dict | None:
    """The config saved with `step` (default: the latest); None if there is no checkpoint.

    Raises `DamagedCheckpointError` if it cannot be read."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
      return dict(restored["config"])
    except Exception as e:  # noqa: BLE001  (orbax and json raise many kinds for a damaged file)
      raise DamagedCheckpointError(f"{self.directory} step {step} is damaged: its config: {_brief(e)}") from e

  def saved_environment(self, step: int) -> dict | None:
    """The `environment()` saved with `step`, or None (a checkpoint from before it was recorded)."""
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(environment=ocp.args.JsonRestore()))
      return dict(restored["environment"])
    except Exception:  # noqa: BLE001
      return None

  def environment_changes(self, step: int) -> list[str]:
    """`environment_differences` between the environment that wrote `step` and this one; a checkpoint
    from before environments were recorded reports `["environment: not recorded"]`."""
    saved = self.saved_environment(step)
    if saved is None:
      return ["environment: not recorded"]
    return environment_differences(saved, environment())

  def newest_config(self) -> tuple[int | None, dict | None]:
    """`(step, config)` of the newest checkpoint whose config reads (newer damaged ones are warned about);
    `(None, None)` if none does."""
    for step in reversed(self.all_steps()):
      try:
        return step, self.saved_config(step)
      except DamagedCheckpointError as e:
        logging.warning("%s; trying the checkpoint before it", e)
    return None, None

  def check_compatible(self, cfg) -> None:
    """Raises `IncompatibleCheckpointError` if the newest readable checkpoint's config cannot be resumed."""
    step, saved = self.newest_config()
    if saved is None:
      return
    diffs = config_differences(saved, config_to_dict(cfg))
    if diffs:
      raise IncompatibleCheckpointError(
        f"{self.directory} holds a checkpoint (step {step}) written under another "
        f"config; refusing to resume or overwrite it. Use a new --workdir, or restore the config. "
        f"Differences: {'; '.join(diffs)}"
      )

  def save(self, step: int, train_state, cfg) -> None:
    """Saves synchronously; a sharded state is written by every process, each its own shards.

    Raises `WorkdirError` if the disk is full or the directory unwritable: the step is then left
    uncommitted (never listed) and the checkpoints before it are intact.
    """
    try:
      self._manager.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(train_state),
          config=ocp.args.JsonSave(config_to_dict(cfg)),
          environment=ocp.args.JsonSave(environment()),
        ),
        force=True,
      )
      self._manager.wait_until_finished()
    except OSError as e:
      raise WorkdirError(
        f"could not save step {step} in {self.directory}: {e.strerror or e}; the run stopped, its last "
        f"checkpoint (step {self.latest_step()}) is intact: free some space and rerun to resume"
      ) from e

  def restore(self, like, step: int | None = None):
    """Restores the train state with the structure, shapes, dtypes and shardings of `like` (jax
    arrays keep theirs: a checkpoint written on one mesh restores onto any other, or one device).

    Raises `IncompatibleCheckpointError` if the saved layout is not `like`'s (checked on the saved
    metadata, before any array is read), `DamagedCheckpointError` if the step cannot be read back.
    """
    step = self.latest_step() if step is None else step
    path = epath.Path(self.directory) / str(step)
    try:
      saved = ocp.StandardCheckpointHandler().metadata(path / "state")
    except Exception as e:  # noqa: BLE001
      raise DamagedCheckpointError(
        f"{self.directory} step {step} is damaged: its train-state metadata: {_brief(e)}"
      ) from e
    wrong = layout_differences(saved, like)
    if wrong:
      raise IncompatibleCheckpointError(
        f"{self.directory} step {step} holds a train state of another layout than this config's (another "
        f"config, or another version of learned_rules): " + "; ".join(wrong[:6])
      )
    self.saved_config(step)  # a step is intact only if every item reads
    abstract = jax.tree.map(_abstract, like)
    try:
      restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
      )
    except Exception as e:  # noqa: BLE001  (tensorstore reports a truncated file in several ways)
      raise DamagedCheckpointError(f"{self.directory} step {step} is damaged: {_brief(e)}") from e
    return jax.tree.map(
      lambda x, ref: x if isinstance(ref, jax.Array) else jax.numpy.asarray(x, dtype=np.asarray(ref).dtype),
      restored["state"],
      like,
    )

  def restore_latest(self, like) -> tuple[Any, int | None, list[int]]:
    """`(state, step, damaged)`: the newest intact checkpoint restored like `like` (`(None, None, [])`
    if there is none), and the newer steps that were damaged, each reported by a warning.

    Raises `DamagedCheckpointError` if there are checkpoints but none is intact, and
    `IncompatibleCheckpointError` as `restore`.
    """
    damaged = []
    for step in reversed(self.all_steps()):
      try:
        return self.restore(like, step), step, damaged
      except DamagedCheckpointError as e:
        logging.warning("%s; falling back to the checkpoint before it", e)
        damaged.append(step)
    if damaged:
      raise DamagedCheckpointError(
        f"{self.directory}: every checkpoint (steps {sorted(damaged)}) is damaged; move the directory "
        "away to start the run over"
      )
    return None, None, []

  def set_aside(self, step: int) -> str:
    """Moves the damaged `step` out of the checkpoints (to `<workdir>/checkpoints_damaged/`, kept for
    inspection) so the run can save that step again; returns where it went."""
    folder = files.makedirs(epath.Path(self.directory).parent / DAMAGED_DIR)
    target = folder / f"{step}-{time.strftime('%Y%m%dT%H%M%S')}"
    (epath.Path(self.directory) / str(step)).rename(target)
    self._manager.reload()
    return os.fspath(target)

  def close(self) -> None:
    self._manager.close()


def _brief(error: Exception, limit: int = 300) -> str:
  """The first line of an error's message, cut to `limit` characters (tensorstore's run to pages)."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  return f"{type(error).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"
