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
import signal
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import optax
from absl import logging
from jax.experimental import multihost_utils

from learned_rules import checkpointing, files, gradient_estimators, learner, network, rules, sharding, unroll
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


TrainState = learner.TrainState
make_optimizer = learner.make_optimizer


@dataclasses.dataclass(frozen=True)
class MetaBatch:
  """The problems one meta step trains on (static and hashable): problem `i` with estimator
  `estimators[i]` on `batches[i]` episodes or streams. The meta-gradient is the mean of theirs, so
  networks of several sizes or topologies, and several K, train one shared rule; each is compiled
  once, inside the one jitted meta step. A single problem is a meta-batch of one."""

  problems: tuple[unroll.Problem, ...]
  estimators: tuple[gradient_estimators.EstimatorSpec, ...]
  batches: tuple[int, ...]

  @classmethod
  def of(
    cls, problem: unroll.Problem, batch: int, estimator: gradient_estimators.EstimatorSpec | None = None
  ):
    return cls((problem,), (estimator or gradient_estimators.EstimatorSpec(),), (batch,))

  def made(self) -> tuple[gradient_estimators.Estimator, ...]:
    return tuple(
      gradient_estimators.make_estimator(e, p, b)
      for e, p, b in zip(self.estimators, self.problems, self.batches, strict=True)
    )

  @property
  def mesh(self) -> jax.sharding.Mesh | None:
    return self.problems[0].mesh


def train_key(seed: int) -> jax.Array:
  """Key of the initial meta-parameters (and streams) of a run."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), TRAIN_TAG)


def step_key(seed: int) -> jax.Array:
  """Key that `make_meta_step` folds the step number into to draw each step's episodes."""
  return jax.random.fold_in(train_key(seed), 1)


def _member_key(key: jax.Array, i: int) -> jax.Array:
  """Problem `i`'s key of a meta-batch: the key itself for the first (a run of one problem draws what
  it always drew), a fold of it for the others."""
  return key if i == 0 else jax.random.fold_in(key, i)


def _init_train_state(
  key: jax.Array,
  topos: tuple,
  meta_batch: MetaBatch,
  optimizer: optax.GradientTransformation,
  theta: rules.Theta | None = None,
) -> TrainState:
  k_theta, k_carry = jax.random.split(key)
  if theta is None:  # else a saved rule's (`train.init_rule`), which streams also start from
    theta = rules.init_theta(k_theta, meta_batch.problems[0].rule)
  # A `trained_synapses` network's per-synapse weights (a key of their own: other runs' theta is as before).
  theta = network.with_synapse_weights(theta, topos[0], jax.random.fold_in(k_theta, SYNAPSE_WEIGHTS_TAG))
  carries = tuple(
    est.init(_member_key(k_carry, i), theta, topo)
    for i, (est, topo) in enumerate(zip(meta_batch.made(), topos, strict=True))
  )
  return learner.init_state(theta, optimizer, carries)


_STATIC = ("meta_batch", "optimizer")
init_train_state = jax.jit(_init_train_state, static_argnames=_STATIC)
init_train_state.__doc__ = (
  "The initial `TrainState` of a run (theta from `key`, or the given `theta`; fresh streams)."
)


def state_shardings(topos: tuple, meta_batch: MetaBatch, optimizer):
  """Shardings of the train state on `meta_batch.mesh` (`sharding.train_state_shardings`)."""
  abstract = jax.eval_shape(lambda: init_train_state(train_key(0), topos, meta_batch, optimizer))
  return sharding.train_state_shardings(abstract, meta_batch.mesh)


def init_sharded_train_state(key, topos: tuple, meta_batch: MetaBatch, optimizer, theta=None) -> TrainState:
  """`init_train_state` made directly in its shardings on the mesh (each device, and each process of a
  multi-host run, computes only its own part)."""
  shardings = state_shardings(topos, meta_batch, optimizer)
  init = jax.jit(_init_train_state, static_argnames=_STATIC, out_shardings=shardings)
  return init(key, topos, meta_batch, optimizer, theta)


