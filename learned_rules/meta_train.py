"""Meta-training: the train state, one jitted meta step, and the imperative driver.

`train_and_evaluate(cfg, workdir)` is the whole run: validate the config, resume from the workdir if it
holds a compatible checkpoint, meta-train with progress and metrics, checkpoint, and evaluate on
held-out episodes. Everything it calls in the library is pure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import flax
import jax
import ml_collections
import optax
from absl import logging

from learned_rules import checkpointing, network, rules, sharding, unroll
from learned_rules import config as config_lib
from learned_rules import evaluate as evaluate_lib
from learned_rules import metrics as metrics_lib

TRAIN_TAG = 0


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs: `step` `[]`, `theta`, `opt_state`, and (streaming only) the
  carried `[B, ...]` state of the never-reset streams (None for the episode protocols)."""

  step: jax.Array
  theta: rules.Theta
  opt_state: optax.OptState
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
  carry = None
  if problem.task.protocol == "streaming":
    carry = unroll.init_stream_carry(theta, topo, problem, k_stream, batch)
  return TrainState(
    step=jax.numpy.zeros((), jax.numpy.int32),
    theta=theta,
    opt_state=optimizer.init(theta),
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


def make_meta_step(
  problem: unroll.Problem,
  optimizer: optax.GradientTransformation,
  batch: int,
  key: jax.Array,
  shardings=None,
):
  """Returns `meta_step(train_state, topo) -> (train_state, metrics)`, jitted, state donated.

  Episodes of step `s` are drawn from `fold_in(key, s)`, so a resumed run sees the same episodes as
  an uninterrupted one. `shardings` (`state_shardings`, on `problem.mesh`) fixes the shardings of the
  train state going in and out; the metrics come out replicated.
  """

  def meta_step(state: TrainState, topo: network.Topology):
    if state.carry is None:
      episode_key = jax.random.fold_in(key, state.step)
      grad_fn = jax.value_and_grad(unroll.episode_objective, has_aux=True)
      (_, metrics), grads = grad_fn(state.theta, topo, problem, episode_key, batch)
      carry = None
    else:
      grad_fn = jax.value_and_grad(unroll.stream_objective, has_aux=True)
      (_, (metrics, carry)), grads = grad_fn(state.theta, topo, problem, state.carry)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.theta)
    theta = optax.apply_updates(state.theta, updates)
    metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
    new_state = TrainState(step=state.step + 1, theta=theta, opt_state=opt_state, carry=carry)
    return new_state, metrics

  if shardings is None:
    return jax.jit(meta_step, donate_argnums=0)
  rep = sharding.replicated(problem.mesh)
  return jax.jit(meta_step, in_shardings=(shardings, rep), out_shardings=(shardings, rep), donate_argnums=0)


def _write_config(workdir: str, cfg) -> None:
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(checkpointing.config_to_dict(cfg), f, indent=2)


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


def _latest_or_initial_state(cfg, ckpt, topo, problem, optimizer) -> TrainState:
  """The latest checkpoint's train state, or the initial one if `ckpt` holds none; on
  `problem.mesh`'s shardings when it has one (a checkpoint restores onto any mesh)."""
  state = initial_train_state(topo, problem, optimizer, cfg.train.batch_size, cfg.seed)
  return state if ckpt.latest_step() is None else ckpt.restore(state)


def _train_loop(cfg, workdir, ckpt, state: TrainState, meta_step, topo, label: str) -> TrainState:
  """Meta steps up to `cfg.train.num_steps`, with metrics, progress and checkpoints."""
  main = jax.process_index() == 0  # only the first process of a multi-host run logs
  writer = metrics_lib.MetricsWriter(workdir)
  num_steps = cfg.train.num_steps
  progress = metrics_lib.Progress(num_steps, int(state.step), label)
  for step in range(int(state.step), num_steps):
    state, step_metrics = meta_step(state, topo)
    done = step + 1
    if main and (done % cfg.train.log_every == 0 or done == num_steps):
      scalars = jax.device_get(step_metrics)  # the only host sync of the loop
      writer.write(done, **scalars)
      progress.update(done, scalars["loss"], scalars["bit_accuracy"])
    if done % cfg.train.checkpoint_every == 0 or done == num_steps:
      ckpt.save(done, state, cfg)
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
    step = ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {ckpt.directory}; run experiments.remember first")
    cfg = ml_collections.ConfigDict(ckpt.saved_config(step))
    topo, problem, optimizer = setup(cfg)
    return cfg, topo, _latest_or_initial_state(cfg, ckpt, topo, problem, optimizer)
  finally:
    ckpt.close()


def train_and_evaluate(cfg, workdir: str, label: str = "", evaluate: bool = True) -> dict:
  """Meta-trains `cfg` in `workdir` (resuming if it holds a checkpoint) and evaluates the result.

  Returns the held-out recall metrics (none with `evaluate=False`, for callers that evaluate the run
  their own way) plus `meta_steps` and `wall_seconds` (of this invocation).
  Raises `config.ConfigError` before anything is compiled or written if `cfg` is invalid, and
  `checkpointing.IncompatibleCheckpointError` if `workdir` holds a run of another config.
  """
  start = time.perf_counter()
  topo, problem, optimizer = setup(cfg)
  mesh = make_mesh(cfg)
  main = jax.process_index() == 0
  mesh_topo, sharded = on_mesh(topo, problem, mesh)
  os.makedirs(workdir, exist_ok=True)
  ckpt = checkpointing.Checkpointer(workdir, cfg.train.max_to_keep)
  try:
    ckpt.check_compatible(cfg)
    if main:
      _write_config(workdir, cfg)
    state = _latest_or_initial_state(cfg, ckpt, mesh_topo, sharded, optimizer)
    if ckpt.latest_step() is not None:
      logging.info("%sresumed from step %d in %s", label, int(state.step), ckpt.directory)
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
  results.update(meta_steps=int(state.step), wall_seconds=time.perf_counter() - start)
  if main:
    metrics_lib.MetricsWriter(workdir).write(int(state.step), **{f"eval_{k}": v for k, v in results.items()})
  return results
