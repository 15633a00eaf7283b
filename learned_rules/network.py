"""Topologies, network state, and `network_step`: the one place that vmaps the rules.

Neuron order is the same in every topology: the `n_in` input neurons first, then the `n_out` output
neurons, then the hidden neurons. Type ids: 0 input, 1 output, 2.. hidden (one type per hidden layer in
the layered topologies, one hidden type otherwise). `mask[i, j] = 1` where the synapse `j -> i` exists
(docs/DESIGN.md, "The model").

Synapse states are stored in blocks, so that a network's cost is proportional to its synapse count
and not to N^2. A `Block` covers a contiguous range of post neurons and either a contiguous range of
pre neurons (a dense `[P, Q, Ds]` array, post-major: `[p, q]` is the synapse `pre q -> post p`) or a
fan-in list per post neuron (`[P, K, Ds]`, the pre neuron of entry `[p, k]` given by an index table).
`full` is one dense block (masked to drop self-connections), `layered` one dense block per pair of
connected layers, `sparse` one fan-in block with K = density x (N - 1) random inputs per neuron.
`dense_synapses` and `block_synapses` convert between blocks and the `[N, N, Ds]` matrix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from learned_rules import rules

TOPOLOGIES = ("full", "layered", "layered_feedback", "sparse")
INPUT_TYPE, OUTPUT_TYPE, HIDDEN_TYPE = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Block:
  """Static shape of one block of synapses (see the module docstring).

  Attributes:
    post_start, post_size: the block's post neurons are `post_start ... post_start + post_size - 1`.
    pre_start, pre_size: dense blocks: the pre neurons `pre_start ... pre_start + pre_size - 1`;
      fan-in blocks: `pre_start` is 0 and `pre_size` is the fan-in K.
    fan_in_list: True for a fan-in block, whose pre neurons come from `Topology.block_pre_index`.
  """

  post_start: int
  post_size: int
  pre_start: int
  pre_size: int
  fan_in_list: bool = False

  @property
  def post(self) -> slice:
    return slice(self.post_start, self.post_start + self.post_size)

  @property
  def pre(self) -> slice:
    return slice(self.pre_start, self.pre_start + self.pre_size)


@flax.struct.dataclass
class Topology:
  """Connectivity and neuron types of one network.

  Attributes:
    mask: `[N, N]` float32, `mask[i, j] = 1` if the synapse `j -> i` exists (a dense view, for
      analysis and tests; the network step uses the blocks).
    types: `[N]` int32 type id of every neuron.
    fan_in: `[N]` float32 number of synapses into every neuron.
    block_masks: per block, `[P, Q]` float32 marking which of the block's synapses exist, or None
      when all do.
    block_pre_index: per block, `[P, K]` int32 pre neuron of every entry of a fan-in block, or None.
    blocks: static shapes of the blocks.
    n_in, n_out, num_types: static sizes.
    synapse_updates: static ablation switch; False freezes every synapse at its initial state.
    body_recurrence: static ablation switch; False makes each body update forget the previous body.
    trained_synapses: static switch (with `synapse_updates` False): every synapse's initial (and so
      fixed) state is its own meta-parameter, `theta[SYNAPSE_WEIGHTS]`, with no noise: a trained
      recurrent network of the same wiring (`init_synapse_weights`).
    random_input_synapses: static; when > 0, every synapse from an input neuron into a hidden neuron
      is a fixed random draw, its state `random_input_synapses * N(0, 1)` per channel, and is never
      updated (`fixed_input_synapses`): the hidden neurons are fixed random functions of the key, as in
      the `random_delta` and `random_projection` baselines, and the rule writes the rest. 0: off.
  """

  mask: jax.Array
  types: jax.Array
  fan_in: jax.Array
  block_masks: tuple
  block_pre_index: tuple
  blocks: tuple[Block, ...] = flax.struct.field(pytree_node=False)
  n_in: int = flax.struct.field(pytree_node=False)
  n_out: int = flax.struct.field(pytree_node=False)
  num_types: int = flax.struct.field(pytree_node=False)
  synapse_updates: bool = flax.struct.field(pytree_node=False, default=True)
  body_recurrence: bool = flax.struct.field(pytree_node=False, default=True)
  trained_synapses: bool = flax.struct.field(pytree_node=False, default=False)
  random_input_synapses: float = flax.struct.field(pytree_node=False, default=0.0)

  @property
  def num_neurons(self) -> int:
    return self.types.shape[0]

  @property
  def num_synapses(self) -> int:
    return int(np.asarray(self.mask).sum())

  @property
  def num_slots(self) -> int:
    """Synapse states stored (and updated) per network: the synapses plus masked-out padding."""
    return sum(b.post_size * b.pre_size for b in self.blocks)


@flax.struct.dataclass
class NetState:
  """State of one network: `bodies` `[N, Db]`, `synapses` one `[P, Q, Ds]` array per block."""

  bodies: jax.Array
  synapses: tuple


def max_abs_state(state: NetState) -> tuple[jax.Array, jax.Array]:
  """The largest absolute body entry and synapse entry `[]` of `state` (one network or a batch); NaN if
  any entry is NaN, so a state that blew up shows it."""
  largest = lambda arrays: jnp.max(jnp.stack([jnp.max(jnp.abs(a)) for a in arrays]))  # noqa: E731
  return largest([state.bodies]), largest(state.synapses)


class StepOutput(NamedTuple):
  readout: jax.Array  # [n_out] readouts of the output neurons after the step


def _topology(
  mask: np.ndarray,
  types: np.ndarray,
  n_in: int,
  n_out: int,
  blocks: Sequence[Block],
  block_masks: Sequence[np.ndarray | None],
  block_pre_index: Sequence[np.ndarray | None],
  **ablations,
) -> Topology:
  return Topology(
    mask=jnp.asarray(mask, jnp.float32),
    types=jnp.asarray(types, jnp.int32),
    fan_in=jnp.asarray(mask.sum(axis=1), jnp.float32),
    block_masks=tuple(None if m is None else jnp.asarray(m, jnp.float32) for m in block_masks),
    block_pre_index=tuple(None if i is None else jnp.asarray(i, jnp.int32) for i in block_pre_index),
    blocks=tuple(blocks),
    n_in=n_in,
    n_out=n_out,
    num_types=int(types.max()) + 1,
    **ablations,
  )


def _dense_topology(mask: np.ndarray, types: np.ndarray, n_in: int, n_out: int, **ablations) -> Topology:
  """One dense block over all neurons, masked unless every synapse exists."""
  n = mask.shape[0]
  block_mask = None if mask.all() else mask
  return _topology(mask, types, n_in, n_out, [Block(0, n, 0, n)], [block_mask], [None], **ablations)


def make_full(n_in: int, n_out: int, n_hidden: int, self_connections: bool = False, **ablations) -> Topology:
  """All-to-all recurrent network with input, output and hidden types."""
  n = n_in + n_out + n_hidden
  mask = np.ones((n, n), np.float32)
  if not self_connections:
    np.fill_diagonal(mask, 0.0)
  types = np.array([INPUT_TYPE] * n_in + [OUTPUT_TYPE] * n_out + [HIDDEN_TYPE] * n_hidden)
  return _dense_topology(mask, types, n_in, n_out, **ablations)


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
  blocks = []
  for k in range(len(sizes) - 1):
    blocks.append(Block(starts[k + 1], sizes[k + 1], starts[k], sizes[k]))  # layer k -> k + 1
    if feedback:
      blocks.append(Block(starts[k], sizes[k], starts[k + 1], sizes[k + 1]))  # its backward twin
  for b in blocks:
    mask[b.post, b.pre] = 1.0
  none = [None] * len(blocks)
  return _topology(mask, types, n_in, n_out, blocks, none, none, **ablations)


def make_sparse(n_in: int, n_out: int, n_hidden: int, density: float, seed: int = 0, **ablations) -> Topology:
  """Random connectivity: every neuron receives from `round(density * (N - 1))` other neurons (at
  least one), drawn without replacement by `seed`. Stored as one fan-in block: its cost is
  proportional to the synapse count."""
  n = n_in + n_out + n_hidden
  fan_in = min(max(round(density * (n - 1)), 1), n - 1)
  rng = np.random.default_rng(seed)
  index = np.stack([np.sort(rng.choice(np.delete(np.arange(n), i), fan_in, replace=False)) for i in range(n)])
  mask = np.zeros((n, n), np.float32)
  mask[np.arange(n)[:, None], index] = 1.0
  types = np.asarray(make_full(n_in, n_out, n_hidden).types)
  block = Block(0, n, 0, fan_in, fan_in_list=True)
  return _topology(mask, types, n_in, n_out, [block], [None], [index], **ablations)


def key_hops(mask, n_in: int, n_out: int) -> int:
  """Synapse hops from the input neurons to the farthest output neuron: for every output neuron the
  shortest directed path from any input neuron, and the largest of those (1 in `full`, the hidden-layer
  count + 1 in `layered`). `mask` `[N, N]` (`mask[i, j]`: the synapse `j -> i`); raises ValueError if an
  output neuron cannot be reached at all. Numpy only: `config.validate` calls it before anything runs."""
  reach = np.asarray(mask) > 0
  n = reach.shape[0]
  dist = np.full(n, -1)
  frontier = np.zeros(n, bool)
  frontier[:n_in] = True
  dist[:n_in] = 0
  hops = 0
  while frontier.any():
    hops += 1
    nxt = reach[:, frontier].any(axis=1) & (dist < 0)
    dist[nxt] = hops
    frontier = nxt
  outputs = dist[n_in : n_in + n_out]
  if (outputs < 0).any():
    raise ValueError("no path of synapses from the input neurons to every output neuron")
  return int(outputs.max())


def key_latency(topo: Topology) -> int:
  """Steps L after which a key shown on the inputs can first affect the readout: `key_hops - 1`. In one
  `network_step` the messages come from the bodies before the update and the readout from the output
  bodies after it, so a key shown at step t reaches a neuron k synapses away at step t + k - 1."""
  return key_hops(np.asarray(topo.mask), topo.n_in, topo.n_out) - 1


def _block_pre(topo: Topology, b: int, per_neuron: jax.Array) -> jax.Array:
  """The pre neurons' rows of `per_neuron` `[N, ...]` for block `b`: `[Q, ...]`, or `[P, K, ...]`
  for a fan-in block."""
  block = topo.blocks[b]
  if block.fan_in_list:
    return per_neuron[topo.block_pre_index[b]]
  return per_neuron[block.pre]


def _masked(topo: Topology, b: int, syn: jax.Array) -> jax.Array:
  mask = topo.block_masks[b]
  return syn if mask is None else syn * mask[..., None]


def _block_types(topo: Topology, b: int) -> tuple[jax.Array, jax.Array]:
  """The post and pre neuron types of block `b`'s synapses, `[P, 1]` and `[1, Q]` (`[P, K]` for a fan-in
  block), which broadcast to the block's `[P, Q]` (or `[P, K]`)."""
  pre_types = _block_pre(topo, b, topo.types)
  return topo.types[topo.blocks[b].post][:, None], pre_types if pre_types.ndim == 2 else pre_types[None, :]


