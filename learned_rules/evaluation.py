"""Recall metrics on held-out episodes, recall against K, and capacity."""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from learned_rules import network, rules, tasks, unroll

# Evaluation keys are folded from the run's seed with this tag; training uses tag 0.
EVAL_TAG = 1
STREAM_EVAL_WINDOWS = 4
STATE_BOUNDS_BATCH = 16  # networks `state_bounds` runs (each through 10 episodes), at most
# The metric of one value per step of every episode (`unroll.step_bit_accuracy`, `[..., B, T]`), which
# `mean_over_batches` keeps whole and `with_interval` turns into a 95 % bootstrap interval.
PER_STEP = "step_bit_accuracy"
# A record's recall of the queries for the snippet stored at each position, the oldest first
# (`recall_by_position`).
BY_POSITION = "bit_accuracy_by_position"
# The stored position of the snippet each query asks for (`tasks.query_order`), `[..., B, Q]` (-1 past
# a task's own Q): kept whole as PER_STEP is, for `records_over_k` to turn into BY_POSITION.
QUERY_ORDER = "query_order"
BOOTSTRAP_RESAMPLES = 2000


@functools.partial(jax.jit, static_argnames=("problem", "batch"))
def eval_batch(
  theta: rules.Theta, topo: network.Topology, key: jax.Array, problem: unroll.Problem, batch: int
) -> dict[str, jax.Array]:
  """Recall metrics of `batch` held-out episodes (or fresh streams run for a few windows)."""
  if problem.task.protocol != "streaming":
    return unroll.episode_objective(theta, topo, problem, key, batch)[1]
  carry = unroll.init_stream_carry(theta, topo, problem, key, batch)

  def window(carry, _):
    _, (metrics, carry) = unroll.stream_objective(theta, topo, problem, carry)
    return carry, metrics

  _, per_window = jax.lax.scan(window, carry, None, length=STREAM_EVAL_WINDOWS)
  return jax.tree.map(jnp.mean, per_window)


def held_out_episodes(key: jax.Array, specs: tuple, batch: int) -> tuple[tasks.Episode, jax.Array]:
  """The `batch` episodes that `eval_batch` draws from `key` for each task of `specs` (episode tasks
  that differ only in K), padded at the end with blank, unscored steps to the longest and stacked
  `[len(specs), B, T, ...]`, and the key the network draws its initial states from."""
  episodes, k_state, _ = held_out_draw(key, specs, batch)
  return episodes, k_state


@functools.partial(jax.jit, static_argnames=("specs", "batch"))
def held_out_draw(key: jax.Array, specs: tuple, batch: int) -> tuple[tasks.Episode, jax.Array, jax.Array]:
  """`held_out_episodes`, and the stored position each of their queries asks for, `[len(specs), B, Q]`
  (`QUERY_ORDER`, Q the largest of `specs`).

  A jitted function of its own: a sweep over K evaluates the network and every baseline on these
  episodes, and drawing them compiles about as long as the network's whole evaluation.
  """
  steps = max(spec.episode_steps for spec in specs)
  queries = max(spec.num_queries for spec in specs)
  k_ep, k_state = jax.random.split(key)  # as unroll.episode_objective
  keys = jax.random.split(k_ep, batch)
  drawn = [jax.vmap(tasks.sample_episode, in_axes=(0, None))(keys, spec) for spec in specs]
  episodes = jax.tree.map(lambda *a: jnp.stack(a), *[tasks.pad_episodes(e, steps) for e in drawn])
  orders = [jax.vmap(tasks.query_order, in_axes=(0, None))(keys, spec) for spec in specs]
  pad = lambda o: jnp.pad(o, ((0, 0), (0, queries - o.shape[1])), constant_values=-1)  # noqa: E731
  return episodes, k_state, jnp.stack([pad(o) for o in orders])


