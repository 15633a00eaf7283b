"""Classical memories run on exactly the episodes the learned rule sees, for comparison.

Each baseline reads an `Episode` the way the network does: at every step, the key bits on the input
neurons and the teaching bits on the output neurons (`tasks.TaskSpec` says how many of each), and it
returns readouts `[T, n_out]` scored by `unroll.recall_metrics` exactly like the network's.

- `key_blind`: the best answer that ignores the cue, `sign` of the sum of the values taught so far (the
  per-bit majority of the stored values). A memory that scores no more than it uses the key not at all.
  Its expected bit accuracy, ties scored half a bit, is 0.750, 0.6875, 0.6367, 0.6128 and 0.5982 at
  K = 2, 4, 8, 12 and 16 (`key_blind_accuracy`).
- `hebbian`: the outer-product (correlation-matrix) memory `W += value key^T` at every step with a
  teaching input, with every synapse the network has: in `auto` the input i -> output i term stays,
  because a `full` network has that synapse. `decay` < 1 makes it a palimpsest.
- `hopfield`: the classical Hopfield memory, `hebbian` with W's diagonal dropped (in `auto` only; on
  `hetero` it is `hebbian`), read out in one step.
- `pseudo_inverse`: the best linear store, `W = V K^+` over every stored step (the least-squares
  solution the delta rule converges to).

Theory for `hopfield` on `auto` (one-step recall of K random +-1 patterns of n bits from a cue with m
bits left): a bit's signal is m, its cross-talk from the other patterns has standard deviation
sqrt(K m), so the bit error is about `Phi(-sqrt(m / K))`. With half the bits zeroed (m = n / 2), 0.99
bit accuracy holds up to K = n / (2 x 2.33^2) = 0.092 n; tests/test_baselines.py checks the measured
capacity against 0.08 n to 0.16 n.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from learned_rules import evaluation as evaluate_lib
from learned_rules import tasks, unroll

BASELINES = ("key_blind", "hebbian", "hopfield", "pseudo_inverse")


def split_input(episode: tasks.Episode, spec: tasks.TaskSpec) -> tuple[jax.Array, jax.Array]:
  """The key bits `[T, n_in]` and teaching bits `[T, n_out]` of an episode's input `[T, N]`."""
  x = episode.x
  return x[:, : spec.n_in], x[:, spec.n_in : spec.n_in + spec.n_out]


def key_blind(episode: tasks.Episode, spec: tasks.TaskSpec) -> jax.Array:
  """Readouts `[T, n_out]` of the best answer that ignores the cue: at step t, the sum of the teaching
  bits of steps 0..t, whose sign is the per-bit majority of the values stored so far (each snippet
  counts once per presentation step, the same for all). Exactly 0 on a tie, scored half a bit."""
  _, teach = split_input(episode, spec)
  return jnp.cumsum(teach, axis=0)


def key_blind_accuracy(num_snippets: int) -> float:
  """Expected bit accuracy of `key_blind` asked for one of K stored random +-1 values, ties half a bit:
  the asked bit plus the sum of the other K - 1 (a symmetric walk S) has the asked bit's sign when
  S > -1, and ties when S = -1."""
  k = num_snippets - 1
  p = lambda j: math.comb(k, j) / 2**k  # noqa: E731  P(j of the other bits agree); S = 2 j - k
  return sum(p(j) for j in range(k + 1) if 2 * j - k > -1) + 0.5 * sum(
    p(j) for j in range(k + 1) if 2 * j - k == -1
  )


def outer_product(features: jax.Array, teach: jax.Array, decay: float = 1.0) -> jax.Array:
  """Readouts `[T, n_out]` of the outer-product memory on `features` `[T, F]`, online: at step t,
  `W_t = decay W_{t-1} + teach_t features_t^T` and the readout is `W_t features_t`. Written in closed
  form, `R = (D o tril(F F^T)) V`, with `D[t, s] = decay^(t - s)`."""
  return (_decay_weights(features.shape[0], decay) * (features @ features.T)) @ teach


def _decay_weights(t: int, decay: float) -> jax.Array:
  """`[T, T]`: `decay^(t - s)` for `s <= t`, else 0."""
  lag = jnp.arange(t)[:, None] - jnp.arange(t)[None, :]
  return jnp.where(lag >= 0, jnp.power(decay, jnp.maximum(lag, 0)), 0.0)


