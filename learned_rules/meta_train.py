"""Meta-training: the train state, one jitted meta step, and the imperative driver.

`train_and_evaluate(cfg, workdir)` is the whole run: validate the config, check the workdir, resume from
it if it holds a compatible checkpoint, meta-train with progress and metrics, checkpoint, and evaluate on
held-out episodes. Everything it calls in the library is pure.

Faults (docs/RELIABILITY.md): a meta step whose loss or gradient is not finite leaves theta and the
optimizer state as they were and is counted; `train.max_nonfinite_steps` of them in a row stop the run
(`NonFiniteError`) without saving. SIGTERM (preemption) makes the run save a checkpoint after the step
in flight and stop (`Preempted`). A damaged newest checkpoint is set aside and the one before it used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from learned_rules import checkpointing, network, rules, sharding, unroll
from learned_rules import config as config_lib
from learned_rules import evaluation as evaluate_lib
from learned_rules import metrics as metrics_lib

TRAIN_TAG = 0
SYNAPSE_WEIGHTS_TAG = 1  # folded into the theta key for `network.with_synapse_weights`
# Evaluation runs the network this many times longer than a training episode (or window) and reports
# the largest state it reaches (docs/RELIABILITY.md).
STATE_HORIZON = 10


class NonFiniteError(RuntimeError):
  """`train.max_nonfinite_steps` meta steps in a row had a non-finite loss or gradient."""


class Preempted(RuntimeError):
  """The run was asked to stop (SIGTERM) and saved a checkpoint first; rerunning it resumes."""


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs: `step` `[]`, `theta` (with `network.SYNAPSE_WEIGHTS` on a
  `net.trained_synapses` network), `opt_state`, the count of skipped (non-finite) meta steps in all
  and in a row so far (`[]` int32 each), and (streaming only) the carried `[B, ...]` state of the
  never-reset streams (None for the episode protocols)."""

  step: jax.Array
  theta: rules.Theta
  opt_state: optax.OptState
  nonfinite_steps: jax.Array
  nonfinite_streak: jax.Array
  carry: unroll.StreamCarry | None = None


def make_optimizer(learning_rate: float, clip_norm: float) -> optax.GradientTransformation:
  """Adam with global-norm clipping (docs/DESIGN.md, "Meta-training")."""
  return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(learning_rate))


def train_key(seed: int) -> jax.Array:
  """Key of the initial meta-parameters (and streams) of a run."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), TRAIN_TAG)


def step_key(seed: int) -> jax.Array:
  """Key that `make_meta_step` folds the step number into to draw each step's episodes."""
  return jax.random.fold_in(train_key(seed), 1)


def _init_train_state(
  key: jax.Array,
  topo: network.Topology,
  problem: unroll.Problem,
  optimizer: optax.GradientTransformation,
  batch: int,
) -> TrainState:
  k_theta, k_stream = jax.random.split(key)
  theta = rules.init_theta(k_theta, problem.rule)
  # A `trained_synapses` network's per-synapse weights (a key of their own: other runs' theta is as before).
  theta = network.with_synapse_weights(theta, topo, jax.random.fold_in(k_theta, SYNAPSE_WEIGHTS_TAG))
  carry = None
  if problem.task.protocol == "streaming":
    carry = unroll.init_stream_carry(theta, topo, problem, k_stream, batch)
  zero = jnp.zeros((), jnp.int32)
  return TrainState(
    step=zero,
    theta=theta,
    opt_state=optimizer.init(theta),
    nonfinite_steps=zero,
    nonfinite_streak=zero,
    carry=carry,
  )


_STATIC = ("problem", "optimizer", "batch")
init_train_state = jax.jit(_init_train_state, static_argnames=_STATIC)
init_train_state.__doc__ = "The initial `TrainState` of a run (theta from `key`, fresh streams)."


def state_shardings(topo, problem: unroll.Problem, optimizer, batch: int):
  """Shardings of the train state on `problem.mesh` (`sharding.train_state_shardings`)."""
  abstract = jax.eval_shape(lambda: init_train_state(train_key(0), topo, problem, optimizer, batch))
  return sharding.train_state_shardings(abstract, problem.mesh)


def init_sharded_train_state(key, topo, problem: unroll.Problem, optimizer, batch: int) -> TrainState:
  """`init_train_state` made directly in its shardings on `problem.mesh` (each device, and each
  process of a multi-host run, computes only its own part)."""
  shardings = state_shardings(topo, problem, optimizer, batch)
  init = jax.jit(_init_train_state, static_argnames=_STATIC, out_shardings=shardings)
  return init(key, topo, problem, optimizer, batch)