def _mean(trees: list):
  return trees[0] if len(trees) == 1 else jax.tree.map(lambda *xs: sum(xs) / len(xs), *trees)


def objective_and_grads(state: TrainState, topos: tuple, meta_batch: MetaBatch, key):
  """`(metrics, grads, carries)` of one meta step: the mean meta-gradient of the meta-batch's problems
  on step `state.step`'s experience (drawn from `fold_in(key, step)`), with their new carries. With
  several problems the metrics are their means, and each problem's own under `p<i>_<name>`."""
  key = jax.random.fold_in(key, state.step)
  grads, metrics, carries = [], [], []
  for i, (est, topo, carry) in enumerate(zip(meta_batch.made(), topos, state.carries, strict=True)):
    g, m, c = est.grad(state.theta, topo, carry, _member_key(key, i))
    grads.append(g), metrics.append(m), carries.append(c)
  mean = _mean(metrics)
  if len(metrics) > 1:
    mean = {**mean, **{f"p{i}_{name}": v for i, m in enumerate(metrics) for name, v in m.items()}}
  return mean, _mean(grads), tuple(carries)


def make_meta_step(meta_batch: MetaBatch, optimizer: optax.GradientTransformation, key, shardings=None):
  """Returns `meta_step(train_state, topos) -> (train_state, metrics)`, jitted, state donated.

  The experience of step `s` is drawn from `fold_in(key, s)`, so a resumed run sees the same as an
  uninterrupted one. The learner (`learner.apply`) skips a step whose loss or gradient is not finite;
  the metrics say so. `shardings` (`state_shardings`) fixes the shardings of the train state going in
  and out; the metrics come out replicated.
  """

  def meta_step(state: TrainState, topos: tuple):
    metrics, grads, carries = objective_and_grads(state, topos, meta_batch, key)
    return learner.apply(optimizer, state, grads, metrics, carries)

  if shardings is None:
    return jax.jit(meta_step, donate_argnums=0)
  rep = sharding.replicated(meta_batch.mesh)
  return jax.jit(meta_step, in_shardings=(shardings, rep), out_shardings=(shardings, rep), donate_argnums=0)


# The meta steps of the rule a run started from (`train.init_rule`), recorded in its `config.json`: a
# rule's `meta_steps` counts every stage it was trained in (`pretrained.load_rule`).
INIT_RULE_META_STEPS = "init_rule_meta_steps"


def _write_config(workdir: str, cfg, init_rule_meta_steps: int = 0) -> None:
  """`config.json`: `{"config": ..., "environment": checkpointing.environment()}`, and for a run that
  started from a saved rule its meta steps (`INIT_RULE_META_STEPS`)."""
  record = {"config": checkpointing.config_to_dict(cfg), "environment": checkpointing.environment()}
  if config_lib.init_rule(cfg):
    record[INIT_RULE_META_STEPS] = int(init_rule_meta_steps)
  files.write_json(files.join(workdir, "config.json"), record)


def checkpoint_bytes(topos: tuple, meta_batch: MetaBatch, optimizer) -> int:
  """Bytes of one checkpoint's train state (its arrays; the metadata adds a few KiB)."""
  abstract = jax.eval_shape(lambda: init_train_state(train_key(0), topos, meta_batch, optimizer))
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))


def setup(cfg):
  """Validated topology, problem and optimizer of a config (its base problem: the one evaluated)."""
  config_lib.validate(cfg)
  topo = config_lib.make_topology(cfg)
  spec = config_lib.train_spec(cfg)
  optimizer = make_optimizer(spec.learning_rate, spec.clip_norm, spec.decay_steps)
  return topo, config_lib.problem(cfg, topo), optimizer