def eval_batch_over_k(
  theta: rules.Theta, topo: network.Topology, key: jax.Array, problems: tuple, batch: int
) -> dict[str, jax.Array]:
  """Recall metrics `{name: [len(problems)]}`: `eval_batch` of every problem of `problems` (episode
  problems that differ only in K) on the same episodes and initial states, in one program that runs
  the network for each K's own number of steps: a sweep over K compiles once."""
  first = problems[0]
  for p in problems:
    if p.task.protocol == "streaming" or dataclasses.replace(p, task=first.task) != first:
      raise ValueError("eval_batch_over_k: problems must be episode problems that differ only in K")
  episodes, k_state, orders = held_out_draw(key, tuple(p.task for p in problems), batch)
  lengths = jnp.asarray([p.task.episode_steps for p in problems], jnp.int32)
  return {**_eval_padded(theta, topo, episodes, lengths, k_state, first), QUERY_ORDER: orders}


def readouts_for(theta, topo, problem: unroll.Problem, states: network.NetState, xs: jax.Array, length):
  """Readouts `[B, T, n_out]` of networks in `states` (`[B, ...]`) run on inputs `xs` `[B, T, N]` for
  their first `length` steps only (a traced trip count: a padded episode costs its own steps, and
  another length no compilation); the readouts of later steps are 0."""
  run = functools.partial(unroll.unroll, theta, topo, problem, length=length)
  return jax.vmap(run)(states, xs)[1]


@functools.partial(jax.jit, static_argnames=("problem",))
def _eval_padded(theta, topo, episodes: tasks.Episode, lengths: jax.Array, k_state: jax.Array, problem):
  """Metrics of padded episodes `[K, B, T, ...]`, each group run for its own `lengths[k]` steps (a
  loop with a run-time trip count: padding costs no steps, and a new K no compilation)."""
  states = unroll.init_batch_states(theta, topo, problem, k_state, episodes.score.shape[1])

  def one_k(args):
    episode, length = args
    readout = readouts_for(theta, topo, problem, states, episode.x, length)
    loss = unroll.readout_loss(readout, episode, problem.loss)
    per_step = {PER_STEP: unroll.step_bit_accuracy(readout, episode)}
    return {"loss": loss, **unroll.recall_metrics(readout, episode), **per_step}

  return jax.lax.map(one_k, (episodes, lengths))


def evaluate(
  theta: rules.Theta,
  topo: network.Topology,
  problem: unroll.Problem,
  key: jax.Array,
  num_episodes: int,
  batch: int = 64,
) -> dict[str, float]:
  """Mean recall metrics over exactly `num_episodes` held-out episodes, in batches of at most `batch`.

  For `streaming`, an episode is a fresh stream run for `STREAM_EVAL_WINDOWS` windows.
  """
  return mean_over_batches(lambda k, n: eval_batch(theta, topo, k, problem, n), key, num_episodes, batch)