def hebbian(
  episode: tasks.Episode, spec: tasks.TaskSpec, decay: float = 1.0, diagonal: bool = True
) -> jax.Array:
  """Readouts `[T, n_out]` of the outer-product memory on the key bits (`outer_product`): at step t,
  `W_t = decay W_{t-1} + teach_t key_t^T` and the readout is `W_t key_t`; `diagonal=False` drops W's
  diagonal in `auto` (`hopfield`)."""
  keys, teach = split_input(episode, spec)
  readout = outer_product(keys, teach, decay)
  if spec.protocol == "auto" and not diagonal:  # sum_s weight[t, s] teach_s o key_s o key_t
    readout = readout - (_decay_weights(keys.shape[0], decay) @ (teach * keys)) * keys
  return readout


def hopfield(episode: tasks.Episode, spec: tasks.TaskSpec) -> jax.Array:
  """`hebbian` without W's diagonal in `auto`: the classical Hopfield memory read out in one step."""
  return hebbian(episode, spec, diagonal=False)


def pseudo_inverse(episode: tasks.Episode, spec: tasks.TaskSpec) -> jax.Array:
  """Readouts `[T, n_out]` of `W = V K^+`, fitted on every step with a teaching input (the least-squares,
  minimum-norm linear map from the stored keys to their values), applied to every step's key. The
  pseudo-inverse comes from an SVD, so rank-deficient key sets (K < n_in, repeated steps) are exact."""
  keys, teach = split_input(episode, spec)
  stored = jnp.any(teach != 0, axis=-1, keepdims=True)
  w_t = jnp.linalg.pinv(keys * stored) @ (teach * stored)  # [n_in, n_out]
  return keys @ w_t


_READOUTS = {
  "key_blind": key_blind,
  "hebbian": hebbian,
  "hopfield": hopfield,
  "pseudo_inverse": pseudo_inverse,
}


def sample_episodes(spec: tasks.TaskSpec, key: jax.Array, batch: int) -> tuple[tasks.Episode, jax.Array]:
  """The `batch` episodes `[B, ...]` that `unroll.episode_objective` gives the network for `key`, and
  one key per episode `[B]` from the other half of the key's split (the half the network draws its
  initial states from), for baselines that initialise something per episode."""
  k_ep, k_init = jax.random.split(key)  # as unroll.episode_objective
  episodes = jax.vmap(tasks.sample_episode, in_axes=(0, None))(jax.random.split(k_ep, batch), spec)
  return episodes, jax.random.split(k_init, batch)


@functools.partial(jax.jit, static_argnames=("name", "spec", "batch"))
def eval_batch(name: str, spec: tasks.TaskSpec, key: jax.Array, batch: int) -> dict[str, jax.Array]:
  """Recall metrics of baseline `name` over `batch` episodes drawn from `key`: the very episodes that
  `evaluate.eval_batch` (through `unroll.episode_objective`) gives the network for the same key."""
  if name not in _READOUTS:
    raise ValueError(f"baseline: unknown name {name!r}; one of {BASELINES}")
  episodes, _ = sample_episodes(spec, key, batch)
  readout = jax.vmap(_READOUTS[name], in_axes=(0, None))(episodes, spec)
  return unroll.recall_metrics(readout, episodes)


def evaluate(name: str, spec: tasks.TaskSpec, key: jax.Array, num_episodes: int, batch: int = 64) -> dict:
  """Mean recall metrics of baseline `name` over exactly the held-out episodes `evaluate.evaluate`
  gives the network for the same key (same batches, same keys)."""
  return evaluate_lib.mean_over_batches(lambda k, n: eval_batch(name, spec, k, n), key, num_episodes, batch)


def stream_key_blind(episodes: tasks.Episode, start: tasks.StreamPosition, spec: tasks.TaskSpec) -> jax.Array:
  """Readouts `[T, n_out]` of the key-blind floor on one stream's consecutive windows, concatenated
  (`episodes` `[T, ...]`, the stream at `start` before them): at a step of slot s, the sum of the
  teaching bits of slots `max(s - Dmax, first_slot) .. s - 1`, whose sign is the per-bit majority of the
  values a query of slot s can ask for (lags 1..Dmax, equally likely; a slot the stream did not see
  whole is never asked). Exactly 0 on a tie."""
  _, teach = split_input(episodes, spec)
  slot = (start.t + jnp.arange(teach.shape[0])) // spec.slot_steps
  asked = slot[:, None] - slot[None, :]  # lag of step j's slot from step i's
  candidate = (asked >= 1) & (asked <= spec.max_lag) & (slot[None, :] >= start.first_slot)
  return candidate.astype(teach.dtype) @ teach