def fixed_input_synapses(topo: Topology, b: int) -> jax.Array | None:
  """Which synapses of block `b` are fixed random draws (`Topology.random_input_synapses`): `[P, Q, 1]`
  (or `[P, K, 1]`) bool, True from an input neuron into a hidden one where the synapse exists; None
  when the option is off."""
  if topo.random_input_synapses <= 0:
    return None
  post_types, pre_types = _block_types(topo, b)
  fixed = (post_types >= HIDDEN_TYPE) & (pre_types == INPUT_TYPE)
  mask = topo.block_masks[b]
  return (fixed if mask is None else fixed & (mask > 0))[..., None]


def fixed_inputs_differ(trained: Topology, given: Sequence[Topology]) -> str | None:
  """None when every topology of `given` has the fixed random input -> hidden synapses
  (`random_input_synapses`) of `trained`, the network a rule was meta-trained on; else what differs,
  for a warning (`memory.rule_fields`, `meta_train.initial_theta`)."""
  others = sorted({topo.random_input_synapses for topo in given} - {trained.random_input_synapses})
  if not others:
    return None
  return (
    f"the rule was meta-trained with net.random_input_synapses={trained.random_input_synapses} (fixed "
    f"random input -> hidden synapses), the network given has {', '.join(map(str, others))}"
  )


