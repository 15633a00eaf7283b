"""Tests of `learned_rules.network`: topologies, initial states, messages and `network_step`."""

from __future__ import annotations

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_rules import config as config_lib
from learned_rules import network, reference, rules
from learned_rules.network import HIDDEN_TYPE, INPUT_TYPE, OUTPUT_TYPE

RTOL, ATOL = 1e-5, 1e-6
N_IN, N_OUT, N_HIDDEN = 3, 2, 4  # the sizes of conftest's `full_topo`


def _eager_step(theta, topo, spec, state, x, fast=True):
  return network.network_step(theta, topo, dataclasses.replace(spec, fast_synapse=fast), state, x)


# Jitted once per topology structure and shape: compiling a step costs less than running it eagerly.
_step = jax.jit(_eager_step, static_argnums=(2, 5))


# One topology of every kind and block structure, all with N <= 10: one masked dense block (full), one
# unmasked dense block per connected layer pair (layered with 1 and 2 hidden layers, and with
# feedback), one fan-in block (sparse).
TOPOLOGY_CASES = ("full", "layered_1", "layered_2", "layered_feedback", "sparse")


@functools.cache
def _topology(name: str, **ablations) -> network.Topology:
  return {
    "full": lambda: network.make_full(N_IN, N_OUT, N_HIDDEN, **ablations),
    "layered_1": lambda: network.make_layered(N_IN, N_OUT, (4,), **ablations),
    "layered_2": lambda: network.make_layered(N_IN, N_OUT, (2, 3), **ablations),
    "layered_feedback": lambda: network.make_layered(N_IN, N_OUT, (2, 3), feedback=True, **ablations),
    "sparse": lambda: network.make_sparse(N_IN, N_OUT, N_HIDDEN, 0.5, seed=1, **ablations),
  }[name]()


@pytest.fixture(scope="module")
def wide(small_spec, theta):
  """conftest's spec and theta with a 4th type, for a network with two hidden layers (an out-of-range
  type id would be clamped silently by the embedding lookup); the new type's vectors are random."""
  spec = dataclasses.replace(small_spec, num_types=4)
  rng = np.random.default_rng(3)
  init_synapse = 0.3 * rng.standard_normal((4, 4, spec.synapse_dim))
  init_synapse[:3, :3] = theta["init_synapse"]
  rows = {"type_emb": spec.emb_dim, "init_body": spec.body_dim}
  wide_theta = {
    **theta,
    **{
      name: jnp.concatenate([theta[name], jnp.asarray(0.3 * rng.standard_normal((1, dim)), jnp.float32)])
      for name, dim in rows.items()
    },
    "init_synapse": jnp.asarray(init_synapse, jnp.float32),
  }
  return spec, wide_theta


def _without_bilinear(theta):
  return {**theta, "synapse": {k: v for k, v in theta["synapse"].items() if k != "w_bi"}}


def _dense(topo, state_or_synapses) -> np.ndarray:
  synapses = getattr(state_or_synapses, "synapses", state_or_synapses)
  return np.asarray(network.dense_synapses(topo, synapses))