@functools.partial(jax.jit, static_argnames=("spec", "batch"))
def stream_key_blind_batch(spec: tasks.TaskSpec, key: jax.Array, batch: int) -> dict[str, jax.Array]:
  """Recall metrics of the streaming key-blind floor on the `batch` fresh streams that
  `evaluate.eval_batch` runs the network on for `key`, `STREAM_EVAL_WINDOWS` windows each, averaged
  over the windows as it averages the network's."""
  starts = tasks.init_stream_positions(jax.random.split(key)[1], spec, batch)  # as unroll.init_stream_carry
  positions, windows = starts, []
  for _ in range(evaluate_lib.STREAM_EVAL_WINDOWS):
    episodes, positions = jax.vmap(tasks.sample_stream_window, in_axes=(0, None))(positions, spec)
    windows.append(episodes)
  whole = jax.tree.map(lambda *w: jnp.concatenate(w, axis=1), *windows)  # [B, windows x W, ...]
  readout = jax.vmap(stream_key_blind, in_axes=(0, 0, None))(whole, starts, spec)
  per_window = [
    unroll.recall_metrics(r, w)
    for r, w in zip(jnp.split(readout, len(windows), axis=1), windows, strict=True)
  ]
  return jax.tree.map(lambda *m: jnp.mean(jnp.stack(m)), *per_window)


def key_blind_metrics(spec: tasks.TaskSpec, key: jax.Array, num_episodes: int) -> dict[str, float]:
  """Mean recall metrics of the key-blind floor on exactly the held-out episodes (or streams) that
  `evaluate.evaluate` gives the network for `key` (same batches, same keys)."""
  if spec.protocol != "streaming":
    return evaluate("key_blind", spec, key, num_episodes)
  return evaluate_lib.mean_over_batches(lambda k, n: stream_key_blind_batch(spec, k, n), key, num_episodes)


# Several K in one program. Every baseline here is causal and stores nothing on a step without a
# teaching input, so an episode padded with blank, unscored steps gives the same readouts on its own
# steps: the episodes of every K are padded to the longest and evaluated together, one compilation
# instead of one per K (what dominates a sweep of these cheap memories).


def _linear_readout(name: str):
  return lambda args, episode, init_key, spec: _READOUTS[name](episode, spec)


READOUT_FNS = {name: _linear_readout(name) for name in BASELINES}


def eval_batch_over_k(readout, args, specs: tuple, key: jax.Array, batch: int, per_k_args: bool = False):
  """Recall metrics `{name: [len(specs)]}` of `readout(args, episode, init_key, spec)` (a readout
  `[T, n_out]`) over the `batch` episodes drawn from `key` for each task of `specs` (tasks that differ
  only in K and the episode length): `evaluate.held_out_episodes`, the network's episodes. `args` is
  shared, or with `per_k_args` has a leading `[len(specs)]` axis. `readout` must be the same object
  from call to call (a module-level function), or every call compiles again."""
  specs = tuple(specs)
  episodes, k_state, orders = evaluate_lib.held_out_draw(key, specs, batch)
  metrics = _metrics_over_k(readout, args, specs[0], episodes, k_state, per_k_args)
  return {**metrics, evaluate_lib.QUERY_ORDER: orders}


@functools.partial(jax.jit, static_argnames=("readout", "spec", "per_k_args"))
def _metrics_over_k(readout, args, spec, episodes: tasks.Episode, k_state: jax.Array, per_k_args: bool):
  init_keys = jax.random.split(k_state, episodes.score.shape[1])  # as `sample_episodes`, for every K
  per_episode = jax.vmap(readout, in_axes=(None, 0, 0, None))
  per_k = jax.vmap(per_episode, in_axes=(0 if per_k_args else None, 0, None, None))
  readouts = per_k(args, episodes, init_keys, spec)
  per_step = {evaluate_lib.PER_STEP: unroll.step_bit_accuracy(readouts, episodes)}
  return {**jax.vmap(unroll.recall_metrics)(readouts, episodes), **per_step}


def evaluate_over_k(
  readout, args, specs, key, num_episodes: int, batch: int = 64, per_k_args=False
) -> list[dict]:
  """`eval_batch_over_k` over exactly the held-out episodes `evaluate.evaluate` gives the network at each
  K (same batches, same keys): one dict of mean metrics per task of `specs`."""
  specs = tuple(specs)
  eval_fn = lambda k, n: eval_batch_over_k(readout, args, specs, k, n, per_k_args)  # noqa: E731
  means = evaluate_lib.mean_over_batches(eval_fn, key, num_episodes, batch)
  return [{k: v for k, v in r.items() if k != "K"} for r in evaluate_lib.records_over_k(means, specs)]
