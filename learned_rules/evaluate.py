"""Recall metrics on held-out episodes, recall against K, and capacity."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from learned_rules import config as config_lib
from learned_rules import network, rules, unroll

# Evaluation keys are folded from the run's seed with this tag; training uses tag 0.
EVAL_TAG = 1
STREAM_EVAL_WINDOWS = 4


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
    k: np.average(np.stack([np.asarray(r[k]) for r in results]), axis=0, weights=sizes) for k in results[0]
  }
  return {k: float(v) if v.ndim == 0 else v for k, v in means.items()}


def eval_key(seed: int) -> jax.Array:
  return jax.random.fold_in(jax.random.PRNGKey(seed), EVAL_TAG)


def problem_from_config(cfg, topo: network.Topology, num_snippets: int | None = None):
  return unroll.Problem(
    rule=config_lib.rule_spec(cfg, topo),
    task=config_lib.task_spec(cfg, topo, num_snippets),
    init_noise=float(cfg.net.init_noise),
    loss=cfg.train.loss,
    fast_synapse=bool(cfg.rule.fast_synapse),
    remat=cfg.train.remat,
  )


def recall_vs_k(
  theta: rules.Theta, topo: network.Topology, cfg, k_values, num_episodes: int, key: jax.Array
) -> list[dict]:
  """Recall metrics at every K in `k_values` (all K snippets queried), one record per K."""
  records = []
  for k in k_values:
    problem = problem_from_config(cfg, topo, num_snippets=int(k))
    problem = dataclasses.replace(problem, remat="none")  # no gradient, nothing to rematerialise
    records.append({"K": int(k), **evaluate(theta, topo, problem, key, num_episodes)})
  return records


def capacity(records: list[dict], threshold: float) -> int:
  """Largest K whose mean bit accuracy is at least `threshold` (0 if none); docs/DESIGN.md's capacity."""
  ks = [r["K"] for r in records if r["bit_accuracy"] >= threshold]
  return max(ks, default=0)
