"""Tests of `learned_rules.network`: topologies, initial states, messages and `network_step`."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_rules import network, rules
from learned_rules.network import HIDDEN_TYPE, INPUT_TYPE, OUTPUT_TYPE

RTOL, ATOL = 1e-5, 1e-6
N_IN, N_OUT, N_HIDDEN = 3, 2, 4  # the sizes of conftest's `full_topo`


def _step(theta, topo, spec, state, x, fast=True):
  return network.network_step(theta, topo, spec, state, x, fast)


# ---- topologies ----


def _layer_of(topo: network.Topology) -> np.ndarray:
  """Layer index of every neuron of a layered topology: 0 input, 1.. hidden, last output."""
  types = np.asarray(topo.types)
  num_hidden_layers = topo.num_types - 2
  layer = np.where(types == INPUT_TYPE, 0, types - HIDDEN_TYPE + 1)
  return np.where(types == OUTPUT_TYPE, num_hidden_layers + 1, layer)


@pytest.mark.parametrize("self_connections", [False, True])
def test_full_topology(self_connections):
  topo = network.make_full(3, 2, 4, self_connections=self_connections)
  n = 9
  chex.assert_shape(topo.mask, (n, n))
  chex.assert_shape(topo.types, (n,))
  want = np.ones((n, n)) - (0 if self_connections else np.eye(n))
  np.testing.assert_array_equal(topo.mask, want)
  np.testing.assert_array_equal(topo.types, [0] * 3 + [1] * 2 + [2] * 4)
  assert (topo.n_in, topo.n_out, topo.num_types, topo.num_neurons) == (3, 2, 3, n)
  assert topo.num_synapses == int(want.sum())
  assert topo.mask.dtype == jnp.float32 and topo.types.dtype == jnp.int32


@pytest.mark.parametrize("hidden_layers", [(), (4,), (4, 5)])
def test_layered_topology_is_feed_forward_between_adjacent_layers(hidden_layers):
  n_in, n_out = 3, 2
  topo = network.make_layered(n_in, n_out, hidden_layers)
  n = n_in + n_out + sum(hidden_layers)
  chex.assert_shape(topo.mask, (n, n))
  types = np.asarray(topo.types)
  # Canonical order: inputs, outputs, then the hidden layers in order, one type per hidden layer.
  want_types = [INPUT_TYPE] * n_in + [OUTPUT_TYPE] * n_out
  for k, width in enumerate(hidden_layers):
    want_types += [HIDDEN_TYPE + k] * width
  np.testing.assert_array_equal(types, want_types)
  assert topo.num_types == 2 + len(hidden_layers)
  layer = _layer_of(topo)
  mask = np.asarray(topo.mask)
  # mask[i, j] = 1 exactly when post i is in the layer right after pre j's layer.
  np.testing.assert_array_equal(mask, (layer[:, None] == layer[None, :] + 1).astype(np.float32))
  sizes = [n_in, *hidden_layers, n_out]
  assert topo.num_synapses == sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
  # No backward synapse, no synapse within a layer, inputs receive nothing, outputs send nothing.
  assert np.all(mask[layer[:, None] <= layer[None, :]] == 0)
  assert mask[types == INPUT_TYPE].sum() == 0
  assert mask[:, types == OUTPUT_TYPE].sum() == 0


@pytest.mark.parametrize("hidden_layers", [(), (4,), (4, 5)])
def test_layered_feedback_adds_exactly_the_transposes(hidden_layers):
  forward = network.make_layered(3, 2, hidden_layers)
  feedback = network.make_layered(3, 2, hidden_layers, feedback=True)
  ff = np.asarray(forward.mask)
  np.testing.assert_array_equal(feedback.mask, ff + ff.T)
  assert np.asarray(feedback.mask).max() == 1.0
  np.testing.assert_array_equal(feedback.types, forward.types)
  assert feedback.num_synapses == 2 * forward.num_synapses


def test_sparse_topology():
  n_in, n_out, n_hidden, density = 10, 10, 80, 0.3
  topo = network.make_sparse(n_in, n_out, n_hidden, density, seed=3)
  n = n_in + n_out + n_hidden
  mask = np.asarray(topo.mask)
  chex.assert_shape(mask, (n, n))
  assert set(np.unique(mask)) <= {0.0, 1.0}
  assert np.all(np.diag(mask) == 0)
  # n (n - 1) = 9900 Bernoulli(0.3) draws: the standard deviation of the fraction is 0.005.
  assert abs(mask.sum() / (n * (n - 1)) - density) < 0.03
  np.testing.assert_array_equal(topo.types, network.make_full(n_in, n_out, n_hidden).types)
  np.testing.assert_array_equal(network.make_sparse(n_in, n_out, n_hidden, density, seed=3).mask, mask)
  assert not np.array_equal(network.make_sparse(n_in, n_out, n_hidden, density, seed=4).mask, mask)
  dense = network.make_sparse(n_in, n_out, n_hidden, 1.0)
  np.testing.assert_array_equal(dense.mask, network.make_full(n_in, n_out, n_hidden).mask)


@pytest.mark.parametrize("variant", ["", "layered", "layered_feedback", "sparse"])
def test_make_topology_from_config(make_cfg, variant):
  cfg = make_cfg(",".join(filter(None, ["tiny", variant])))
  cfg.net.synapse_updates = False
  cfg.net.body_recurrence = False
  topo = network.make_topology(cfg.net)
  assert topo.n_in == cfg.net.num_inputs and topo.n_out == cfg.net.num_outputs
  layered = cfg.net.topology.startswith("layered")
  num_hidden = sum(cfg.net.hidden_layers) if layered else cfg.net.num_hidden
  assert topo.num_neurons == cfg.net.num_inputs + cfg.net.num_outputs + num_hidden
  assert topo.num_types == (2 + len(cfg.net.hidden_layers) if layered else 3)
  assert topo.synapse_updates is False and topo.body_recurrence is False
  assert topo.num_synapses > 0


def test_make_topology_rejects_unknown_name(make_cfg):
  cfg = make_cfg("tiny")
  cfg.net.topology = "ring"
  with pytest.raises(ValueError, match="net.topology"):
    network.make_topology(cfg.net)


# ---- initial state and messages ----


def test_init_net_state_uses_per_type_vectors(theta, small_spec):
  topo = network.make_sparse(3, 2, 4, 0.5, seed=1)
  state = network.init_net_state(theta, topo, jax.random.PRNGKey(0), noise=0.0)
  n, types, mask = topo.num_neurons, np.asarray(topo.types), np.asarray(topo.mask)
  chex.assert_shape(state.bodies, (n, small_spec.body_dim))
  chex.assert_shape(state.synapses, (n, n, small_spec.synapse_dim))
  np.testing.assert_array_equal(state.bodies, np.asarray(theta["init_body"])[types])
  want_syn = np.asarray(theta["init_synapse"])[types[:, None], types[None, :]] * mask[..., None]
  np.testing.assert_array_equal(state.synapses, want_syn)

  noisy = network.init_net_state(theta, topo, jax.random.PRNGKey(0), noise=0.1)
  diff = np.asarray(noisy.bodies) - np.asarray(state.bodies)
  assert 0.02 < diff.std() < 0.5  # noise of the requested size breaks the symmetry
  assert np.all(np.asarray(noisy.synapses)[mask == 0] == 0)  # absent synapses stay exactly zero


@pytest.mark.parametrize("norm", network.MESSAGE_NORMS)
def test_messages_match_explicit_sum(small_spec, norm):
  """`msg[i] = sum_j mask[i, j] outer(syn[i, j], act[j]) / scale[i]`, scale from the fan-in."""
  n, ds, da = 5, small_spec.synapse_dim, small_spec.act_dim
  rng = np.random.default_rng(0)
  syn = rng.standard_normal((n, n, ds)).astype(np.float32)
  mask = (rng.random((n, n)) < 0.5).astype(np.float32)
  mask[0] = 0.0  # a neuron that receives nothing
  mask[1] = 1.0  # and one that receives from everyone
  act = rng.standard_normal((n, da)).astype(np.float32)
  msg = network.messages(jnp.asarray(syn), jnp.asarray(mask), jnp.asarray(act), norm)
  chex.assert_shape(msg, (n, ds * da))
  want = np.zeros((n, ds, da))
  for i in range(n):
    for j in range(n):
      want[i] += mask[i, j] * np.outer(syn[i, j], act[j])
    fan_in = max(mask[i].sum(), 1.0)
    want[i] /= {"sqrt": np.sqrt(fan_in), "mean": fan_in, "sum": 1.0}[norm]
  np.testing.assert_allclose(msg, want.reshape(n, ds * da), rtol=RTOL, atol=1e-5)


def test_zero_mask_delivers_no_messages(theta, small_spec, full_topo, net_state, step_input):
  n = full_topo.num_neurons
  zero = jnp.zeros((n, n))
  act = jnp.asarray(np.random.default_rng(0).standard_normal((n, small_spec.act_dim)), jnp.float32)
  np.testing.assert_array_equal(network.messages(net_state.synapses, zero, act), 0.0)

  # A step without synapses must equal a step whose synapses all carry zero weight: in both, every
  # neuron updates from its own body and input alone.
  no_mask = full_topo.replace(mask=zero)
  state_masked, out_masked = _step(theta, no_mask, small_spec, net_state, step_input)
  zero_syn = net_state.replace(synapses=jnp.zeros_like(net_state.synapses))
  state_zero, out_zero = _step(theta, full_topo, small_spec, zero_syn, step_input)
  np.testing.assert_allclose(state_masked.bodies, state_zero.bodies, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(out_masked.readout, out_zero.readout, rtol=RTOL, atol=ATOL)
  # ... and the synapses that do not exist are never updated.
  np.testing.assert_array_equal(state_masked.synapses, net_state.synapses)
  # The messages did matter in the connected network (otherwise the comparison above is vacuous).
  state_full, _ = _step(theta, full_topo, small_spec, net_state, step_input)
  assert not np.allclose(state_full.bodies, state_zero.bodies, atol=1e-3)


def test_absent_synapses_are_not_updated(theta, small_spec, make_net_state, step_input):
  topo = network.make_sparse(3, 2, 4, 0.5, seed=2)
  state = make_net_state(5, topo, small_spec)
  # Put junk on absent synapses: the mask, not the stored value, decides what exists.
  junk = state.synapses + (1.0 - topo.mask[..., None]) * 7.0
  new, _ = _step(theta, topo, small_spec, state.replace(synapses=junk), step_input)
  ref, _ = _step(theta, topo, small_spec, state, step_input)
  absent = np.asarray(topo.mask) == 0
  present = ~absent
  np.testing.assert_array_equal(np.asarray(new.synapses)[absent], np.asarray(junk)[absent])
  np.testing.assert_allclose(
    np.asarray(new.synapses)[present], np.asarray(ref.synapses)[present], rtol=RTOL, atol=ATOL
  )
  np.testing.assert_allclose(new.bodies, ref.bodies, rtol=RTOL, atol=ATOL)
  assert not np.allclose(np.asarray(new.synapses)[present], np.asarray(state.synapses)[present])


# ---- network_step ----


def test_network_step_shapes(theta, small_spec, full_topo, net_state, step_input):
  n = full_topo.num_neurons
  new, out = _step(theta, full_topo, small_spec, net_state, step_input)
  chex.assert_shape(new.bodies, (n, small_spec.body_dim))
  chex.assert_shape(new.synapses, (n, n, small_spec.synapse_dim))
  chex.assert_shape(out.readout, (full_topo.n_out,))
  chex.assert_tree_all_finite((new, out))
  # The readout is the shared readout of the output neurons' new bodies.
  outputs = new.bodies[full_topo.n_in : full_topo.n_in + full_topo.n_out]
  np.testing.assert_allclose(
    out.readout, jax.vmap(rules.readout, (None, 0))(theta, outputs), rtol=RTOL, atol=ATOL
  )


@pytest.mark.parametrize("fast", [True, False])
def test_network_step_jit_matches_eager(
  theta, small_spec, full_topo, net_state, step_input, trees_close, fast
):
  eager = _step(theta, full_topo, small_spec, net_state, step_input, fast)
  jitted = jax.jit(_step, static_argnums=(2, 5))(theta, full_topo, small_spec, net_state, step_input, fast)
  trees_close(jitted, eager, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("bilinear", [True, False])
def test_fast_synapse_step_equals_per_synapse_step(
  make_theta, small_spec, full_topo, net_state, step_input, trees_close, bilinear
):
  spec = dataclasses.replace(small_spec, bilinear=bilinear)
  theta = make_theta(jax.random.PRNGKey(0), spec, seed=20)
  fast = _step(theta, full_topo, spec, net_state, step_input, True)
  slow = _step(theta, full_topo, spec, net_state, step_input, False)
  trees_close(fast, slow, rtol=RTOL, atol=ATOL)
  assert not np.allclose(fast[0].synapses, net_state.synapses, atol=1e-3)  # something happened


def _permute_group(topo: network.Topology, group: int, seed: int) -> np.ndarray:
  """A permutation of all neurons that shuffles the neurons of one type among themselves."""
  types = np.asarray(topo.types)
  perm = np.arange(topo.num_neurons)
  members = np.flatnonzero(types == group)
  rng = np.random.default_rng(seed)
  shuffled = members
  while np.array_equal(shuffled, members):  # a permutation that moves something
    shuffled = rng.permutation(members)
  perm[members] = shuffled
  return perm


@pytest.mark.parametrize("group", [HIDDEN_TYPE, OUTPUT_TYPE, INPUT_TYPE])
def test_permuting_same_type_neurons_permutes_outputs(theta, small_spec, make_net_state, group):
  n_in, n_out = 3, 3
  topo = network.make_sparse(n_in, n_out, 5, 0.6, seed=0)
  state = make_net_state(30, topo, small_spec)
  x = jnp.asarray(np.random.default_rng(31).standard_normal(topo.num_neurons), jnp.float32)
  perm = _permute_group(topo, group, 32)
  p = jnp.asarray(perm)

  permuted_topo = topo.replace(mask=topo.mask[p][:, p])
  np.testing.assert_array_equal(permuted_topo.types, topo.types)  # same types at every position
  permuted_state = network.NetState(bodies=state.bodies[p], synapses=state.synapses[p][:, p])

  new, out = _step(theta, topo, small_spec, state, x)
  new_p, out_p = _step(theta, permuted_topo, small_spec, permuted_state, x[p])
  np.testing.assert_allclose(new_p.bodies, new.bodies[p], rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(new_p.synapses, new.synapses[p][:, p], rtol=RTOL, atol=ATOL)
  # Readouts follow the output neurons; permuting other neurons leaves them unchanged.
  out_perm = perm[n_in : n_in + n_out] - n_in
  np.testing.assert_allclose(out_p.readout, out.readout[out_perm], rtol=RTOL, atol=ATOL)
  if group != OUTPUT_TYPE:
    np.testing.assert_array_equal(out_perm, np.arange(n_out))


def test_permuting_hidden_neurons_of_full_network(theta, small_spec, full_topo, net_state, step_input):
  """The case docs/DESIGN.md names: hidden neurons of a `full` network, readouts unchanged."""
  p = jnp.asarray(_permute_group(full_topo, HIDDEN_TYPE, 33))
  permuted_state = network.NetState(bodies=net_state.bodies[p], synapses=net_state.synapses[p][:, p])
  permuted_topo = full_topo.replace(mask=full_topo.mask[p][:, p])
  new, out = _step(theta, full_topo, small_spec, net_state, step_input)
  new_p, out_p = _step(theta, permuted_topo, small_spec, permuted_state, step_input[p])
  np.testing.assert_allclose(new_p.bodies, new.bodies[p], rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(new_p.synapses, new.synapses[p][:, p], rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(out_p.readout, out.readout, rtol=RTOL, atol=ATOL)


def test_permuting_neurons_of_different_types_is_not_a_symmetry(
  theta, small_spec, full_topo, net_state, step_input
):
  """Control for the permutation tests: swapping an input with a hidden neuron changes the step."""
  n_in = full_topo.n_in
  perm = np.arange(full_topo.num_neurons)
  perm[[0, n_in + full_topo.n_out]] = perm[[n_in + full_topo.n_out, 0]]
  p = jnp.asarray(perm)
  permuted_state = network.NetState(bodies=net_state.bodies[p], synapses=net_state.synapses[p][:, p])
  new, _ = _step(theta, full_topo, small_spec, net_state, step_input)
  new_p, _ = _step(theta, full_topo, small_spec, permuted_state, step_input[p])
  assert not np.allclose(new_p.bodies, new.bodies[p], atol=1e-3)


def test_synapse_updates_off_leaves_synapses_unchanged(theta, small_spec, net_state, step_input):
  frozen = network.make_full(N_IN, N_OUT, N_HIDDEN, synapse_updates=False)
  learning = network.make_full(N_IN, N_OUT, N_HIDDEN)
  step = jax.jit(_step, static_argnums=(2, 5))
  state_frozen, state_learning = net_state, net_state
  for _ in range(3):
    prev_bodies = state_frozen.bodies
    state_frozen, _ = step(theta, frozen, small_spec, state_frozen, step_input, True)
    state_learning, _ = step(theta, learning, small_spec, state_learning, step_input, True)
    np.testing.assert_array_equal(state_frozen.synapses, net_state.synapses)
    assert not np.allclose(state_frozen.bodies, prev_bodies, atol=1e-4)  # bodies still move
  assert not np.allclose(state_learning.synapses, net_state.synapses, atol=1e-3)


def test_body_recurrence_off_forgets_the_previous_body(theta, small_spec, net_state, step_input):
  """Without recurrence a neuron's new body does not depend on its previous body.

  Neuron i's previous body reaches the other neurons through its activation, but (without
  self-connections) reaches neuron i itself only through the recurrent body input and the gate, so
  changing it must leave the new body of neuron i unchanged when recurrence is off and change it
  when recurrence is on.
  """
  i = N_IN + N_OUT + 1  # a hidden neuron
  kick = np.random.default_rng(40).standard_normal(small_spec.body_dim)
  other = net_state.bodies.at[i].add(jnp.asarray(kick, jnp.float32))
  changed = net_state.replace(bodies=other)
  for recurrence in (False, True):
    topo = network.make_full(N_IN, N_OUT, N_HIDDEN, body_recurrence=recurrence)
    new, _ = _step(theta, topo, small_spec, net_state, step_input)
    new_changed, _ = _step(theta, topo, small_spec, changed, step_input)
    if recurrence:
      assert not np.allclose(new_changed.bodies[i], new.bodies[i], atol=1e-3)
    else:
      np.testing.assert_allclose(new_changed.bodies[i], new.bodies[i], rtol=RTOL, atol=ATOL)
    # The other neurons see neuron i's activation either way.
    assert not np.allclose(new_changed.bodies[0], new.bodies[0], atol=1e-5)


def test_body_recurrence_off_changes_the_update(theta, small_spec, net_state, step_input):
  on = network.make_full(N_IN, N_OUT, N_HIDDEN)
  off = network.make_full(N_IN, N_OUT, N_HIDDEN, body_recurrence=False)
  new_on, _ = _step(theta, on, small_spec, net_state, step_input)
  new_off, _ = _step(theta, off, small_spec, net_state, step_input)
  assert not np.allclose(new_on.bodies, new_off.bodies, atol=1e-3)
  # Without the gate the new body is a bare tanh candidate.
  assert np.abs(np.asarray(new_off.bodies)).max() < 1.0
