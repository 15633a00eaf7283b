"""The straightforward reference network: `network.network_step` written as plainly as it can be.

The one oracle the library's step is checked against (tests/test_network.py, tests/test_benchmark.py)
and the baseline the benchmark times it against (learned_rules/benchmark_cases.py). It computes the
same numbers as `network.network_step` (docs/DESIGN.md, "The model") in the form that costs most:

- synapses are one dense `[N, N, Ds]` matrix (post-major) with the dense `[N, N]` mask, not blocks;
- the first layer of `f_s` is one matrix applied to each synapse's concatenated inputs
  `[s, a_post, e_post, a_pre, e_pre]`, not split into per-neuron terms (`rules.synapse_update_block`)
  nor into three products (`rules.synapse_update`);
- the synapse update is vmapped over every pair, pre neuron inside, post neuron outside;
- `unroll` is a plain `lax.scan`, without rematerialisation.

It shares with the library only the per-neuron rules (`rules.activation`, `rules.body_update`,
`rules.readout`) and the dense `network.messages`, which tests/test_network.py checks against an
explicit sum.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from learned_rules import network, rules


class DenseState(NamedTuple):
  """`bodies` `[N, Db]`; `synapses` `[N, N, Ds]`, dense and post-major, zero where the mask is 0."""

  bodies: jax.Array
  synapses: jax.Array


def dense_state(topo: network.Topology, net_state: network.NetState) -> DenseState:
  """A library state (synapses in `topo`'s blocks) in the reference's dense form."""
  return DenseState(net_state.bodies, network.dense_synapses(topo, net_state.synapses))


def synapse_update(
  theta: rules.Theta,
  syn: jax.Array,
  a_post: jax.Array,
  a_pre: jax.Array,
  emb_post: jax.Array,
  emb_pre: jax.Array,
) -> jax.Array:
  """`rules.synapse_update` in one piece: `[s, a_post, e_post, a_pre, e_pre] @ W1`, `[Ds]` -> `[Ds]`.

  Args:
    syn: `[Ds]`; a_post, a_pre: `[Da]`; emb_post, emb_pre: `[E]`.
  """
  p = theta["synapse"]
  inputs = jnp.concatenate([syn, a_post, emb_post, a_pre, emb_pre])  # [Ds + 2 (Da + E)]
  w1 = jnp.concatenate([p["w_s"], p["w_post"], p["w_pre"]], axis=0)  # [Ds + 2 (Da + E), H]
  pre_act = inputs @ w1 + p["b1"]
  if "w_bi" in p:
    pre_act = pre_act + jnp.einsum("d,kde,e->k", a_post, p["w_bi"], a_pre)
  hid = jnp.tanh(pre_act)
  delta = jnp.tanh(hid @ p["w2"] + p["b2"])
  return jax.nn.sigmoid(p["decay_logit"]) * syn + jax.nn.sigmoid(p["rate_logit"]) * delta


def step(
  theta: rules.Theta, topo: network.Topology, spec: rules.RuleSpec, state: DenseState, x: jax.Array
) -> tuple[DenseState, jax.Array]:
  """One step of the whole network; `x` `[N]`. Returns the new state and the readouts `[n_out]`.

  `spec`'s implementation switches (`fast_synapse`, `chunk_synapses`) are not read: this is the
  one form.
  """
  emb = theta["type_emb"][topo.types]  # [N, E]
  act_fn = jax.vmap(rules.activation, in_axes=(None, 0, 0, None))
  act = act_fn(theta, state.bodies, x, spec)  # [N, Da]
  msg = network.messages(
    state.synapses, topo.mask, act, spec.message_norm, spec.reference_fan_in
  )  # [N, Ds*Da]
  bodies = jax.vmap(rules.body_update, in_axes=(None, 0, 0, 0, 0, None, None))(
    theta, state.bodies, msg, x, emb, spec, topo.body_recurrence
  )
  syn = state.synapses
  if topo.synapse_updates:
    new_act = act_fn(theta, bodies, x, spec)
    # new_syn[i, j] is the synapse j -> i: inner vmap over the pre neuron j, outer over the post i.
    per_pre = jax.vmap(synapse_update, in_axes=(None, 0, None, 0, None, 0))
    per_pair = jax.vmap(per_pre, in_axes=(None, 0, 0, None, 0, None))
    new_syn = per_pair(theta, syn, new_act, new_act, emb, emb)  # [N, N, Ds]
    syn = jnp.where(topo.mask[..., None] > 0, new_syn, syn)  # absent synapses keep their value
  out_bodies = bodies[topo.n_in : topo.n_in + topo.n_out]
  readout = jax.vmap(rules.readout, in_axes=(None, 0))(theta, out_bodies)
  return DenseState(bodies, syn), readout


def unroll(
  theta: rules.Theta, topo: network.Topology, spec: rules.RuleSpec, state: DenseState, xs: jax.Array
) -> tuple[DenseState, jax.Array]:
  """A plain `lax.scan` of `step` over `xs` `[T, N]`: the final state and the readouts `[T, n_out]`."""
  return jax.lax.scan(lambda s, x: step(theta, topo, spec, s, x), state, xs)