def setup_meta_batch(cfg):
  """`(topos, meta_batch, optimizer)` that a run of `cfg` trains: its meta-batch (`train.mixture`, or
  the config's one problem) with its estimator (`train.estimator`), validated."""
  _, _, optimizer = setup(cfg)
  estimator = config_lib.estimator_spec(cfg)
  topos, problems, batches = [], [], []
  for member in config_lib.mixture(cfg):
    topo = config_lib.make_topology(member)
    topos.append(topo)
    problems.append(config_lib.problem(member, topo))
    batches.append(config_lib.train_spec(member).batch_size)
  meta_batch = MetaBatch(tuple(problems), (estimator,) * len(problems), tuple(batches))
  try:
    meta_batch.made()
  except ValueError as e:
    field, _, message = str(e).partition(": ")
    raise config_lib.ConfigError(f"train.estimator.{field}", message) from None
  return tuple(topos), meta_batch, optimizer


def make_mesh(spec: config_lib.TrainSpec) -> jax.sharding.Mesh:
  """The `(batch, neurons)` device mesh of `spec.mesh` over every device of every process.

  Raises `config.ConfigError` if it does not fit the devices or does not split the batch.
  """
  try:
    mesh = sharding.make_mesh(*spec.mesh)
  except ValueError as e:
    field, _, message = str(e).partition(": ")
    raise config_lib.ConfigError(field, message) from e
  error = sharding.batch_size_error(spec.batch_size, mesh)
  if error:
    raise config_lib.ConfigError("train.batch_size", f"{error}; set mesh.batch to a divisor of it")
  return mesh


def on_mesh(topos: tuple, meta_batch: MetaBatch, mesh: jax.sharding.Mesh):
  """`(topos, meta_batch)` of a run on `mesh`: the topologies replicated over it, the problems split."""
  problems = tuple(dataclasses.replace(p, mesh=mesh) for p in meta_batch.problems)
  return jax.device_put(topos, sharding.replicated(mesh)), dataclasses.replace(meta_batch, problems=problems)


def initial_train_state(topos: tuple, meta_batch: MetaBatch, optimizer, seed: int, theta=None) -> TrainState:
  """A run's initial train state, made in its shardings when the meta-batch has a mesh (`on_mesh`);
  theta from the seed, or `theta` (a saved rule's, `initial_theta`)."""
  init = init_train_state if meta_batch.mesh is None else init_sharded_train_state
  return init(train_key(seed), topos, meta_batch, optimizer, theta)


# Rule fields that fix the layout of a theta; the others (message and fan-in scaling, initial values,
# implementation) may differ between a saved rule and a run that starts from it.
_RULE_LAYOUT = (
  "body_dim",
  "synapse_dim",
  "act_dim",
  "emb_dim",
  "hidden",
  "num_types",
  "bilinear",
  "error_input",
)