def keep_fixed_synapses(topo: Topology, old: Sequence[jax.Array], new: Sequence[jax.Array]) -> tuple:
  """`new` with the fixed random synapses (`fixed_input_synapses`) put back to their `old` states."""
  fixed = [fixed_input_synapses(topo, b) for b in range(len(topo.blocks))]
  return tuple(n if f is None else jnp.where(f, o, n) for f, o, n in zip(fixed, old, new, strict=True))


# The theta entry of a `trained_synapses` network: one `[P, Q, Ds]` (or `[P, K, Ds]`) array per block.
SYNAPSE_WEIGHTS = "synapse_weights"


def init_synapse_weights(key: jax.Array, topo: Topology, synapse_dim: int) -> tuple:
  """Initial per-synapse weights of a `trained_synapses` network: one standard normal array per block,
  `[P, Q, Ds]` (or `[P, K, Ds]` for a fan-in block), shaped like `NetState.synapses`, zero where a
  block's synapse does not exist. Messages are divided by sqrt(fan-in) (`messages`), so unit variance
  is a LeCun-like scale."""
  keys = jax.random.split(key, len(topo.blocks))
  return tuple(
    _masked(topo, b, jax.random.normal(keys[b], (block.post_size, block.pre_size, synapse_dim)))
    for b, block in enumerate(topo.blocks)
  )