def objective_and_grads(state: TrainState, topo: network.Topology, problem: unroll.Problem, key, batch: int):
  """`(metrics, grads, carry)` of one meta step: the meta-loss of step `state.step`'s episodes (drawn
  from `fold_in(key, step)`), or of the streams' next window (and their new carry)."""
  if state.carry is None:
    grad_fn = jax.value_and_grad(unroll.episode_objective, has_aux=True)
    (_, metrics), grads = grad_fn(state.theta, topo, problem, jax.random.fold_in(key, state.step), batch)
    return metrics, grads, None
  grad_fn = jax.value_and_grad(unroll.stream_objective, has_aux=True)
  (_, (metrics, carry)), grads = grad_fn(state.theta, topo, problem, state.carry)
  return metrics, grads, carry


def make_meta_step(
  problem: unroll.Problem,
  optimizer: optax.GradientTransformation,
  batch: int,
  key: jax.Array,
  shardings=None,
):
  """Returns `meta_step(train_state, topo) -> (train_state, metrics)`, jitted, state donated.

  Episodes of step `s` are drawn from `fold_in(key, s)`, so a resumed run sees the same episodes as
  an uninterrupted one. A step whose loss or gradient is not finite changes nothing but the step and
  the non-finite counts (theta, optimizer state and carried streams stay as they were); the metrics
  say so (`nonfinite` 1.0, `nonfinite_streak`, `nonfinite_steps`). `shardings` (`state_shardings`, on
  `problem.mesh`) fixes the shardings of the train state going in and out; the metrics come out
  replicated.
  """

  def meta_step(state: TrainState, topo: network.Topology):
    metrics, grads, carry = objective_and_grads(state, topo, problem, key, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.theta)
    theta = optax.apply_updates(state.theta, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
    bad = (~finite).astype(jnp.int32)
    new_state = TrainState(
      step=state.step + 1,
      theta=keep(theta, state.theta),
      opt_state=keep(opt_state, state.opt_state),
      nonfinite_steps=state.nonfinite_steps + bad,
      nonfinite_streak=(state.nonfinite_streak + 1) * bad,
      carry=None if carry is None else keep(carry, state.carry),
    )
    metrics = {
      **metrics,
      "grad_norm": grad_norm,
      "nonfinite": bad.astype(jnp.float32),
      "nonfinite_streak": new_state.nonfinite_streak,
      "nonfinite_steps": new_state.nonfinite_steps,
    }
    return new_state, metrics

  if shardings is None:
    return jax.jit(meta_step, donate_argnums=0)
  rep = sharding.replicated(problem.mesh)
  return jax.jit(meta_step, in_shardings=(shardings, rep), out_shardings=(shardings, rep), donate_argnums=0)


def _write_config(workdir: str, cfg) -> None:
  """`config.json`: `{"config": ..., "environment": checkpointing.environment()}`."""
  record = {"config": checkpointing.config_to_dict(cfg), "environment": checkpointing.environment()}
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(record, f, indent=2)


def checkpoint_bytes(topo, problem: unroll.Problem, optimizer, batch: int) -> int:
  """Bytes of one checkpoint's train state (its arrays; the metadata adds a few KiB)."""
  abstract = jax.eval_shape(lambda: init_train_state(train_key(0), topo, problem, optimizer, batch))
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))


def setup(cfg):
  """Validated topology, problem and optimizer of a config."""
  config_lib.validate(cfg)
  topo = network.make_topology(cfg.net)
  problem = evaluate_lib.problem_from_config(cfg, topo)
  optimizer = make_optimizer(cfg.train.learning_rate, cfg.train.clip_norm)
  return topo, problem, optimizer


def make_mesh(cfg) -> jax.sharding.Mesh:
  """The `(batch, neurons)` device mesh of `cfg.mesh` over every device of every process.

  Raises `config.ConfigError` if it does not fit the devices or does not split the batch.
  """
  try:
    mesh = sharding.make_mesh(*config_lib.mesh_shape(cfg))
  except ValueError as e:
    field, _, message = str(e).partition(": ")
    raise config_lib.ConfigError(field, message) from e
  error = sharding.batch_size_error(cfg.train.batch_size, mesh)
  if error:
    raise config_lib.ConfigError("train.batch_size", f"{error}; set mesh.batch to a divisor of it")
  return mesh