def initial_theta(cfg, meta_batch: MetaBatch, topos: tuple) -> tuple[rules.Theta | None, int]:
  """`(theta, meta_steps)` of the saved rule a run starts from (`train.init_rule`: a shipped rule's
  name, a saved rule or a run directory, as `pretrained.load_rule` takes), or `(None, 0)` for a run
  that starts from its seed.

  Raises `config.ConfigError` (`train.init_rule`) if there is no such rule, or if it is not a rule of
  this run's layout (sizes, neuron types). Its message and fan-in scaling may differ from the run's: a
  rule trained with "mean" messages continues under "sqrt_ref" at the same reference fan-in, say. A
  rule with fewer neuron types, one of them hidden, starts the run's extra types (a layered network's
  deeper hidden layers) as its hidden type (`rules.with_more_types`); a rule without
  `rule.error_input`, with fewer synapse state channels (`rule.synapse_dim`) or with fewer hidden
  units in its MLPs (`rule.hidden`), starts a run with it (with more) computing what it did
  (`rules.with_error_input`, `rules.with_more_synapse_state`, `rules.with_more_hidden`); with
  `train.error_init` > 0 the error's weights are drawn instead of 0.

  A rule meta-trained with other fixed random input -> hidden synapses (`net.random_input_synapses`)
  than the run's `topos` is allowed, with a warning: it is how `random_hidden` was started from
  `general`, but an evaluation that forgets the option runs the rule without the hidden features it
  learnt to use.
  """
  name = config_lib.init_rule(cfg)
  if not name:
    return None, 0
  from learned_rules import pretrained  # here: pretrained loads runs with this module

  try:
    rule = pretrained.load_rule(name)
  except (FileNotFoundError, pretrained.RuleLoadError) as e:
    raise config_lib.ConfigError("train.init_rule", str(e)) from None
  want, got = meta_batch.problems[0].rule, rule.spec
  more_types = network.HIDDEN_TYPE < got.num_types < want.num_types
  add_error = want.error_input and not got.error_input
  error_scale = config_lib.error_init(cfg)
  if error_scale and not add_error:
    raise config_lib.ConfigError(
      "train.error_init", f"{name} has rule.error_input already: its error's weights are trained, not drawn"
    )
  grown = {
    "num_types": more_types,
    "error_input": add_error,
    "synapse_dim": got.synapse_dim < want.synapse_dim,
    "hidden": got.hidden < want.hidden,
  }
  differ = [
    f"rule.{f}: {getattr(got, f)!r}, this run {getattr(want, f)!r}"
    for f in _RULE_LAYOUT
    if getattr(got, f) != getattr(want, f) and not grown.get(f)
  ]
  if differ or network.SYNAPSE_WEIGHTS in rule.theta:
    why = "; ".join(differ) or "it is a net.trained_synapses run (a trained network, not a rule)"
    raise config_lib.ConfigError("train.init_rule", f"{name} is not a rule of this run's form: {why}")
  inputs_differ = network.fixed_inputs_differ(rule.topology, topos)
  if inputs_differ:
    trained = rule.topology.random_input_synapses
    logging.warning(
      "%s: %s. To run it as trained, add --config.net.random_input_synapses=%s "
      "(--config.base.net.random_input_synapses=%s in the capacity command)",
      name,
      inputs_differ,
      trained,
      trained,
    )
  theta = jax.tree.map(jax.numpy.asarray, rule.theta)
  seed_key = jax.random.PRNGKey(config_lib.train_spec(cfg).seed)  # of the weights a grown rule draws
  if more_types:
    theta = rules.with_more_types(theta, want.num_types, like=network.HIDDEN_TYPE)
  if add_error:
    key = jax.random.fold_in(seed_key, 1) if error_scale else None
    theta = rules.with_error_input(theta, want.act_dim, error_scale, key)
  if grown["synapse_dim"]:
    theta = rules.with_more_synapse_state(theta, want, jax.random.fold_in(seed_key, 2))
  if grown["hidden"]:
    theta = rules.with_more_hidden(theta, want, seed_key)
  return theta, rule.meta_steps


def make_run_meta_step(topos: tuple, meta_batch: MetaBatch, optimizer, seed: int):
  """The meta step a run trains with: `make_meta_step` on the run's step key, with the train state's
  shardings fixed when the meta-batch has a mesh."""
  shardings = None if meta_batch.mesh is None else state_shardings(topos, meta_batch, optimizer)
  return make_meta_step(meta_batch, optimizer, step_key(seed), shardings)


def _latest_or_initial_state(
  seed: int, ckpt, topos, meta_batch, optimizer, set_aside: bool = False, theta=None
):
  """`(state, step)`: the newest intact checkpoint's train state and step, or the initial state (from
  `theta` if given) and None if `ckpt` holds none; on the mesh's shardings when the meta-batch has one
  (a checkpoint restores onto any mesh). Damaged newer checkpoints are warned about and, with
  `set_aside` (the trainer), moved out of the way so their steps can be saved again."""
  state = initial_train_state(topos, meta_batch, optimizer, seed, theta)
  restored, step, damaged = ckpt.restore_latest(state)
  for bad in damaged if set_aside else ():
    logging.warning("damaged checkpoint step %d moved to %s", bad, ckpt.set_aside(bad))
  return (state, None) if restored is None else (restored, step)