def with_synapse_weights(theta: rules.Theta, topo: Topology, key: jax.Array) -> rules.Theta:
  """`theta` plus `theta[SYNAPSE_WEIGHTS]` (`init_synapse_weights`, drawn from `key`) when `topo` has
  `trained_synapses`; `theta` itself otherwise. The weights depend on the topology, which
  `rules.init_theta` does not see."""
  if not topo.trained_synapses:
    return theta
  synapse_dim = theta["init_synapse"].shape[-1]
  return {**theta, SYNAPSE_WEIGHTS: init_synapse_weights(key, topo, synapse_dim)}


def init_net_state(theta: rules.Theta, topo: Topology, key: jax.Array, noise: float) -> NetState:
  """Initial state: learned per-type (per-type-pair) vectors plus Gaussian noise of std `noise`.

  The noise breaks the symmetry between neurons of one type, which would otherwise stay identical.
  Absent synapses (masked-out entries of a block) are zero. With `topo.trained_synapses` the synapses
  are `theta[SYNAPSE_WEIGHTS]` as they are, without noise (the bodies keep theirs). With
  `topo.random_input_synapses` the input -> hidden synapses are `random_input_synapses * N(0, 1)`
  instead, from their own keys (`fixed_input_synapses`).
  """
  kb, *ks = jax.random.split(key, 1 + len(topo.blocks))
  bodies = theta["init_body"][topo.types]
  bodies = bodies + noise * jax.random.normal(kb, bodies.shape)
  if topo.trained_synapses:
    if SYNAPSE_WEIGHTS not in theta:
      raise ValueError(
        f"init_net_state: the topology has trained_synapses but theta has no {SYNAPSE_WEIGHTS!r} "
        "(add them with network.with_synapse_weights, as meta-training does)"
      )
    weights = theta[SYNAPSE_WEIGHTS]
    return NetState(bodies=bodies, synapses=tuple(_masked(topo, b, w) for b, w in enumerate(weights)))
  synapses = []
  for b in range(len(topo.blocks)):
    syn = theta["init_synapse"][_block_types(topo, b)]
    syn = syn + noise * jax.random.normal(ks[b], syn.shape)
    fixed = fixed_input_synapses(topo, b)
    if fixed is not None:
      draw = topo.random_input_synapses * jax.random.normal(jax.random.fold_in(ks[b], 1), syn.shape)
      syn = jnp.where(fixed, draw, syn)
    synapses.append(_masked(topo, b, syn))
  return NetState(bodies=bodies, synapses=tuple(synapses))


