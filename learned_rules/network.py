"""Topologies, network state, and `network_step`: the one place that vmaps the rules.

Neuron order is the same in every topology: the `n_in` input neurons first, then the `n_out` output
neurons, then the hidden neurons. Type ids: 0 input, 1 output, 2.. hidden (one type per hidden layer in
the layered topologies, one hidden type otherwise). Synapses are stored post-major, `synapses[i, j]`
is the synapse `j -> i`, and `mask[i, j] = 1` where it exists (docs/DESIGN.md, "The model").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from learned_rules import rules

TOPOLOGIES = ("full", "layered", "layered_feedback", "sparse")
INPUT_TYPE, OUTPUT_TYPE, HIDDEN_TYPE = 0, 1, 2


@flax.struct.dataclass
class Topology:
  """Connectivity and neuron types of one network.

  Attributes:
    mask: `[N, N]` float32, `mask[i, j] = 1` if the synapse `j -> i` exists.
    types: `[N]` int32 type id of every neuron.
    n_in, n_out, num_types: static sizes.
    synapse_updates: static ablation switch; False freezes every synapse at its initial state.
    body_recurrence: static ablation switch; False makes each body update forget the previous body.
  """

  mask: jax.Array
  types: jax.Array
  n_in: int = flax.struct.field(pytree_node=False)
  n_out: int = flax.struct.field(pytree_node=False)
  num_types: int = flax.struct.field(pytree_node=False)
  synapse_updates: bool = flax.struct.field(pytree_node=False, default=True)
  body_recurrence: bool = flax.struct.field(pytree_node=False, default=True)

  @property
  def num_neurons(self) -> int:
    return self.types.shape[0]

  @property
  def num_synapses(self) -> int:
    return int(np.asarray(self.mask).sum())


@flax.struct.dataclass
class NetState:
  """State of one network: `bodies` `[N, Db]`, `synapses` `[N, N, Ds]` (post-major)."""

  bodies: jax.Array
  synapses: jax.Array


class StepOutput(NamedTuple):
  readout: jax.Array  # [n_out] readouts of the output neurons after the step


def _topology(mask: np.ndarray, types: np.ndarray, n_in: int, n_out: int, **ablations) -> Topology:
  return Topology(
    mask=jnp.asarray(mask, jnp.float32),
    types=jnp.asarray(types, jnp.int32),
    n_in=n_in,
    n_out=n_out,
    num_types=int(types.max()) + 1,
    **ablations,
  )


def make_full(n_in: int, n_out: int, n_hidden: int, self_connections: bool = False, **ablations) -> Topology:
  """All-to-all recurrent network with input, output and hidden types."""
  n = n_in + n_out + n_hidden
  mask = np.ones((n, n), np.float32)
  if not self_connections:
    np.fill_diagonal(mask, 0.0)
  types = np.array([INPUT_TYPE] * n_in + [OUTPUT_TYPE] * n_out + [HIDDEN_TYPE] * n_hidden)
  return _topology(mask, types, n_in, n_out, **ablations)


def make_layered(
  n_in: int, n_out: int, hidden_layers: Sequence[int], feedback: bool = False, **ablations
) -> Topology:
  """Feed-forward layers input -> hidden... -> output; `feedback` adds backward synapses too.

  Each hidden layer has its own type (2, 3, ...). With `feedback`, every forward synapse between
  adjacent layers has a backward twin, where a back-propagation-like signal can flow.
  """
  sizes = [n_in, *hidden_layers, n_out]
  layer_types = [INPUT_TYPE] + [HIDDEN_TYPE + k for k in range(len(hidden_layers))] + [OUTPUT_TYPE]
  # Index ranges in the canonical order: inputs, outputs, then hidden layers in order.
  starts, pos = {}, n_in + n_out
  starts[0], starts[len(sizes) - 1] = 0, n_in
  for k in range(1, len(sizes) - 1):
    starts[k], pos = pos, pos + sizes[k]
  n = pos
  mask = np.zeros((n, n), np.float32)
  types = np.zeros((n,), np.int64)
  for k, size in enumerate(sizes):
    types[starts[k] : starts[k] + size] = layer_types[k]
  for k in range(len(sizes) - 1):
    pre = slice(starts[k], starts[k] + sizes[k])
    post = slice(starts[k + 1], starts[k + 1] + sizes[k + 1])
    mask[post, pre] = 1.0
    if feedback:
      mask[pre, post] = 1.0
  return _topology(mask, types, n_in, n_out, **ablations)


def make_sparse(n_in: int, n_out: int, n_hidden: int, density: float, seed: int = 0, **ablations) -> Topology:
  """Random directed connectivity of the given density (no self-connections), fixed by `seed`."""
  full = make_full(n_in, n_out, n_hidden)
  rng = np.random.default_rng(seed)
  mask = np.asarray(full.mask) * (rng.random(full.mask.shape) < density)
  return _topology(mask, np.asarray(full.types), n_in, n_out, **ablations)


def make_topology(net_cfg) -> Topology:
  """Builds the topology named by `net_cfg.topology` from a `config.net` block."""
  ablations = dict(
    synapse_updates=bool(net_cfg.synapse_updates), body_recurrence=bool(net_cfg.body_recurrence)
  )
  n_in, n_out = net_cfg.num_inputs, net_cfg.num_outputs
  if net_cfg.topology == "full":
    return make_full(n_in, n_out, net_cfg.num_hidden, net_cfg.self_connections, **ablations)
  if net_cfg.topology in ("layered", "layered_feedback"):
    return make_layered(
      n_in,
      n_out,
      tuple(net_cfg.hidden_layers),
      feedback=net_cfg.topology == "layered_feedback",
      **ablations,
    )
  if net_cfg.topology == "sparse":
    return make_sparse(n_in, n_out, net_cfg.num_hidden, net_cfg.density, net_cfg.mask_seed, **ablations)
  raise ValueError(f"net.topology: unknown topology {net_cfg.topology!r}; one of {TOPOLOGIES}")


def init_net_state(theta: rules.Theta, topo: Topology, key: jax.Array, noise: float) -> NetState:
  """Initial state: learned per-type (per-type-pair) vectors plus Gaussian noise of std `noise`.

  The noise breaks the symmetry between neurons of one type, which would otherwise stay identical.
  """
  kb, ks = jax.random.split(key)
  bodies = theta["init_body"][topo.types]
  bodies = bodies + noise * jax.random.normal(kb, bodies.shape)
  syn = theta["init_synapse"][topo.types[:, None], topo.types[None, :]]
  syn = syn + noise * jax.random.normal(ks, syn.shape)
  return NetState(bodies=bodies, synapses=syn * topo.mask[..., None])


MESSAGE_NORMS = ("sqrt", "mean", "sum")


def messages(syn: jax.Array, mask: jax.Array, act: jax.Array, norm: str = "sqrt") -> jax.Array:
  """`msg[i] = sum_j mask[i, j] * outer(syn[i, j], act[j]) / scale[i]`, `[N, Ds*Da]`: `Ds` matmuls.

  `scale[i]` is `sqrt(fan_in[i])` by default (`norm="sqrt"`), the usual scale of a sum of weakly
  correlated terms; `"mean"` divides by the fan-in, `"sum"` by nothing (neurons without inputs: 1).
  With the plain sum, a never-reset stream's synapses settle at order-one values, the messages
  saturate every body update, and meta-training on `streaming` stays at chance (docs/RESULTS.md).

  Args:
    syn: `[N, N, Ds]`; mask: `[N, N]`; act: `[N, Da]`.
  """
  msg = jnp.einsum("ijc,jd->icd", syn * mask[..., None], act)
  msg = msg.reshape(msg.shape[0], -1)
  if norm == "sum":
    return msg
  fan_in = jnp.maximum(jnp.sum(mask, axis=1), 1.0)
  return msg / (fan_in if norm == "mean" else jnp.sqrt(fan_in))[:, None]


def network_step(
  theta: rules.Theta,
  topo: Topology,
  spec: rules.RuleSpec,
  net_state: NetState,
  x: jax.Array,
  fast_synapse: bool = True,
) -> tuple[NetState, StepOutput]:
  """One time step of the whole network (docs/DESIGN.md, "The model", steps 1-5).

  Args:
    net_state: bodies `[N, Db]`, synapses `[N, N, Ds]`.
    x: `[N]` external input of this step (0 where a neuron receives none).
    fast_synapse: use the split-first-layer form of the synapse update (same numbers).

  Returns:
    The new state and the output neurons' readouts `[n_out]`.
  """
  emb = theta["type_emb"][topo.types]  # [N, E]
  act_fn = jax.vmap(rules.activation, in_axes=(None, 0, 0, None))
  act = act_fn(theta, net_state.bodies, x, spec)
  msg = messages(net_state.synapses, topo.mask, act, spec.message_norm)
  bodies = jax.vmap(rules.body_update, in_axes=(None, 0, 0, 0, 0, None, None))(
    theta, net_state.bodies, msg, x, emb, spec, topo.body_recurrence
  )
  syn = net_state.synapses
  if topo.synapse_updates:
    new_act = act_fn(theta, bodies, x, spec)
    if fast_synapse:
      new_syn = rules.synapse_update_dense(theta, syn, new_act, emb)
    else:
      per_pre = jax.vmap(rules.synapse_update, in_axes=(None, 0, None, 0, None, 0))
      per_pair = jax.vmap(per_pre, in_axes=(None, 0, 0, None, 0, None))
      new_syn = per_pair(theta, syn, new_act, new_act, emb, emb)
    syn = jnp.where(topo.mask[..., None] > 0, new_syn, syn)
  out_bodies = bodies[topo.n_in : topo.n_in + topo.n_out]
  y = jax.vmap(rules.readout, in_axes=(None, 0))(theta, out_bodies)
  return NetState(bodies=bodies, synapses=syn), StepOutput(readout=y)