def _assert_blocks_equal(actual, expected) -> None:
  assert len(actual) == len(expected)
  for a, e in zip(actual, expected, strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


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
  k = round(density * (n - 1))  # 30 inputs per neuron
  mask = np.asarray(topo.mask)
  chex.assert_shape(mask, (n, n))
  assert set(np.unique(mask)) <= {0.0, 1.0}
  assert np.all(np.diag(mask) == 0)
  # Every neuron receives from exactly k others (a fixed fan-in, not Bernoulli draws).
  np.testing.assert_array_equal(mask.sum(axis=1), k)
  np.testing.assert_array_equal(topo.fan_in, k)
  assert topo.num_synapses == topo.num_slots == n * k
  # One fan-in block whose index table lists, per post neuron, exactly the pre neurons of the mask.
  assert topo.blocks == (network.Block(0, n, 0, k, fan_in_list=True),)
  (index,) = topo.block_pre_index
  chex.assert_shape(index, (n, k))
  want_index = np.stack([np.flatnonzero(row) for row in mask])
  np.testing.assert_array_equal(np.sort(np.asarray(index), axis=1), want_index)
  assert topo.block_masks == (None,)
  np.testing.assert_array_equal(topo.types, network.make_full(n_in, n_out, n_hidden).types)
  # Fixed by the seed.
  np.testing.assert_array_equal(network.make_sparse(n_in, n_out, n_hidden, density, seed=3).mask, mask)
  assert not np.array_equal(network.make_sparse(n_in, n_out, n_hidden, density, seed=4).mask, mask)
  dense = network.make_sparse(n_in, n_out, n_hidden, 1.0)
  np.testing.assert_array_equal(dense.mask, network.make_full(n_in, n_out, n_hidden).mask)
  # A density too small for one input still gives every neuron one.
  np.testing.assert_array_equal(np.asarray(network.make_sparse(3, 2, 4, 0.01).mask).sum(axis=1), 1)


@pytest.fixture(scope="module")
def blocks_of(wide):
  """`blocks_of(name)`: for topology `name`, a noisy initial state and its matrix, that matrix's
  blocks, a random `[N, N, Ds]` matrix, its blocks and their matrix, random activations, and per norm
  the `block_messages` of those blocks and the dense `messages` of their matrix; one compiled program
  per topology."""
  spec, theta = wide

  @jax.jit
  def run(theta, topo, matrix, act):
    state = network.init_net_state(theta, topo, jax.random.PRNGKey(4), noise=0.1)
    dense = network.dense_synapses(topo, state.synapses)
    blocks = network.block_synapses(topo, matrix)
    matrix_back = network.dense_synapses(topo, blocks)
    messages = {
      norm: (
        network.block_messages(topo, blocks, act, norm, REFERENCE_FAN_IN),
        network.messages(matrix_back, topo.mask, act, norm, REFERENCE_FAN_IN),
      )
      for norm in network.MESSAGE_NORMS
    }
    return dict(
      state=state,
      dense=dense,
      blocks_back=network.block_synapses(topo, dense),
      blocks=blocks,
      matrix_back=matrix_back,
      messages=messages,
    )

  @functools.cache
  def compute(name: str) -> dict:
    topo = _topology(name)
    rng = np.random.default_rng(5)
    matrix = rng.standard_normal((topo.num_neurons, topo.num_neurons, spec.synapse_dim)).astype(np.float32)
    act = rng.standard_normal((topo.num_neurons, spec.act_dim)).astype(np.float32)
    return dict(matrix=matrix, **run(theta, topo, jnp.asarray(matrix), jnp.asarray(act)))

  return compute


@pytest.mark.parametrize("name", TOPOLOGY_CASES)
def test_block_structure(wide, blocks_of, name):
  """Blocks hold exactly the synapses of the mask: initial states are zero exactly where the mask is
  0, blocks and matrix convert both ways, and a network stores one state per synapse (full: N^2)."""
  spec = wide[0]
  topo = _topology(name)
  n, mask = topo.num_neurons, np.asarray(topo.mask)
  np.testing.assert_array_equal(topo.fan_in, mask.sum(axis=1))
  assert len(topo.block_masks) == len(topo.block_pre_index) == len(topo.blocks)
  if name == "full":
    assert topo.num_slots == n * n
  else:
    assert topo.num_slots == topo.num_synapses
  out = blocks_of(name)
  state = out["state"]
  assert len(state.synapses) == len(topo.blocks)
  for block, syn, block_mask, index in zip(
    topo.blocks, state.synapses, topo.block_masks, topo.block_pre_index, strict=True
  ):
    chex.assert_shape(syn, (block.post_size, block.pre_size, spec.synapse_dim))
    assert block.fan_in_list == (index is not None)
    if block_mask is not None:  # masked-out entries of a block are stored as exact zeros
      chex.assert_shape(block_mask, (block.post_size, block.pre_size))
      assert np.all(np.asarray(syn)[np.asarray(block_mask) == 0] == 0)
  dense = np.asarray(out["dense"])
  chex.assert_shape(dense, (n, n, spec.synapse_dim))
  np.testing.assert_array_equal(np.any(dense != 0, axis=-1), mask > 0)
  # Round trips: blocks -> matrix -> blocks is the identity; matrix -> blocks -> matrix drops
  # exactly what lies off the mask (a block that overlapped another or covered a masked-out pair
  # without masking it would add or keep something here).
  _assert_blocks_equal(out["blocks_back"], state.synapses)
  assert len(out["blocks"]) == len(topo.blocks)
  np.testing.assert_array_equal(out["matrix_back"], out["matrix"] * mask[..., None])


@pytest.mark.parametrize("variant", ["", "layered", "layered_feedback", "sparse"])
def test_make_topology_from_config(make_cfg, variant):
  cfg = make_cfg(",".join(filter(None, ["tiny", variant])))
  cfg.net.synapse_updates = False
  cfg.net.body_recurrence = False
  topo = config_lib.make_topology(cfg.net)
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
    config_lib.make_topology(cfg.net)


# ---- initial state and messages ----


def test_init_net_state_uses_per_type_vectors(theta, small_spec):
  topo = network.make_sparse(3, 2, 4, 0.5, seed=1)
  state = network.init_net_state(theta, topo, jax.random.PRNGKey(0), noise=0.0)
  n, types, mask = topo.num_neurons, np.asarray(topo.types), np.asarray(topo.mask)
  chex.assert_shape(state.bodies, (n, small_spec.body_dim))
  (block,) = topo.blocks
  chex.assert_shape(state.synapses, [(n, block.pre_size, small_spec.synapse_dim)])
  np.testing.assert_array_equal(state.bodies, np.asarray(theta["init_body"])[types])
  want_syn = np.asarray(theta["init_synapse"])[types[:, None], types[None, :]] * mask[..., None]
  np.testing.assert_array_equal(_dense(topo, state), want_syn)

  noisy = network.init_net_state(theta, topo, jax.random.PRNGKey(0), noise=0.1)
  diff = np.asarray(noisy.bodies) - np.asarray(state.bodies)
  assert 0.02 < diff.std() < 0.5  # noise of the requested size breaks the symmetry
  syn_diff = _dense(topo, noisy) - want_syn
  assert 0.02 < syn_diff[mask > 0].std() < 0.5  # on every stored synapse too
  # (That absent synapses stay exactly zero, masked-out block entries included: test_block_structure.)


REFERENCE_FAN_IN = 3  # of the "sqrt_ref" norm


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
  msg = network.messages(jnp.asarray(syn), jnp.asarray(mask), jnp.asarray(act), norm, REFERENCE_FAN_IN)
  chex.assert_shape(msg, (n, ds * da))
  want = np.zeros((n, ds, da))
  for i in range(n):
    for j in range(n):
      want[i] += mask[i, j] * np.outer(syn[i, j], act[j])
    fan_in = max(mask[i].sum(), 1.0)
    scale = {
      "sqrt": np.sqrt(fan_in),
      "mean": fan_in,
      "sum": 1.0,
      "sqrt_ref": np.sqrt(fan_in * REFERENCE_FAN_IN),
    }
    want[i] /= scale[norm]
  np.testing.assert_allclose(msg, want.reshape(n, ds * da), rtol=RTOL, atol=1e-5)
  if norm == "sqrt_ref":
    with pytest.raises(ValueError, match="reference fan-in"):
      network.messages(jnp.asarray(syn), jnp.asarray(mask), jnp.asarray(act), norm)


@pytest.mark.parametrize("name", TOPOLOGY_CASES)
@pytest.mark.parametrize("norm", network.MESSAGE_NORMS)
def test_block_messages_equal_dense_messages(wide, blocks_of, name, norm):
  """`block_messages` of random blocks equals `messages` of their `[N, N, Ds]` matrix and the mask."""
  got, want = blocks_of(name)["messages"][norm]
  chex.assert_shape(got, (_topology(name).num_neurons, wide[0].msg_dim))
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-5)
  assert np.abs(np.asarray(want)).max() > 0.1  # not two zeros