def dense_synapses(topo: Topology, synapses: Sequence[jax.Array]) -> jax.Array:
  """The synapse matrix `[N, N, Ds]` (post-major, zero where no synapse exists) from the blocks."""
  n = topo.num_neurons
  dense = jnp.zeros((n, n) + synapses[0].shape[-1:], synapses[0].dtype)
  for b, (block, syn) in enumerate(zip(topo.blocks, synapses, strict=True)):
    syn = _masked(topo, b, syn)
    if block.fan_in_list:
      rows = jnp.arange(block.post_start, block.post_start + block.post_size)[:, None]
      dense = dense.at[rows, topo.block_pre_index[b]].add(syn)
    else:
      dense = dense.at[block.post, block.pre].add(syn)
  return dense


def block_synapses(topo: Topology, dense: jax.Array) -> tuple:
  """The blocks of a synapse matrix `[N, N, Ds]` (the inverse of `dense_synapses` on the synapses
  that exist; absent entries of a masked block are zero)."""
  out = []
  for b, block in enumerate(topo.blocks):
    rows = dense[block.post]
    if block.fan_in_list:
      syn = jnp.take_along_axis(rows, topo.block_pre_index[b][..., None], axis=1)
    else:
      syn = rows[:, block.pre]
    out.append(_masked(topo, b, syn))
  return tuple(out)


MESSAGE_NORMS = ("sqrt", "mean", "sum", "sqrt_ref")


def _normalise(msg: jax.Array, fan_in: jax.Array, norm: str, reference_fan_in: int = 0) -> jax.Array:
  if norm == "sum":
    return msg
  fan_in = jnp.maximum(fan_in, 1.0)
  if norm == "sqrt_ref":
    if reference_fan_in < 1:
      raise ValueError("message norm 'sqrt_ref' needs a reference fan-in >= 1")
    return msg / jnp.sqrt(fan_in * reference_fan_in)[:, None]
  return msg / (fan_in if norm == "mean" else jnp.sqrt(fan_in))[:, None]


def messages(
  syn: jax.Array, mask: jax.Array, act: jax.Array, norm: str = "sqrt", reference_fan_in: int = 0
) -> jax.Array:
  """`msg[i] = sum_j mask[i, j] * outer(syn[i, j], act[j]) / scale[i]`, `[N, Ds*Da]`: `Ds` matmuls.

  `scale[i]` is `sqrt(fan_in[i])` by default (`norm="sqrt"`), the usual scale of a sum of weakly
  correlated terms; `"mean"` divides by the fan-in, `"sum"` by nothing (neurons without inputs: 1),
  `"sqrt_ref"` by `sqrt(fan_in[i] * reference_fan_in)` (the mean at the reference fan-in).
  With the plain sum, a never-reset stream's synapses settle at order-one values, the messages
  saturate every body update, and meta-training on `streaming` stays at chance (docs/RESULTS.md).
  `block_messages` computes the same from a topology's blocks.

  Args:
    syn: `[N, N, Ds]`; mask: `[N, N]`; act: `[N, Da]`.
  """
  msg = jnp.einsum("ijc,jd->icd", syn * mask[..., None], act)
  return _normalise(msg.reshape(msg.shape[0], -1), jnp.sum(mask, axis=1), norm, reference_fan_in)