class StopRequest:
  """Within `with`: a preemption notice (SIGTERM) makes `reached(step)` true at a step where the run
  saves a checkpoint and stops, instead of killing the process.

  One process: SIGTERM sets a flag (main thread only: signal handlers can be installed nowhere else),
  and the run stops after the meta step in flight. Several processes (`jax.distributed`): the notice
  reaching any one of them is shared through JAX's preemption sync service, and `reached` turns true on
  every process at the same step (the largest step any process had reached, plus one), so that all of
  them save that one step and stop; no Python handler is installed then, as the service catches
  SIGTERM itself. `reached(step)` must be called at every meta step, by every process.
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    self.coordinated = jax.process_count() > 1

  def _handle(self, signum, frame):
    del frame
    self.requested = True
    logging.warning("signal %d: saving a checkpoint after this meta step, then stopping", signum)

  def reached(self, step: int) -> bool:
    """Whether the run saves `step` and stops there (the same answer on every process)."""
    if self.coordinated:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def __enter__(self):
    if not self.coordinated and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _check_finite(limit: int, done: int, step_metrics, label: str) -> None:
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
  if streak >= limit:
    raise NonFiniteError(
      f"step {done}: {streak} meta steps in a row (steps {done - streak + 1} to {done}) had a non-finite "
      f"loss or gradient (train.max_nonfinite_steps = {limit}); stopped without saving, the last "
      "checkpoint is as it was. Lower train.learning_rate or train.clip_norm and start a new run."
    )


class Curve(NamedTuple):
  """Held-out evaluations during training: after each meta step of `steps` (0: before the first),
  `evaluate(theta) -> {name: value}` is recorded in metrics.jsonl with the training wall and CPU
  seconds so far (`train_wall_s`, `train_cpu_s`: evaluation, compilation and checkpoints excluded,
  carried across resumes)."""

  steps: frozenset
  evaluate: Callable[[rules.Theta], dict]


class _TrainClock:
  """Wall and CPU seconds spent in meta steps only, continued from the last curve record of a resumed run."""

  def __init__(self, records: list[dict]):
    last = [r for r in records if "train_wall_s" in r]
    self.wall = last[-1]["train_wall_s"] if last else 0.0
    self.cpu = last[-1]["train_cpu_s"] if last else 0.0

  def run(self, fn, *args):
    w, c = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn(*args))
    self.wall += time.perf_counter() - w
    self.cpu += time.process_time() - c
    return out


def _record_curve(writer, curve: Curve | None, clock: _TrainClock, done: int, theta) -> None:
  if curve is not None and done in curve.steps:
    values = curve.evaluate(theta)
    writer.write(done, train_wall_s=clock.wall, train_cpu_s=clock.cpu, **values)


def _train_loop(
  spec: config_lib.TrainSpec, cfg, workdir, ckpt, state: TrainState, meta_step, topos, label, curve
):
  """Meta steps up to `spec.num_steps`, with metrics (metrics.jsonl and, on process 0, TensorBoard
  event files in `workdir`), progress, checkpoints (each with `cfg`, for provenance) and the `curve`
  evaluations; stops early with `NonFiniteError` or (after saving) `Preempted`."""
  main = jax.process_index() == 0  # only the first process of a multi-host run logs
  writer = metrics_lib.MetricsWriter(workdir, events=main)
  try:
    return _run_steps(spec, cfg, ckpt, state, meta_step, topos, label, curve, writer, main)
  finally:
    writer.close()


def _run_steps(spec, cfg, ckpt, state, meta_step, topos, label, curve, writer, main: bool):
  num_steps = spec.num_steps
  first = int(state.step)
  clock = _TrainClock(metrics_lib.read_metrics(writer.path) if curve and files.exists(writer.path) else [])
  if main and first == 0:
    _record_curve(writer, curve, clock, 0, state.theta)
  if first < num_steps and hasattr(meta_step, "lower"):
    # Compiled before the clocks start, so that the first ETA (and a curve's clock) is the steps' own.
    logging.info("%scompiling the meta step ...", label)
    start = time.perf_counter()
    meta_step = meta_step.lower(state, topos).compile()
    compile_s = time.perf_counter() - start
    logging.info("%scompiled in %.1f s; training steps %d to %d", label, compile_s, first + 1, num_steps)
    if main:  # a curve's metrics.jsonl keeps it too (`write` also writes it to the event file)
      (writer.write if curve is not None else writer.write_events)(first, compile_s=compile_s)
  progress = metrics_lib.Progress(num_steps, first, label)
  with StopRequest() as stop:
    for step in range(first, num_steps):
      if curve is None:
        state, step_metrics = meta_step(state, topos)
      else:  # timed alone, so that the curve's clocks hold training only
        state, step_metrics = clock.run(meta_step, state, topos)
      done = step + 1
      _check_finite(spec.max_nonfinite_steps, done, step_metrics, label)
      if main and (done % spec.log_every == 0 or done == num_steps):
        scalars = jax.device_get(step_metrics)
        writer.write(done, **scalars)
        progress.update(done, scalars["loss"], scalars["bit_accuracy"])
        writer.write_events(done, steps_per_s=progress.rate)
      if main:
        _record_curve(writer, curve, clock, done, state.theta)
      stopping = stop.reached(done) and done < num_steps
      if done % spec.checkpoint_every == 0 or done == num_steps or stopping:
        ckpt.save(done, state, cfg)
      if stopping:
        progress.close()
        raise Preempted(f"stopped by SIGTERM after step {done}, saved in {ckpt.directory}; rerun to resume")
  progress.close()
  if ckpt.latest_step() is None:  # num_steps == 0: still leave a restorable run behind.
    ckpt.save(int(state.step), state, cfg)
  return state


def load_run(workdir: str):
  """`(cfg, topo, train_state)` of the latest checkpoint in `workdir`, with the config saved beside it
  (`topo`: the config's own network, the first of a meta-batch).

  Raises FileNotFoundError if `workdir` holds no checkpoint (and creates nothing).
  """
  ckpt = checkpointing.Checkpointer(workdir, create=False)
  try:
    step, saved = ckpt.newest_config()
    if step is None:
      if ckpt.all_steps():
        raise checkpointing.DamagedCheckpointError(f"{ckpt.directory}: no checkpoint has a readable config")
      raise FileNotFoundError(f"no checkpoint in {ckpt.directory}; run experiments.remember first")
    cfg = config_lib.from_dict(saved)
    topos, meta_batch, optimizer = setup_meta_batch(cfg)
    seed = config_lib.train_spec(cfg).seed
    return cfg, topos[0], _latest_or_initial_state(seed, ckpt, topos, meta_batch, optimizer)[0]
  finally:
    ckpt.close()


def _train(cfg, workdir: str, label: str, curve: Curve | None) -> TrainState:
  """The training half of `train_and_evaluate`: returns the final train state."""
  topos, meta_batch, optimizer = setup_meta_batch(cfg)
  spec = config_lib.train_spec(cfg)
  mesh = make_mesh(spec)
  main = jax.process_index() == 0
  # A missing or foreign `train.init_rule` is refused before anything is written.
  start_theta, start_steps = initial_theta(cfg, meta_batch, topos)
  needed = checkpoint_bytes(topos, meta_batch, optimizer) * (spec.max_to_keep + 1)
  checkpointing.check_workdir(workdir, needed + 2**20)
  mesh_topos, sharded = on_mesh(topos, meta_batch, mesh)
  ckpt = checkpointing.Checkpointer(workdir, spec.max_to_keep)
  try:
    ckpt.check_compatible(cfg)
    state, resumed_step = _latest_or_initial_state(
      spec.seed, ckpt, mesh_topos, sharded, optimizer, main, start_theta
    )
    if resumed_step is None and start_theta is not None:
      logging.info("%sstarting from the rule %s", label, config_lib.init_rule(cfg))
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
      _write_config(workdir, cfg, start_steps)
    logging.info("%s%s", label, sharding.describe(mesh))
    meta_step = make_run_meta_step(mesh_topos, sharded, optimizer, spec.seed)
    return _train_loop(spec, cfg, workdir, ckpt, state, meta_step, mesh_topos, label, curve)
  finally:
    ckpt.close()


def evaluate_problem(spec: config_lib.TrainSpec, theta, topo, problem) -> dict:
  """Held-out recall of `theta` on `problem` (`spec.eval_episodes` episodes of `spec.seed`), and the
  largest absolute body and synapse state over episodes `STATE_HORIZON` times longer than training."""
  results = evaluate_lib.evaluate(theta, topo, problem, evaluate_lib.eval_key(spec.seed), spec.eval_episodes)
  bounds_key = jax.random.fold_in(evaluate_lib.eval_key(spec.seed), STATE_HORIZON)
  batch = min(spec.eval_episodes, evaluate_lib.STATE_BOUNDS_BATCH)
  results.update(evaluate_lib.state_bounds(theta, topo, problem, bounds_key, batch, STATE_HORIZON))
  return results


def train_and_evaluate(
  cfg, workdir: str, label: str = "", evaluate: bool = True, curve: Curve | None = None
) -> dict:
  """Meta-trains `cfg` in `workdir` (resuming if it holds a checkpoint) and evaluates the result.

  Returns the held-out recall metrics (none with `evaluate=False`, for callers that evaluate the run
  their own way) and the largest absolute body and synapse state over episodes `STATE_HORIZON` times
  longer than training (`max_abs_body`, `max_abs_synapse`), plus `meta_steps` and `wall_seconds` (of
  this invocation). A meta-batch of several problems (`train.mixture`) reports the mean over them and
  each one's under `members`.
  Raises `config.ConfigError` before anything is compiled or written if `cfg` is invalid,
  `checkpointing.WorkdirError` before training if `workdir` cannot be written or is too full,
  `checkpointing.IncompatibleCheckpointError` if `workdir` holds a run of another config or state
  layout, `checkpointing.DamagedCheckpointError` if it holds checkpoints but none is intact,
  `NonFiniteError` and `Preempted` (see the module docstring).
  """
  start = time.perf_counter()
  state = _train(cfg, workdir, label, curve)
  if not evaluate:
    return {"meta_steps": int(state.step), "wall_seconds": time.perf_counter() - start}
  # Held-out evaluation on each process's own default device (theta is replicated, so every process
  # has it whole and computes the same numbers).
  theta = jax.device_get(state.theta)
  members = config_lib.mixture(cfg)
  if len(members) == 1:
    topo, problem, _ = setup(cfg)
    results = evaluate_problem(config_lib.train_spec(cfg), theta, topo, problem)
  else:
    each = [evaluate_problem(config_lib.train_spec(m), theta, *setup(m)[:2]) for m in members]
    results = {k: float(sum(e[k] for e in each) / len(each)) for k in each[0]}
    results["members"] = each
  results.update(meta_steps=int(state.step), wall_seconds=time.perf_counter() - start)
  if jax.process_index() == 0:
    scalars = {f"eval_{k}": v for k, v in results.items() if k != "members"}
    writer = metrics_lib.MetricsWriter(workdir, events=True)
    writer.write(int(state.step), **scalars)
    writer.close()
  return results
