"""Delta rule or Hebbian rule: how a learned rule writes a pair into synapses that already hold K pairs.

The network runs the storage phase of held-out episodes (K key -> value snippets) and stops there, its
synapses holding the K pairs. From that state it is shown one more pair, for the steps a snippet is
shown, in four branches:

- `blank`: no input at all: the decay and drift that every branch shares;
- `new`: a fresh key and value;
- `old`: the last stored key and value again;
- `flipped`: the last stored key with the opposite value.

The write of a branch is its synapse states minus the blank branch's, on the input -> output synapses,
projected per state channel `c` on the outer product of the value `v` and key `k` shown:

  alpha[c] = mean over output i and input j of  dS[i, j, c] * v_i * k_j.

The blank branch's own write (neurons show activity without input too) projects on a shown pair by
chance, differently in every episode; it averages out over episodes, which the ratios are taken over.
The ratio of a branch is its mean alpha along the new pair's: `sum_c alpha[c] alpha_new[c] / |alpha_new|^2`.
A Hebbian rule writes every pair alike, whatever the synapses hold: `old` and `flipped` ratios 1 and 1.
A delta rule writes the error, the value minus what the synapses already recall from the key: nothing
for a stored pair and twice the new write for a contradicted one, ratios 0 and 2.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from learned_rules import network, rules, tasks, unroll

BRANCHES = ("new", "old", "flipped")


def error_share(ratio: dict) -> float:
  """How much of the write follows the error rather than the pair: the mean of `1 - old` and
  `flipped - 1`, 0 for a Hebbian rule and 1 for a delta rule. (Bounded synapse states that saturate
  also shrink a stored pair's write, so this is an upper bound on what is error-driven.)"""
  return float(((1.0 - ratio["old"]) + (ratio["flipped"] - 1.0)) / 2)


def kind_of(share: float) -> str:
  """`hebbian` below 1/3 of `error_share`, `delta` above 2/3, else `between`."""
  return "hebbian" if share < 1 / 3 else "delta" if share > 2 / 3 else "between"


@functools.partial(jax.jit, static_argnames=("problem", "batch"))
def branch_writes(theta: rules.Theta, topo: network.Topology, problem: unroll.Problem, key, batch: int):
  """`{branch: alpha [B, Ds]}` of `batch` held-out episodes of `problem`'s episode task (module
  docstring), and the recall bit accuracy of the stored pair's key read from the stored state."""
  spec = problem.task
  k_ep, k_state, k_new = jax.random.split(key, 3)
  episodes = jax.vmap(tasks.sample_episode, in_axes=(0, None))(jax.random.split(k_ep, batch), spec)
  writes = spec.num_snippets * spec.cycles * (spec.show_steps + spec.gap_steps)  # the storage steps
  last = writes - spec.gap_steps - 1  # the last step of the last snippet: its key and taught value
  keys = episodes.x[:, last, : spec.n_in]
  values = episodes.x[:, last, spec.n_in : spec.n_in + spec.n_out]
  new_keys, new_values = jax.vmap(lambda k: tasks.sample_snippets(k, spec, 1))(jax.random.split(k_new, batch))
  states = unroll.init_batch_states(theta, topo, problem, k_state, batch)
  run = lambda s, xs: unroll.unroll(theta, topo, problem, s, xs)  # noqa: E731
  stored, _ = jax.vmap(run)(states, episodes.x[:, :writes])

  taught = np.array([False] * spec.lead_steps + [True] * spec.present_steps)

  def shown(k, v):  # the steps a snippet is shown: its key throughout, its value where it is taught
    steps = len(taught)
    return tasks.place_inputs(spec, jnp.tile(k, (steps, 1)), jnp.where(taught[:, None], v, 0.0))

  def after(k, v):
    xs = jax.vmap(shown)(k, v)
    return jax.vmap(lambda s, x: network.dense_synapses(topo, run(s, x)[0].synapses))(stored, xs)

  outs = slice(spec.n_in, spec.n_in + spec.n_out)
  blank = after(jnp.zeros_like(keys), jnp.zeros_like(values))[:, outs, : spec.n_in]
  shown_pairs = {
    "new": (new_keys[:, 0], new_values[:, 0]),
    "old": (keys, values),
    "flipped": (keys, -values),
  }
  alphas = {}
  for name, (k, v) in shown_pairs.items():
    delta = after(k, v)[:, outs, : spec.n_in] - blank
    alphas[name] = jnp.einsum("bijc,bi,bj->bc", delta, v, k) / (spec.n_in * spec.n_out)

  # What the stored state recalls of the last pair: its key as a cue for the task's query steps.
  def query(k):
    return tasks.place_inputs(
      spec, jnp.tile(k, (spec.query_steps, 1)), jnp.zeros((spec.query_steps, spec.n_out))
    )

  cue = jax.vmap(query)(keys)
  readout = jax.vmap(run)(stored, cue)[1][:, -1]
  recall = jnp.mean(unroll.bit_credit(readout, values))
  return alphas, recall


def storage_probe(theta, topo, problem: unroll.Problem, key, num_episodes: int = 64) -> dict:
  """`{"alpha": {branch: [Ds]}, "ratio": {"old": r, "flipped": r}, "error_share", "kind", "recall"}`:
  the module docstring's writes, mean over `num_episodes` held-out episodes, their ratios, the share of
  the write that follows the error (`error_share`, `kind_of`), and the stored state's recall of the
  last pair (the bit accuracy of its key as a cue)."""
  alphas, recall = jax.device_get(branch_writes(theta, topo, problem, key, num_episodes))
  mean = {name: np.mean(a, axis=0) for name, a in alphas.items()}
  new = mean["new"]
  ratio = {name: float(np.dot(mean[name], new) / np.dot(new, new)) for name in ("old", "flipped")}
  share = error_share(ratio)
  return {
    "alpha": {name: [float(x) for x in a] for name, a in mean.items()},
    "ratio": ratio,
    "error_share": share,
    "kind": kind_of(share),
    "recall": float(recall),
    "episodes": num_episodes,
    "K": problem.task.num_snippets,
  }


def format_probe(result: dict) -> str:
  """One line: the ratios, the nearer kind and what the two kinds would give."""
  r = result["ratio"]
  return (
    f"K={result['K']:3d}: write of a stored pair {r['old']:+.2f}, of a contradicted pair {r['flipped']:+.2f} "
    f"x a new pair's (Hebbian 1, 1; delta 0, 2): error-driven share {result['error_share']:.2f} "
    f"({result['kind']}); "
    f"recall of the stored pair {result['recall']:.3f} ({result['episodes']} episodes)"
  )