def _without_synapses(topo: network.Topology) -> network.Topology:
  """A one-dense-block topology (`full`) whose block mask, and so every synapse, is zero."""
  n = topo.num_neurons
  (block,) = topo.blocks
  assert (block.post_size, block.pre_size, block.fan_in_list) == (n, n, False)
  zero = jnp.zeros((n, n))
  return topo.replace(mask=zero, fan_in=jnp.zeros((n,)), block_masks=(zero,))


def test_zero_mask_delivers_no_messages(theta, small_spec, full_topo, net_state, step_input):
  n = full_topo.num_neurons
  zero = jnp.zeros((n, n))
  act = jnp.asarray(np.random.default_rng(0).standard_normal((n, small_spec.act_dim)), jnp.float32)
  dense = network.dense_synapses(full_topo, net_state.synapses)
  np.testing.assert_array_equal(network.messages(dense, zero, act), 0.0)
  no_synapses = _without_synapses(full_topo)
  np.testing.assert_array_equal(network.block_messages(no_synapses, net_state.synapses, act), 0.0)

  # A step without synapses must equal a step whose synapses all carry zero weight: in both, every
  # neuron updates from its own body and input alone.
  state_masked, out_masked = _step(theta, no_synapses, small_spec, net_state, step_input)
  zero_syn = net_state.replace(synapses=jax.tree.map(jnp.zeros_like, net_state.synapses))
  state_zero, out_zero = _step(theta, full_topo, small_spec, zero_syn, step_input)
  np.testing.assert_allclose(state_masked.bodies, state_zero.bodies, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(out_masked.readout, out_zero.readout, rtol=RTOL, atol=ATOL)
  # ... and the synapses that do not exist are never updated.
  _assert_blocks_equal(state_masked.synapses, net_state.synapses)
  # The messages did matter in the connected network (otherwise the comparison above is vacuous).
  state_full, _ = _step(theta, full_topo, small_spec, net_state, step_input)
  assert not np.allclose(state_full.bodies, state_zero.bodies, atol=1e-3)


@pytest.mark.parametrize("fast", [True, False])
def test_absent_synapses_are_neither_updated_nor_read(
  theta, small_spec, full_topo, make_net_state, step_input, fast
):
  """Junk on the masked-out entries of a block (a full network's self-connections) stays as it is
  and changes nothing else: the block mask, not the stored value, decides what exists."""
  state = make_net_state(5, full_topo, small_spec)
  (clean,) = state.synapses
  absent = np.asarray(full_topo.block_masks[0]) == 0
  np.testing.assert_array_equal(absent, np.eye(full_topo.num_neurons, dtype=bool))
  junk = clean + jnp.asarray(absent[..., None] * 7.0, jnp.float32)
  act = np.random.default_rng(8).standard_normal((full_topo.num_neurons, small_spec.act_dim))
  act = jnp.asarray(act, jnp.float32)
  np.testing.assert_array_equal(
    network.block_messages(full_topo, (junk,), act), network.block_messages(full_topo, (clean,), act)
  )
  np.testing.assert_array_equal(_dense(full_topo, (junk,)), _dense(full_topo, (clean,)))
  new, new_out = _step(theta, full_topo, small_spec, state.replace(synapses=(junk,)), step_input, fast)
  ref, ref_out = _step(theta, full_topo, small_spec, state, step_input, fast)
  (new_syn,), (ref_syn,) = new.synapses, ref.synapses
  present = ~absent
  np.testing.assert_array_equal(np.asarray(new_syn)[absent], np.asarray(junk)[absent])
  np.testing.assert_allclose(np.asarray(new_syn)[present], np.asarray(ref_syn)[present], rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(new.bodies, ref.bodies, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(new_out.readout, ref_out.readout, rtol=RTOL, atol=ATOL)
  assert not np.allclose(np.asarray(new_syn)[present], np.asarray(clean)[present])


# ---- network_step ----


def test_network_step_shapes(theta, small_spec, full_topo, net_state, step_input):
  n = full_topo.num_neurons
  new, out = _step(theta, full_topo, small_spec, net_state, step_input)
  chex.assert_shape(new.bodies, (n, small_spec.body_dim))
  (block,) = full_topo.blocks
  chex.assert_shape(new.synapses, [(block.post_size, block.pre_size, small_spec.synapse_dim)])
  chex.assert_shape(network.dense_synapses(full_topo, new.synapses), (n, n, small_spec.synapse_dim))
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
  eager = _eager_step(theta, full_topo, small_spec, net_state, step_input, fast)
  jitted = _step(theta, full_topo, small_spec, net_state, step_input, fast)
  trees_close(jitted, eager, rtol=RTOL, atol=ATOL)


@functools.partial(jax.jit, static_argnums=2)
def _three_steps(theta, topo, spec, state, x):
  """The fast step, the per-synapse step and the reference step (learned_rules/reference.py: the
  `[N, N, Ds]` matrix with the dense mask, one synapse at a time), in one compiled program."""
  return (
    _eager_step(theta, topo, spec, state, x, True),
    _eager_step(theta, topo, spec, state, x, False),
    reference.step(theta, topo, spec, reference.dense_state(topo, state), x),
  )


STEP_CASES = [(name, True) for name in ("full", "layered_2", "layered_feedback", "sparse")] + [
  ("sparse", False)
]


@pytest.mark.parametrize("name,bilinear", STEP_CASES, ids=[f"{n}-bilinear={b}" for n, b in STEP_CASES])
def test_fast_and_per_synapse_steps_equal_a_dense_reference(
  make_net_state, wide, trees_close, name, bilinear
):
  """The block step (split first layer, and per-synapse vmap) against the step on the dense matrix."""
  spec, theta = wide
  if not bilinear:
    spec, theta = dataclasses.replace(spec, bilinear=False), _without_bilinear(theta)
  topo = _topology(name)
  state = make_net_state(21, topo, spec)
  x = jnp.asarray(np.random.default_rng(22).choice([-1.0, 1.0], topo.num_neurons), jnp.float32)
  fast, slow, ((bodies, synapses), readout) = _three_steps(theta, topo, spec, state, x)
  trees_close(fast, slow, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(fast[0].bodies, bodies, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(_dense(topo, fast[0]), synapses, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(fast[1].readout, readout, rtol=RTOL, atol=ATOL)
  mask = np.asarray(topo.mask) > 0
  assert not np.allclose(_dense(topo, fast[0])[mask], _dense(topo, state)[mask], atol=1e-3)  # it moved


def test_error_input_starts_as_the_rule_without_it_then_writes_by_the_post_neurons_error(
  theta, small_spec, full_topo, net_state, trees_close
):
  """`error_input`: a rule given its post neurons' own errors by `rules.with_error_input` steps exactly
  as before; once the error's weights move, only synapses into neurons with an external input (whose
  error is not 0) change, and the block and per-synapse forms agree."""
  spec = dataclasses.replace(small_spec, error_input=True)
  da = spec.act_dim
  extended = rules.with_error_input(theta, da)
  chex.assert_trees_all_equal_shapes(extended, jax.eval_shape(rules.init_theta, jax.random.PRNGKey(0), spec))
  n_io = N_IN + N_OUT
  x = jnp.asarray(np.r_[np.random.default_rng(4).choice([-1.0, 1.0], n_io), np.zeros(N_HIDDEN)], jnp.float32)
  plain, _ = _step(theta, full_topo, small_spec, net_state, x)
  trees_close(_step(extended, full_topo, spec, net_state, x)[0], plain, rtol=RTOL, atol=ATOL)
  msg = network.block_messages(
    full_topo,
    net_state.synapses,
    jax.vmap(rules.activation, (None, 0, 0, None))(theta, net_state.bodies, x, spec),
    spec.message_norm,
  )
  errors = network.own_errors(
    theta, full_topo, spec, net_state.bodies, msg, x, theta["type_emb"][full_topo.types]
  )
  assert np.all(errors[n_io:] == 0) and np.all(np.abs(errors[:n_io]) > 1e-3), errors
  rng = np.random.default_rng(5)
  p = extended["synapse"]
  moved = {
    **extended,
    "synapse": {
      **p,
      "w_post": p["w_post"].at[da].set(jnp.asarray(rng.standard_normal(p["w_post"].shape[1]), jnp.float32)),
      "w_bi": p["w_bi"].at[:, da].set(jnp.asarray(rng.standard_normal(p["w_bi"][:, da].shape), jnp.float32)),
    },
  }
  fast, _ = _step(moved, full_topo, spec, net_state, x, True)
  trees_close(fast, _step(moved, full_topo, spec, net_state, x, False)[0], rtol=RTOL, atol=ATOL)
  before, after = _dense(full_topo, plain), _dense(full_topo, fast)
  mask = np.asarray(full_topo.mask) > 0
  np.testing.assert_allclose(after[n_io:], before[n_io:], rtol=RTOL, atol=ATOL)  # hidden posts: error 0
  assert np.all(np.any(np.abs(after - before)[:n_io][mask[:n_io]] > 1e-4, axis=-1))


def test_more_hidden_units_start_as_the_rule_with_fewer(theta, small_spec, full_topo, net_state, trees_close):
  """`rules.with_more_hidden`: the rule's MLPs grown by 3 hidden units (new outgoing weights at 0) step
  exactly as before; the new units' incoming weights are drawn, so their gradient is not 0."""
  spec = dataclasses.replace(small_spec, hidden=small_spec.hidden + 3)
  grown = rules.with_more_hidden(theta, spec, jax.random.PRNGKey(9))
  chex.assert_trees_all_equal_shapes(grown, jax.eval_shape(rules.init_theta, jax.random.PRNGKey(0), spec))
  x = jnp.asarray(np.random.default_rng(6).choice([-1.0, 1.0], full_topo.num_neurons), jnp.float32)
  trees_close(
    _step(grown, full_topo, spec, net_state, x),
    _step(theta, full_topo, small_spec, net_state, x),
    rtol=RTOL,
    atol=ATOL,
  )
  loss = lambda t: jnp.sum(_eager_step(t, full_topo, spec, net_state, x)[0].synapses[0] ** 2)  # noqa: E731
  new_rows = jax.jit(jax.grad(loss))(grown)["synapse"]["w2"][small_spec.hidden :]
  assert np.abs(new_rows).max() > 1e-6
  with pytest.raises(ValueError, match="hidden units"):
    rules.with_more_hidden(grown, small_spec, jax.random.PRNGKey(9))


def test_more_synapse_state_starts_as_the_rule_with_less(
  theta, small_spec, full_topo, net_state, trees_close
):
  """`rules.with_more_synapse_state`: two more channels in every synapse, started at 0. The grown rule
  steps as before on the old channels, bodies and readouts; it writes the new channels, and from the
  second step on its loss has a gradient into the weights that read them (into `f_s` and `f_b`)."""
  have = small_spec.synapse_dim
  spec = dataclasses.replace(small_spec, synapse_dim=have + 2)
  grown = rules.with_more_synapse_state(theta, spec, jax.random.PRNGKey(9))
  chex.assert_trees_all_equal_shapes(grown, jax.eval_shape(rules.init_theta, jax.random.PRNGKey(0), spec))
  padded = net_state.replace(
    synapses=tuple(
      jnp.concatenate([s, jnp.zeros((*s.shape[:-1], 2), s.dtype)], -1) for s in net_state.synapses
    )
  )
  x = jnp.asarray(np.random.default_rng(7).choice([-1.0, 1.0], full_topo.num_neurons), jnp.float32)
  state, want_state = padded, net_state
  for _ in range(2):  # the second step reads the channels the first wrote
    (state, out), (want_state, want_out) = (
      _step(grown, full_topo, spec, state, x),
      _step(theta, full_topo, small_spec, want_state, x),
    )
    assert np.abs(_dense(full_topo, state)[..., have:]).max() > 1e-3  # the new channels are written
    trees_close((state.bodies, out), (want_state.bodies, want_out), rtol=RTOL, atol=ATOL)
    trees_close(tuple(s[..., :have] for s in state.synapses), want_state.synapses, rtol=RTOL, atol=ATOL)

  def loss(t):
    first, _ = _eager_step(t, full_topo, spec, padded, x)
    second, _ = _eager_step(t, full_topo, spec, first, x)
    return jnp.sum(second.bodies**2) + jnp.sum(second.synapses[0] ** 2)

  grads = jax.jit(jax.grad(loss))(grown)
  msg_end = small_spec.body_dim + have * small_spec.act_dim
  assert np.abs(grads["body"]["w1"][msg_end : msg_end + 2 * small_spec.act_dim]).max() > 1e-6
  assert np.abs(grads["synapse"]["w_s"][have:]).max() > 1e-6
  with pytest.raises(ValueError, match="synapse state channels"):
    rules.with_more_synapse_state(grown, small_spec, jax.random.PRNGKey(9))


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


def _permuted(topo: network.Topology, state: network.NetState, perm: np.ndarray):
  """The topology and state with neuron `i` moved to position `perm^-1[i]` (new neuron `i` is old
  neuron `perm[i]`), for topologies of one block over all post neurons (full, sparse)."""
  n = topo.num_neurons
  (block,) = topo.blocks
  assert (block.post_start, block.post_size) == (0, n)
  p, inv = jnp.asarray(perm), jnp.asarray(np.argsort(perm))
  permuted_topo = topo.replace(
    mask=topo.mask[p][:, p],
    fan_in=topo.fan_in[p],
    block_masks=tuple(None if m is None else m[p][:, p] for m in topo.block_masks),
    block_pre_index=tuple(None if i is None else inv[i[p]] for i in topo.block_pre_index),
  )
  dense = network.dense_synapses(topo, state.synapses)[p][:, p]
  permuted_state = network.NetState(
    bodies=state.bodies[p], synapses=network.block_synapses(permuted_topo, dense)
  )
  return permuted_topo, permuted_state


@pytest.mark.parametrize("group", [HIDDEN_TYPE, OUTPUT_TYPE, INPUT_TYPE])
def test_permuting_same_type_neurons_permutes_outputs(theta, small_spec, make_net_state, group):
  n_in, n_out = 3, 3
  topo = network.make_sparse(n_in, n_out, 5, 0.6, seed=0)
  state = make_net_state(30, topo, small_spec)
  x = jnp.asarray(np.random.default_rng(31).standard_normal(topo.num_neurons), jnp.float32)
  perm = _permute_group(topo, group, 32)
  p = jnp.asarray(perm)

  permuted_topo, permuted_state = _permuted(topo, state, perm)
  np.testing.assert_array_equal(permuted_topo.types, topo.types)  # same types at every position
  # The permuted fan-in lists name exactly the pre neurons of the permuted mask.
  (index,) = permuted_topo.block_pre_index
  in_lists = np.zeros((topo.num_neurons, topo.num_neurons))
  in_lists[np.arange(topo.num_neurons)[:, None], np.asarray(index)] = 1.0
  np.testing.assert_array_equal(in_lists, permuted_topo.mask)

  new, out = _step(theta, topo, small_spec, state, x)
  new_p, out_p = _step(theta, permuted_topo, small_spec, permuted_state, x[p])
  np.testing.assert_allclose(new_p.bodies, new.bodies[p], rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(
    _dense(permuted_topo, new_p), _dense(topo, new)[perm][:, perm], rtol=RTOL, atol=ATOL
  )
  # Readouts follow the output neurons; permuting other neurons leaves them unchanged.
  out_perm = perm[n_in : n_in + n_out] - n_in
  np.testing.assert_allclose(out_p.readout, out.readout[out_perm], rtol=RTOL, atol=ATOL)
  if group != OUTPUT_TYPE:
    np.testing.assert_array_equal(out_perm, np.arange(n_out))


def test_permuting_hidden_neurons_of_full_network(theta, small_spec, full_topo, net_state, step_input):
  """The case docs/DESIGN.md names: hidden neurons of a `full` network, readouts unchanged."""
  perm = _permute_group(full_topo, HIDDEN_TYPE, 33)
  p = jnp.asarray(perm)
  permuted_topo, permuted_state = _permuted(full_topo, net_state, perm)
  new, out = _step(theta, full_topo, small_spec, net_state, step_input)
  new_p, out_p = _step(theta, permuted_topo, small_spec, permuted_state, step_input[p])
  np.testing.assert_allclose(new_p.bodies, new.bodies[p], rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(
    _dense(permuted_topo, new_p), _dense(full_topo, new)[perm][:, perm], rtol=RTOL, atol=ATOL
  )
  np.testing.assert_allclose(out_p.readout, out.readout, rtol=RTOL, atol=ATOL)


def test_permuting_neurons_of_different_types_is_not_a_symmetry(
  theta, small_spec, full_topo, net_state, step_input
):
  """Control for the permutation tests: swapping an input with a hidden neuron changes the step."""
  n_in = full_topo.n_in
  perm = np.arange(full_topo.num_neurons)
  perm[[0, n_in + full_topo.n_out]] = perm[[n_in + full_topo.n_out, 0]]
  p = jnp.asarray(perm)
  _, permuted_state = _permuted(full_topo, net_state, perm)
  new, _ = _step(theta, full_topo, small_spec, net_state, step_input)
  new_p, _ = _step(theta, full_topo, small_spec, permuted_state, step_input[p])
  assert not np.allclose(new_p.bodies, new.bodies[p], atol=1e-3)


def test_synapse_updates_off_leaves_synapses_unchanged(theta, small_spec, net_state, step_input):
  frozen = network.make_full(N_IN, N_OUT, N_HIDDEN, synapse_updates=False)
  learning = network.make_full(N_IN, N_OUT, N_HIDDEN)
  state_frozen, state_learning = net_state, net_state
  for _ in range(3):
    prev_bodies = state_frozen.bodies
    state_frozen, _ = _step(theta, frozen, small_spec, state_frozen, step_input, True)
    state_learning, _ = _step(theta, learning, small_spec, state_learning, step_input, True)
    _assert_blocks_equal(state_frozen.synapses, net_state.synapses)
    assert not np.allclose(state_frozen.bodies, prev_bodies, atol=1e-4)  # bodies still move
  assert not np.allclose(_dense(learning, state_learning), _dense(learning, net_state), atol=1e-3)


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("name", ["full", "layered_2", "layered_feedback", "sparse"])
def test_random_input_synapses_are_fixed_draws_and_the_rest_learns(wide, name, center):
  """With `random_input_synapses` the synapses from an input neuron into a hidden one start as draws
  of that std that the learned initial state does not move, and stay put through the steps (with
  centring too); every other synapse starts as without the option and is updated."""
  spec, theta = wide
  spec = dataclasses.replace(spec, center_synapses=center)
  plain, fixed_topo = _topology(name), _topology(name, random_input_synapses=2.0)  # fixed draws of std 2
  types, mask = np.asarray(plain.types), np.asarray(plain.mask) > 0
  fixed = mask & (types[:, None] >= HIDDEN_TYPE) & (types[None, :] == INPUT_TYPE)
  assert fixed.any() and (mask & ~fixed).any()
  key = jax.random.PRNGKey(5)
  state = network.init_net_state(theta, fixed_topo, key, 0.1)
  shifted = {**theta, "init_synapse": theta["init_synapse"] + 5.0}  # moves every learned initial state
  start, start_shifted = (
    _dense(plain, state),
    _dense(plain, network.init_net_state(shifted, fixed_topo, key, 0.1)),
  )
  np.testing.assert_array_equal(start[fixed], start_shifted[fixed])
  np.testing.assert_allclose(
    start[mask & ~fixed], _dense(plain, network.init_net_state(theta, plain, key, 0.1))[mask & ~fixed]
  )
  assert 1.0 < np.std(start[fixed]) < 3.5, np.std(start[fixed])  # std 2 from a few dozen draws
  x = jnp.asarray(np.random.default_rng(6).choice([-1.0, 1.0], plain.num_neurons), jnp.float32)
  for _ in range(3):
    state, _ = _step(theta, fixed_topo, spec, state, x, True)
  end = _dense(plain, state)
  np.testing.assert_array_equal(end[fixed], start[fixed])
  assert np.all(np.any(np.abs(end - start)[mask & ~fixed] > 1e-4, axis=-1))


def test_random_input_synapses_from_the_config(make_cfg):
  cfg = make_cfg("tiny")
  assert config_lib.make_topology(cfg.net).random_input_synapses == 0.0
  cfg.net.random_input_synapses = 1.5
  config_lib.validate(cfg)
  assert config_lib.make_topology(cfg.net).random_input_synapses == 1.5
  cfg.net.random_input_synapses = -1.0
  with pytest.raises(ValueError, match="net.random_input_synapses"):
    config_lib.validate(cfg)
  cfg.net.random_input_synapses, cfg.net.synapse_updates, cfg.net.trained_synapses = 1.0, False, True
  with pytest.raises(ValueError, match="net.random_input_synapses.*trained_synapses"):
    config_lib.validate(cfg)


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


@pytest.mark.parametrize("name,latency", [("full", 0), ("layered_1", 1), ("layered_2", 2), ("sparse", 1)])
def test_a_key_reaches_the_readout_after_exactly_the_key_latency(wide, make_net_state, name, latency):
  """`key_latency` is what the network step does: a key shown at step 0 (and nothing after it) changes
  the readout of an output k synapses away first at step k - 1, so every readout by step L."""
  spec, theta = wide
  topo = _topology(name)
  assert network.key_latency(topo) == latency
  assert network.key_hops(np.asarray(topo.mask), topo.n_in, topo.n_out) == latency + 1
  state = make_net_state(4, topo, spec)
  key = jnp.zeros(topo.num_neurons).at[: topo.n_in].set(1.0)
  readouts = {}
  for shown in (False, True):
    s, outs = state, []
    for t in range(latency + 1):
      x = key if (shown and t == 0) else jnp.zeros(topo.num_neurons)
      s, out = _step(theta, topo, spec, s, x, True)
      outs.append(np.asarray(out.readout))
    readouts[shown] = outs
  # Each output's own distance, by powers of the mask: hops(o) = the least k with a k-hop path.
  mask = np.asarray(topo.mask) > 0
  paths, hops = mask.copy(), np.zeros(topo.n_out, int)
  for k in range(1, topo.num_neurons):
    new = (hops == 0) & paths[topo.n_in : topo.n_in + topo.n_out, : topo.n_in].any(axis=1)
    hops[new] = k
    paths = (mask.astype(int) @ paths.astype(int)) > 0
  assert hops.max() == latency + 1
  for t in range(latency + 1):
    changed = np.abs(readouts[True][t] - readouts[False][t]) > 1e-6
    np.testing.assert_array_equal(changed, hops - 1 <= t)


def test_key_hops_of_an_unreachable_output_is_an_error():
  mask = np.zeros((3, 3))  # input 0, output 1, hidden 2: no synapse at all
  with pytest.raises(ValueError, match="no path"):
    network.key_hops(mask, 1, 1)


@pytest.mark.parametrize("name", ["full", "layered_feedback", "sparse"])
def test_centered_synapses_have_zero_mean_per_post_neuron(make_net_state, wide, name):
  """`center_synapses`: after a step, every neuron's incoming synapse states (over all the blocks it
  receives from, absent synapses not counted) average 0 per channel, and are the uncentered step's
  states minus that mean; absent synapses stay 0."""
  spec, theta = wide
  topo = _topology(name)
  state = make_net_state(23, topo, spec)
  x = jnp.asarray(np.random.default_rng(24).choice([-1.0, 1.0], topo.num_neurons), jnp.float32)
  plain, _ = network.network_step(theta, topo, spec, state, x)
  centered, _ = network.network_step(theta, topo, dataclasses.replace(spec, center_synapses=True), state, x)
  mask = np.asarray(topo.mask) > 0
  dense, before = _dense(topo, centered), _dense(topo, plain)
  fan_in = mask.sum(axis=1)
  means = (dense * mask[..., None]).sum(axis=1) / np.maximum(fan_in, 1)[:, None]
  np.testing.assert_allclose(means, 0.0, atol=1e-5)
  want = before - ((before * mask[..., None]).sum(axis=1) / np.maximum(fan_in, 1)[:, None])[:, None, :]
  np.testing.assert_allclose(dense[mask], want[mask], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(dense[~mask], 0.0)
  assert np.abs(before[mask].mean(axis=0)).max() > 1e-3  # the uncentered states had a mean to remove