def on_mesh(topo: network.Topology, problem: unroll.Problem, mesh: jax.sharding.Mesh):
  """`(topo, problem)` of a run on `mesh`: the topology replicated over it, the problem split over it."""
  return jax.device_put(topo, sharding.replicated(mesh)), dataclasses.replace(problem, mesh=mesh)


def initial_train_state(topo, problem: unroll.Problem, optimizer, batch: int, seed: int) -> TrainState:
  """A run's initial train state, made in its shardings when `problem` has a mesh (`on_mesh`)."""
  init = init_train_state if problem.mesh is None else init_sharded_train_state
  return init(train_key(seed), topo, problem, optimizer, batch)


def make_run_meta_step(topo, problem: unroll.Problem, optimizer, batch: int, seed: int):
  """The meta step a run trains with: `make_meta_step` on the run's step key, with the train state's
  shardings fixed when `problem` has a mesh."""
  shardings = None if problem.mesh is None else state_shardings(topo, problem, optimizer, batch)
  return make_meta_step(problem, optimizer, batch, step_key(seed), shardings)


def _latest_or_initial_state(cfg, ckpt, topo, problem, optimizer, set_aside: bool = False):
  """`(state, step)`: the newest intact checkpoint's train state and step, or the initial state and
  None if `ckpt` holds none; on `problem.mesh`'s shardings when it has one (a checkpoint restores onto
  any mesh). Damaged newer checkpoints are warned about and, with `set_aside` (the trainer), moved
  out of the way so their steps can be saved again."""
  state = initial_train_state(topo, problem, optimizer, cfg.train.batch_size, cfg.seed)
  restored, step, damaged = ckpt.restore_latest(state)
  for bad in damaged if set_aside else ():
    logging.warning("damaged checkpoint step %d moved to %s", bad, ckpt.set_aside(bad))
  return (state, None) if restored is None else (restored, step)