def block_messages(
  topo: Topology, synapses: Sequence[jax.Array], act: jax.Array, norm: str = "sqrt", reference_fan_in: int = 0
) -> jax.Array:
  """`messages` of the whole network from its synapse blocks, `[N, Ds*Da]`; one matmul per block."""
  n = topo.num_neurons
  msg = jnp.zeros((n, synapses[0].shape[-1], act.shape[-1]), act.dtype)
  for b, (block, syn) in enumerate(zip(topo.blocks, synapses, strict=True)):
    syn = _masked(topo, b, syn)
    if block.fan_in_list:
      part = jnp.einsum("pkc,pkd->pcd", syn, _block_pre(topo, b, act))
    else:
      part = jnp.einsum("pqc,qd->pcd", syn, act[block.pre])
    msg = msg.at[block.post].add(part)
  return _normalise(msg.reshape(n, -1), topo.fan_in, norm, reference_fan_in)


def _per_synapse_update(theta, syn, act_post, emb_post, act_pre, emb_pre, time_scale=None, rate_scale=None):
  """`rules.synapse_update` vmapped over a block's pairs (`act_pre` `[Q, Da]` or `[P, K, Da]`;
  `time_scale` and `rate_scale` `[P]` or None)."""
  pre_axis = 0 if act_pre.ndim == 3 else None
  axes = [None if v is None else 0 for v in (time_scale, rate_scale)]
  per_pre = jax.vmap(rules.synapse_update, in_axes=(None, 0, None, 0, None, 0, None, None))
  per_pair = jax.vmap(per_pre, in_axes=(None, 0, 0, pre_axis, 0, pre_axis, *axes))
  return per_pair(theta, syn, act_post, act_pre, emb_post, emb_pre, time_scale, rate_scale)


def update_synapses(
  theta: rules.Theta,
  topo: Topology,
  synapses: Sequence[jax.Array],
  act: jax.Array,
  emb: jax.Array,
  spec: rules.RuleSpec,
  errors: jax.Array | None = None,
) -> tuple:
  """Applies `synapse_update` to every synapse of every block; absent synapses keep their value, and
  so do fixed random ones (`fixed_input_synapses`).

  Args:
    act: `[N, Da]` activations after the body update; emb: `[N, E]` type embeddings.
    spec: `spec.fast_synapse` chooses the split-first-layer block form (`rules.synapse_update_block`,
      in chunks of `spec.chunk_synapses`) or, if False, the per-synapse function vmapped over every
      pair (same numbers, slower; for tests and reading).
    errors: `[N]` the neurons' own errors (`own_errors`), which a synapse sees of its post neuron
      after its activation: given with `spec.error_input`, and only with it.
  """
  if spec.error_input != (errors is not None):
    raise ValueError(
      f"update_synapses: spec.error_input is {spec.error_input}, and errors were "
      f"{'given' if errors is not None else 'not given'}: they go with error_input, and only with it"
    )
  post_act = act if errors is None else jnp.concatenate([act, errors[:, None]], axis=-1)
  out = []
  for b, (block, syn) in enumerate(zip(topo.blocks, synapses, strict=True)):
    act_post, emb_post = post_act[block.post], emb[block.post]
    fan_in = topo.fan_in[block.post]
    scales = (rules.time_scales(spec, fan_in), rules.rate_scales(spec, fan_in))
    if spec.fast_synapse:
      index = topo.block_pre_index[b]
      act_pre, emb_pre = (act, emb) if block.fan_in_list else (act[block.pre], emb[block.pre])
      new = rules.synapse_update_block(
        theta, syn, act_post, emb_post, act_pre, emb_pre, index, spec.chunk_synapses, *scales
      )
    else:
      act_pre, emb_pre = _block_pre(topo, b, act), _block_pre(topo, b, emb)
      new = _per_synapse_update(theta, syn, act_post, emb_post, act_pre, emb_pre, *scales)
    mask = topo.block_masks[b]
    out.append(new if mask is None else jnp.where(mask[..., None] > 0, new, syn))
  out = center_synapses(topo, tuple(out)) if spec.center_synapses else tuple(out)
  return keep_fixed_synapses(topo, synapses, out)