def mean_over_batches(eval_fn, key: jax.Array, num_episodes: int, batch: int = 64) -> dict[str, float]:
  """Episode-weighted mean of `eval_fn(fold_in(key, i), n)` metrics over batches of at most `batch`
  episodes, `num_episodes` in all: the batching every held-out evaluation shares, so that the network
  and the baselines see the same episodes for the same key. Array metrics (several K at once) keep their
  shape."""
  sizes = [batch] * (num_episodes // batch) + ([num_episodes % batch] if num_episodes % batch else [])
  results = [eval_fn(jax.random.fold_in(key, i), n) for i, n in enumerate(sizes)]
  means = {
    k: np.average(np.stack([np.asarray(r[k]) for r in results]), axis=0, weights=sizes)
    for k in results[0]
    if k not in (PER_STEP, QUERY_ORDER)
  }
  for k in (PER_STEP, QUERY_ORDER):  # kept whole: `[..., B, T]`, the batches' episodes one after another
    if k in results[0]:
      means[k] = np.concatenate([np.asarray(r[k]) for r in results], axis=-2)
  return {k: float(v) if v.ndim == 0 else v for k, v in means.items()}


def resample_indices(num_units: int, resamples: int = BOOTSTRAP_RESAMPLES) -> np.ndarray:
  """`[resamples, num_units]` unit indices drawn with replacement from a fixed seed, so the same units
  give the same interval (and memories resampled with the same indices give paired intervals)."""
  return np.random.default_rng(0).integers(0, num_units, (resamples, num_units))


def percentile_interval(samples, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
  """`(low, high)` `[...]`: the percentile interval of bootstrap statistics `[R, ...]`, leaving out the
  NaN of a resample that has none there (NaN where every one is)."""
  tail = 100 * (1 - confidence) / 2
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN
    return np.nanpercentile(samples, tail, axis=0), np.nanpercentile(samples, 100 - tail, axis=0)


def bootstrap_interval(values, confidence: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES):
  """`(low, high)`: the percentile bootstrap interval of the mean of `values` (units of equal weight),
  from a fixed seed, so the same values give the same interval."""
  values = np.asarray(values, np.float64)
  means = values[resample_indices(len(values), resamples)].mean(axis=1)
  low, high = percentile_interval(means, confidence)
  return float(low), float(high)


def scored_bits(spec: tasks.TaskSpec, num_episodes: int) -> int:
  """Bits scored over `num_episodes` episodes of the episode task `spec`."""
  return int(num_episodes * spec.num_queries * tasks.query_score(spec).sum() * spec.n_out)


def query_bit_accuracy(per_step, spec: tasks.TaskSpec) -> np.ndarray:
  """Bit accuracy of every query of every episode, `[B * Q]`, from `unroll.step_bit_accuracy` `[B, T]`
  (NaN off the scored steps, which come query after query at the end of an episode)."""
  per_step = np.asarray(per_step)
  scored = per_step[~np.isnan(per_step)]
  return scored.reshape(-1, int(tasks.query_score(spec).sum())).mean(axis=1)


def recall_by_position(per_step, order, spec: tasks.TaskSpec) -> list[float | None]:
  """`[K]` bit accuracy of the queries for the snippet stored at each position (0: the first stored,
  the oldest at recall), from `per_step` `[B, T]` and `order` `[B, Q]` (`QUERY_ORDER`); None
  for a position no query asked for."""
  accuracy = query_bit_accuracy(per_step, spec)
  order = np.asarray(order).reshape(-1)
  if accuracy.shape != order.shape:
    raise ValueError(f"recall_by_position: {accuracy.shape[0]} scored queries for {order.shape[0]} in order")
  total = np.bincount(order, weights=accuracy, minlength=spec.num_snippets)
  count = np.bincount(order, minlength=spec.num_snippets)
  return [float(t / c) if c else None for t, c in zip(total, count, strict=True)]


def with_interval(record: dict, per_step, spec: tasks.TaskSpec) -> dict:
  """`record` with its episode count, scored bits and the 95 % bootstrap interval of its bit accuracy
  (`bit_accuracy_low`, `_high`) from `per_step` (`[B, T]`). The unit resampled is one query of one
  episode: at N = 1024 a single episode holds over 30,000 scored bits, too few episodes to resample."""
  low, high = bootstrap_interval(query_bit_accuracy(per_step, spec))
  n = len(per_step)
  return {
    **record,
    "bit_accuracy_low": low,
    "bit_accuracy_high": high,
    "episodes": n,
    "scored_bits": scored_bits(spec, n),
  }


def records_over_k(means: dict, specs) -> list[dict]:
  """One record per task of `specs` (tasks that differ in K) from `mean_over_batches` metrics over K:
  its K, mean metrics, and bootstrap interval (`with_interval`); with `QUERY_ORDER` in `means`, also
  `BY_POSITION` (`recall_by_position`)."""
  per_step, orders = means.pop(PER_STEP), means.pop(QUERY_ORDER, None)
  records = []
  for i, spec in enumerate(specs):
    record = {"K": int(spec.num_snippets), **{name: float(v[i]) for name, v in means.items()}}
    if orders is not None:
      record[BY_POSITION] = recall_by_position(per_step[i], orders[i][:, : spec.num_queries], spec)
    records.append(with_interval(record, per_step[i], spec))
  return records


def _long_inputs(key: jax.Array, problem: unroll.Problem, batch: int, horizon: int) -> jax.Array:
  """`[B, horizon * T, N]` inputs: `horizon` fresh episodes back to back (T = episode steps), or the
  next `horizon` windows (T = W) of fresh streams."""
  task = problem.task
  if task.protocol != "streaming":
    keys = jax.random.split(key, (batch, horizon))
    x = jax.vmap(jax.vmap(tasks.sample_episode, in_axes=(0, None)), in_axes=(0, None))(keys, task).x
    return x.reshape(batch, horizon * task.episode_steps, -1)
  positions = tasks.init_stream_positions(key, task, batch)

  def window(pos, _):
    episodes, pos = jax.vmap(tasks.sample_stream_window, in_axes=(0, None))(pos, task)
    return pos, episodes.x

  _, xs = jax.lax.scan(window, positions, None, length=horizon)  # [horizon, B, W, N]
  return jnp.moveaxis(xs, 0, 1).reshape(batch, horizon * task.window, -1)


@functools.partial(jax.jit, static_argnames=("problem", "batch", "horizon"))
def _state_bounds(theta, topo, key, problem: unroll.Problem, batch: int, horizon: int):
  k_x, k_state = jax.random.split(key)
  xs = _long_inputs(k_x, problem, batch, horizon)
  states = unroll.init_batch_states(theta, topo, problem, k_state, batch)
  run = functools.partial(unroll.unroll, theta, topo, problem, record=unroll.state_bounds)
  _, (_, max_body, max_synapse) = jax.vmap(run)(states, xs)  # [B, T] each
  start_body, start_synapse = network.max_abs_state(states)
  # jnp.max and jnp.maximum keep a NaN (jnp.fmax would skip it), so a state that blew up reports NaN.
  return {
    "max_abs_body": jnp.maximum(start_body, jnp.max(max_body)),
    "max_abs_synapse": jnp.maximum(start_synapse, jnp.max(max_synapse)),
  }


def state_bounds(
  theta: rules.Theta,
  topo: network.Topology,
  problem: unroll.Problem,
  key: jax.Array,
  batch: int,
  horizon: int = 10,
) -> dict[str, float]:
  """The largest absolute body and synapse state (`max_abs_body`, `max_abs_synapse`) of `batch`
  networks run, without a reset, through `horizon` times the steps of one training episode (`horizon`
  fresh episodes back to back; for streaming, `horizon` windows of fresh streams), and `horizon_steps`.

  A NaN or inf anywhere in the states comes out as NaN or inf: a rule whose state blows up on long
  unrolls shows it here (docs/RELIABILITY.md).
  """
  bounds = jax.device_get(_state_bounds(theta, topo, key, problem, batch, horizon))
  return {
    **{k: float(v) for k, v in bounds.items()},
    "horizon_steps": float(horizon * problem.task.episode_steps),
  }


def eval_key(seed: int) -> jax.Array:
  return jax.random.fold_in(jax.random.PRNGKey(seed), EVAL_TAG)


def recall_vs_k(
  theta: rules.Theta,
  topo: network.Topology,
  problem: unroll.Problem,
  k_values,
  num_episodes: int,
  key: jax.Array,
) -> list[dict]:
  """Recall metrics of `problem` at every K in `k_values` (all K snippets queried), one record per K."""
  problems = tuple(
    dataclasses.replace(problem, task=tasks.with_snippets(problem.task, int(k))) for k in k_values
  )
  eval_fn = lambda k, n: eval_batch_over_k(theta, topo, k, problems, n)  # noqa: E731
  return records_over_k(mean_over_batches(eval_fn, key, num_episodes), [p.task for p in problems])


def capacity(records: list[dict], threshold: float) -> int:
  """Largest K whose mean bit accuracy is at least `threshold` (0 if none); docs/DESIGN.md's capacity."""
  ks = [r["K"] for r in records if r["bit_accuracy"] >= threshold]
  return max(ks, default=0)