class _StopRequest:
  """Within `with`: SIGTERM sets `requested` instead of killing the process (main thread only: signal
  handlers can be installed nowhere else), so the loop can save a checkpoint before it stops."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def _handle(self, signum, frame):
    del frame
    self.requested = True
    logging.warning("signal %d: saving a checkpoint after this meta step, then stopping", signum)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _check_finite(cfg, done: int, step_metrics, label: str) -> None:
  """Warns about a skipped (non-finite) step; raises `NonFiniteError` after too many in a row."""
  streak = int(step_metrics["nonfinite_streak"])  # a scalar fetch per step, to stop in time
  if not streak:
    return
  total = int(step_metrics["nonfinite_steps"])
  logging.warning(
    "%sstep %d: non-finite loss or gradient; update skipped (%d in a row, %d in all)",
    label,
    done,
    streak,
    total,
  )
  limit = config_lib.max_nonfinite_steps(cfg)
  if streak >= limit:
    raise NonFiniteError(
      f"step {done}: {streak} meta steps in a row (steps {done - streak + 1} to {done}) had a non-finite "
      f"loss or gradient (train.max_nonfinite_steps = {limit}); stopped without saving, the last "
      "checkpoint is as it was. Lower train.learning_rate or train.clip_norm and start a new run."
    )


def _train_loop(cfg, workdir, ckpt, state: TrainState, meta_step, topo, label: str) -> TrainState:
  """Meta steps up to `cfg.train.num_steps`, with metrics, progress and checkpoints; stops early
  with `NonFiniteError` or (after saving) `Preempted`."""
  main = jax.process_index() == 0  # only the first process of a multi-host run logs
  writer = metrics_lib.MetricsWriter(workdir)
  num_steps = cfg.train.num_steps
  progress = metrics_lib.Progress(num_steps, int(state.step), label)
  with _StopRequest() as stop:
    for step in range(int(state.step), num_steps):
      state, step_metrics = meta_step(state, topo)
      done = step + 1
      _check_finite(cfg, done, step_metrics, label)
      if main and (done % cfg.train.log_every == 0 or done == num_steps):
        scalars = jax.device_get(step_metrics)
        writer.write(done, **scalars)
        progress.update(done, scalars["loss"], scalars["bit_accuracy"])
      if done % cfg.train.checkpoint_every == 0 or done == num_steps or stop.requested:
        ckpt.save(done, state, cfg)
      if stop.requested and done < num_steps:
        progress.close()
        raise Preempted(f"stopped by SIGTERM after step {done}, saved in {ckpt.directory}; rerun to resume")
  progress.close()
  if ckpt.latest_step() is None:  # num_steps == 0: still leave a restorable run behind.
    ckpt.save(int(state.step), state, cfg)
  return state


def load_run(workdir: str):
  """`(cfg, topo, train_state)` of the latest checkpoint in `workdir`, with the config saved beside it.

  Raises FileNotFoundError if `workdir` holds no checkpoint (and creates nothing).
  """
  ckpt = checkpointing.Checkpointer(workdir, create=False)
  try:
    step, saved = ckpt.newest_config()
    if step is None:
      if ckpt.all_steps():
        raise checkpointing.DamagedCheckpointError(f"{ckpt.directory}: no checkpoint has a readable config")
      raise FileNotFoundError(f"no checkpoint in {ckpt.directory}; run experiments.remember first")
    cfg = ml_collections.ConfigDict(saved)
    topo, problem, optimizer = setup(cfg)
    return cfg, topo, _latest_or_initial_state(cfg, ckpt, topo, problem, optimizer)[0]
  finally:
    ckpt.close()


def train_and_evaluate(cfg, workdir: str, label: str = "", evaluate: bool = True) -> dict:
  """Meta-trains `cfg` in `workdir` (resuming if it holds a checkpoint) and evaluates the result.

  Returns the held-out recall metrics (none with `evaluate=False`, for callers that evaluate the run
  their own way) and the largest absolute body and synapse state over episodes `STATE_HORIZON` times
  longer than training (`max_abs_body`, `max_abs_synapse`), plus `meta_steps` and `wall_seconds` (of
  this invocation).
  Raises `config.ConfigError` before anything is compiled or written if `cfg` is invalid,
  `checkpointing.WorkdirError` before training if `workdir` cannot be written or is too full,
  `checkpointing.IncompatibleCheckpointError` if `workdir` holds a run of another config or state
  layout, `checkpointing.DamagedCheckpointError` if it holds checkpoints but none is intact,
  `NonFiniteError` and `Preempted` (see the module docstring).
  """
  start = time.perf_counter()
  topo, problem, optimizer = setup(cfg)
  mesh = make_mesh(cfg)
  main = jax.process_index() == 0
  needed = checkpoint_bytes(topo, problem, optimizer, cfg.train.batch_size) * (cfg.train.max_to_keep + 1)
  checkpointing.check_workdir(workdir, needed + 2**20)
  mesh_topo, sharded = on_mesh(topo, problem, mesh)
  ckpt = checkpointing.Checkpointer(workdir, cfg.train.max_to_keep)
  try:
    ckpt.check_compatible(cfg)
    state, resumed_step = _latest_or_initial_state(cfg, ckpt, mesh_topo, sharded, optimizer, set_aside=main)
    if resumed_step is not None:
      logging.info("%sresumed from step %d in %s", label, resumed_step, ckpt.directory)
      changes = ckpt.environment_changes(resumed_step)
      if changes:
        logging.warning(
          "%sresuming step %d under another environment than the one that wrote it (%s): the rest of the "
          "run may differ in its last bits from an uninterrupted one",
          label,
          resumed_step,
          "; ".join(changes),
        )
    if main:
      _write_config(workdir, cfg)
    logging.info("%s%s", label, sharding.describe(mesh))
    meta_step = make_run_meta_step(mesh_topo, sharded, optimizer, cfg.train.batch_size, cfg.seed)
    state = _train_loop(cfg, workdir, ckpt, state, meta_step, mesh_topo, label)
  finally:
    ckpt.close()

  if not evaluate:
    return {"meta_steps": int(state.step), "wall_seconds": time.perf_counter() - start}
  # Held-out evaluation on each process's own default device (theta is replicated, so every process
  # has it whole and computes the same numbers).
  theta = jax.device_get(state.theta)
  results = evaluate_lib.evaluate(
    theta, topo, problem, evaluate_lib.eval_key(cfg.seed), cfg.eval.num_episodes
  )
  bounds_key = jax.random.fold_in(evaluate_lib.eval_key(cfg.seed), STATE_HORIZON)
  batch = min(cfg.eval.num_episodes, evaluate_lib.STATE_BOUNDS_BATCH)
  results.update(evaluate_lib.state_bounds(theta, topo, problem, bounds_key, batch, STATE_HORIZON))
  results.update(meta_steps=int(state.step), wall_seconds=time.perf_counter() - start)
  if main:
    metrics_lib.MetricsWriter(workdir).write(int(state.step), **{f"eval_{k}": v for k, v in results.items()})
  return results