def center_synapses(topo: Topology, synapses: Sequence[jax.Array]) -> tuple:
  """The synapse states with each post neuron's mean over its incoming synapses (per channel, over
  every block it receives from) subtracted: what `RuleSpec.center_synapses` applies after every
  update. Absent synapses stay as they are."""
  n = topo.num_neurons
  total = jnp.zeros((n, synapses[0].shape[-1]), synapses[0].dtype)
  for b, (block, syn) in enumerate(zip(topo.blocks, synapses, strict=True)):
    total = total.at[block.post].add(jnp.sum(_masked(topo, b, syn), axis=1))
  mean = total / jnp.maximum(topo.fan_in, 1.0)[:, None]
  out = []
  for b, (block, syn) in enumerate(zip(topo.blocks, synapses, strict=True)):
    centered = syn - mean[block.post][:, None, :]
    mask = topo.block_masks[b]
    out.append(centered if mask is None else jnp.where(mask[..., None] > 0, centered, syn))
  return tuple(out)


def own_errors(
  theta: rules.Theta,
  topo: Topology,
  spec: rules.RuleSpec,
  bodies: jax.Array,
  msg: jax.Array,
  x: jax.Array,
  emb: jax.Array,
) -> jax.Array:
  """`[N]` every neuron's `rules.own_error` this step (`RuleSpec.error_input`), from its body before
  the step, its message and external input, and its type embedding."""
  per_neuron = jax.vmap(rules.own_error, in_axes=(None, 0, 0, 0, 0, None, None))
  return per_neuron(theta, bodies, msg, x, emb, spec, topo.body_recurrence)


def network_step(
  theta: rules.Theta,
  topo: Topology,
  spec: rules.RuleSpec,
  net_state: NetState,
  x: jax.Array,
) -> tuple[NetState, StepOutput]:
  """One time step of the whole network (docs/DESIGN.md, "The model", steps 1-5).

  Args:
    net_state: bodies `[N, Db]`, synapses one array per block of `topo`.
    x: `[N]` external input of this step (0 where a neuron receives none).

  Returns:
    The new state and the output neurons' readouts `[n_out]`.
  """
  emb = theta["type_emb"][topo.types]  # [N, E]
  act_fn = jax.vmap(rules.activation, in_axes=(None, 0, 0, None))
  act = checkpoint_name(act_fn(theta, net_state.bodies, x, spec), rules.NEURON_VALUES)
  msg = block_messages(topo, net_state.synapses, act, spec.message_norm, spec.reference_fan_in)
  msg = checkpoint_name(msg, rules.NEURON_VALUES)
  bodies = jax.vmap(rules.body_update, in_axes=(None, 0, 0, 0, 0, None, None))(
    theta, net_state.bodies, msg, x, emb, spec, topo.body_recurrence
  )
  bodies = checkpoint_name(bodies, rules.NEURON_VALUES)
  syn = net_state.synapses
  if topo.synapse_updates:
    new_act = checkpoint_name(act_fn(theta, bodies, x, spec), rules.NEURON_VALUES)
    errors = own_errors(theta, topo, spec, net_state.bodies, msg, x, emb) if spec.error_input else None
    syn = update_synapses(theta, topo, syn, new_act, emb, spec, errors)
  out_bodies = bodies[topo.n_in : topo.n_in + topo.n_out]
  y = jax.vmap(rules.readout, in_axes=(None, 0))(theta, out_bodies)
  return NetState(bodies=bodies, synapses=syn), StepOutput(readout=y)
