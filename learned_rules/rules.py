"""The two learned update rules: `body_update` (one neuron) and `synapse_update` (one synapse).

Both are pure functions of a single neuron or a single synapse and of the shared meta-parameters
`theta`; `network.py` is the one place that vmaps them over a whole network. Shape legend (docs/DESIGN.md):
`Db` body-state size, `Ds` synapse-state size, `Da` activation size, `E` type-embedding size, `H` hidden
units of the rule MLPs, `N` neurons.

The update forms follow docs/DESIGN.md ("Meta-training from scratch can stall, and what got it moving"):
a gated (GRU-like) body update, a decaying and bounded synapse update with learned per-channel decay
and rate, a bilinear pre x post term in every hidden unit of the synapse MLP, and the external input
added straight into the activation.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

Theta = dict  # nested dict of arrays; see `init_theta` for the layout.

# Name of the per-neuron values a rematerialised unroll keeps (`unroll.REMAT_POLICIES`, "neurons").
NEURON_VALUES = "neuron_values"


@dataclasses.dataclass(frozen=True)
class RuleSpec:
  """Static sizes and switches of the rules (hashable, so it can close over jitted functions)."""

  body_dim: int = 8  # Db
  synapse_dim: int = 4  # Ds
  act_dim: int = 4  # Da, the part of a body that other neurons see
  emb_dim: int = 8  # E
  hidden: int = 32  # H, hidden units of f_b and f_s
  num_types: int = 3
  bilinear: bool = True  # a_post^T W_k a_pre added to each hidden unit of f_s
  # The summed message is divided by sqrt(fan-in) ("sqrt"), fan-in ("mean"), 1 ("sum"), or
  # sqrt(fan-in x reference_fan_in) ("sqrt_ref": "mean" at the reference fan-in, "sqrt" in how it scales).
  message_norm: str = "sqrt"
  # The fan-in F0 at which the rule is plain (0: none). With it, the synapses' time constants grow with
  # the post neuron's fan-in F: the per-step decay is sigmoid(lambda) ** (F0 / F), so a neuron with
  # more inputs, which can hold more, forgets more slowly (at F = F0 it is sigmoid(lambda) itself).
  reference_fan_in: int = 0
  # The decay's exponent is (F0 / F) ** decay_power: a time constant proportional to F ** decay_power.
  decay_power: float = 1.0
  # With reference_fan_in: also scale the write rate by (F0 / F) ** rate_power, so that a synapse's
  # state, a sum of writes over a time constant that grows with F, keeps its size (a power of 0.5 for
  # independent writes; the shipped `general` rule keeps its state size with 0.75); with message_norm
  # "sqrt_ref" messages keep theirs too (docs/RESULTS.md, "Rules that scale").
  scale_rate: bool = False
  rate_power: float = 0.5
  # After every update, subtract from each post neuron's incoming synapse states their mean (per
  # channel): a write's common part, which would grow with the time constant, is not kept
  # (network.center_synapses; docs/RESULTS.md, "Rules that scale").
  center_synapses: bool = False
  # Give every synapse's update its post neuron's own error as one more post-side activation channel:
  # the neuron's teaching input minus what it would read out without it, 0 on steps without one
  # (`network.own_errors`). A delta rule (error x pre activity) is then one bilinear term.
  error_input: bool = False
  init_decay: float = 0.95  # sigmoid(lambda) at initialisation
  init_rate: float = 0.12  # sigmoid(eta) at initialisation
  # Implementation switches: the same numbers either way (tests/test_rules.py, test_network.py).
  fast_synapse: bool = True  # split-first-layer block form of the synapse update, not a per-pair vmap
  # Synapses per chunk of `synapse_update_block` per network (0: whole blocks). Blocks of at most
  # WHOLE_BLOCK_CHUNKS chunks are updated whole; docs/PERFORMANCE.md.
  chunk_synapses: int = 16384

  @property
  def msg_dim(self) -> int:
    return self.synapse_dim * self.act_dim


def _dense_init(key, fan_in: int, shape) -> jax.Array:
  return jax.random.normal(key, shape) / math.sqrt(fan_in)


def _logit(p: float) -> float:
  return math.log(p / (1.0 - p))


@functools.partial(jax.jit, static_argnames="spec")
def init_theta(key: jax.Array, spec: RuleSpec) -> Theta:
  """Initial meta-parameters: rule MLPs, type embeddings, initial states, input drive, readout. With
  `spec.error_input`, those of the rule without it and the error's weights at 0 (`with_error_input`)."""
  if spec.error_input:
    return with_error_input(init_theta(key, dataclasses.replace(spec, error_input=False)), spec.act_dim)
  db, ds, da, e, h, nt = (
    spec.body_dim,
    spec.synapse_dim,
    spec.act_dim,
    spec.emb_dim,
    spec.hidden,
    spec.num_types,
  )
  body_in = db + spec.msg_dim + 1 + e
  ks = iter(jax.random.split(key, 16))
  body = {
    "w1": _dense_init(next(ks), body_in, (body_in, h)),
    "b1": jnp.zeros((h,)),
    "w2": _dense_init(next(ks), h, (h, db)),
    "b2": jnp.zeros((db,)),
    "wz": _dense_init(next(ks), body_in, (body_in, db)),
    "bz": jnp.zeros((db,)),
  }
  synapse = {
    "w_s": _dense_init(next(ks), ds, (ds, h)),
    "w_post": _dense_init(next(ks), da + e, (da + e, h)),
    "w_pre": _dense_init(next(ks), da + e, (da + e, h)),
    "b1": jnp.zeros((h,)),
    "w2": _dense_init(next(ks), h, (h, ds)),
    "b2": jnp.zeros((ds,)),
    "decay_logit": jnp.full((ds,), _logit(spec.init_decay), jnp.float32),
    "rate_logit": jnp.full((ds,), _logit(spec.init_rate), jnp.float32),
  }
  if spec.bilinear:
    synapse["w_bi"] = _dense_init(next(ks), da, (h, da, da))
  return {
    "body": body,
    "synapse": synapse,
    "type_emb": jax.random.normal(next(ks), (nt, e)),
    "init_body": 0.1 * jax.random.normal(next(ks), (nt, db)),
    "init_synapse": jnp.zeros((nt, nt, ds)),
    "w_in": jnp.ones((da,)),
    "readout": {"w": _dense_init(next(ks), db, (db,)), "b": jnp.zeros(())},
  }


def with_more_types(theta: Theta, num_types: int, like: int) -> Theta:
  """`theta` for `num_types` neuron types: the types it lacks start as copies of type `like` (its
  embedding, its initial body state, its initial synapse states as pre and as post neuron). A rule
  trained with one hidden type so runs on a network with several hidden layers, each a type of its own,
  every layer starting as the hidden neurons it knew."""
  have = theta["type_emb"].shape[0]
  if num_types < have or not 0 <= like < have:
    raise ValueError(f"with_more_types: {have} types to {num_types}, like type {like}")
  index = jnp.asarray(list(range(have)) + [like] * (num_types - have))
  return {
    **theta,
    "type_emb": theta["type_emb"][index],
    "init_body": theta["init_body"][index],
    "init_synapse": theta["init_synapse"][index][:, index],
  }


def _insert(w: jax.Array, at: int, new: jax.Array, axis: int = 0) -> jax.Array:
  """`w` with `new` inserted before its entry `at` along `axis` (at its end for `at` = its length)."""
  head = jax.lax.slice_in_dim(w, 0, at, axis=axis)
  tail = jax.lax.slice_in_dim(w, at, w.shape[axis], axis=axis)
  return jnp.concatenate([head, new, tail], axis=axis)


def with_error_input(theta: Theta, act_dim: int, scale: float = 0.0, key: jax.Array | None = None) -> Theta:
  """`theta` of a rule without `RuleSpec.error_input` for a run with it: the error's weights (a row of
  the synapse update's post-side first layer and of its bilinear term) inserted as 0, so that the rule
  computes what it did until meta-training moves them.

  With `scale` > 0 (and a `key`), they are drawn instead: normal, with `scale` times the root mean
  square of the post activations' weights in the same layer, so that at 1 the error enters the write
  as strongly as an activation channel does (`train.error_init`)."""

  def insert(w: jax.Array, axis: int, k: jax.Array | None) -> jax.Array:
    """`w` with the error's row inserted after its `act_dim` activation rows along `axis`."""
    act = jax.lax.slice_in_dim(w, 0, act_dim, axis=axis)
    shape = act.shape[:axis] + (1,) + act.shape[axis + 1 :]
    if k is None:
      row = jnp.zeros(shape, w.dtype)
    else:
      row = scale * jnp.sqrt(jnp.mean(jnp.square(act))) * jax.random.normal(k, shape, w.dtype)
    return _insert(w, act_dim, row, axis)

  if scale and key is None:
    raise ValueError("with_error_input: drawn error weights (scale > 0) need a key")
  k_post, k_bi = jax.random.split(key) if scale else (None, None)
  p = theta["synapse"]
  synapse = {**p, "w_post": insert(p["w_post"], 0, k_post)}
  if "w_bi" in p:
    synapse["w_bi"] = insert(p["w_bi"], 1, k_bi)
  return {**theta, "synapse": synapse}


def with_more_synapse_state(theta: Theta, spec: RuleSpec, key: jax.Array) -> Theta:
  """`theta` of a rule with fewer synapse state channels for `spec`'s `synapse_dim`, the new channels
  appended after the old ones.

  The synapse update writes the new channels (its outgoing weights into them drawn as
  `init_theta(key, spec)` draws them, their decay and rate as it starts them), but nothing reads them
  yet: their weights into `f_s`, and through the messages into `f_b`, are 0, and every synapse starts
  them at 0. So the rule computes what it did until meta-training moves those weights, and their
  gradient is not 0 from a synapse's second update on.
  """
  have = theta["synapse"]["w_s"].shape[0]
  if have > spec.synapse_dim:
    raise ValueError(f"with_more_synapse_state: {have} synapse state channels to {spec.synapse_dim}")
  fresh = init_theta(key, spec)["synapse"]
  extra, da = spec.synapse_dim - have, spec.act_dim
  units = theta["synapse"]["w2"].shape[0]  # the rule's hidden units (grown after this, if at all)

  def zeros(w: jax.Array, count: int, axis: int = 0) -> jax.Array:
    return jnp.zeros(w.shape[:axis] + (count,) + w.shape[axis + 1 :], w.dtype)

  msg_end = spec.body_dim + have * da  # the messages' rows of f_b's inputs end here (channel-major)
  body = {**theta["body"]}
  for name in ("w1", "wz"):
    body[name] = _insert(body[name], msg_end, zeros(body[name], extra * da))
  p = theta["synapse"]
  synapse = {
    **p,
    "w_s": _insert(p["w_s"], have, zeros(p["w_s"], extra)),
    "w2": _insert(p["w2"], have, fresh["w2"][:units, have:], axis=1),
    "b2": _insert(p["b2"], have, zeros(p["b2"], extra)),
    "decay_logit": _insert(p["decay_logit"], have, fresh["decay_logit"][have:]),
    "rate_logit": _insert(p["rate_logit"], have, fresh["rate_logit"][have:]),
  }
  init = theta["init_synapse"]
  init_synapse = _insert(init, have, zeros(init, extra, axis=2), axis=2)
  return {**theta, "body": body, "synapse": synapse, "init_synapse": init_synapse}


# The hidden units of `f_b` and `f_s`: every weight with an axis of length `RuleSpec.hidden`, that axis,
# and whether it holds the units' outgoing weights.
_HIDDEN_AXES = {
  "body": {"w1": (1, False), "b1": (0, False), "w2": (0, True)},
  "synapse": {
    "w_s": (1, False),
    "w_post": (1, False),
    "w_pre": (1, False),
    "b1": (0, False),
    "w2": (0, True),
    "w_bi": (0, False),
  },
}


def with_more_hidden(theta: Theta, spec: RuleSpec, key: jax.Array) -> Theta:
  """`theta` of a rule with fewer hidden units in `f_b` and `f_s` for `spec`'s `hidden`: its units as
  they were, the new ones with incoming weights drawn as `init_theta(key, spec)` draws them and
  outgoing weights at 0, so that the rule computes what it did until meta-training moves them."""
  fresh = init_theta(key, spec)
  have = theta["body"]["b1"].shape[0]
  if have > spec.hidden:
    raise ValueError(f"with_more_hidden: {have} hidden units to {spec.hidden}")
  out = {**theta}
  for part, axes in _HIDDEN_AXES.items():
    grown = {**theta[part]}
    for name, (axis, outgoing) in axes.items():
      if name not in theta[part]:
        continue
      new = jnp.zeros_like(fresh[part][name]) if outgoing else fresh[part][name]
      index = (slice(None),) * axis + (slice(0, have),)
      grown[name] = new.at[index].set(theta[part][name])
    out[part] = grown
  return out


def activation(theta: Theta, body: jax.Array, x: jax.Array, spec: RuleSpec) -> jax.Array:
  """What a neuron shows the others: `tanh(body[:Da] + w_in * x)`, `[Da]`.

  Args:
    body: `[Db]` body state.
    x: `[]` external input to this neuron (0 when it receives none).
  """
  return jnp.tanh(body[: spec.act_dim] + theta["w_in"] * x)


def body_update(
  theta: Theta,
  body: jax.Array,
  msg: jax.Array,
  x: jax.Array,
  emb: jax.Array,
  spec: RuleSpec,
  recurrence: bool = True,
) -> jax.Array:
  """Gated update of one neuron's body state.

  Args:
    body: `[Db]` current body state.
    msg: `[Ds*Da]` summed synaptic message into this neuron.
    x: `[]` external input (0 when none).
    emb: `[E]` the neuron's type embedding.
    recurrence: if False (ablation), the update does not see the previous body and replaces it.

  Returns:
    `[Db]` new body state, `(1 - z) * body + z * tanh(f_b(.))`.
  """
  p = theta["body"]
  prev = body if recurrence else jnp.zeros_like(body)
  inp = jnp.concatenate([prev, msg, x[None], emb])
  hid = jnp.tanh(inp @ p["w1"] + p["b1"])
  cand = jnp.tanh(hid @ p["w2"] + p["b2"])
  if not recurrence:
    return cand
  z = jax.nn.sigmoid(inp @ p["wz"] + p["bz"])
  return (1.0 - z) * body + z * cand


def own_error(
  theta: Theta,
  body: jax.Array,
  msg: jax.Array,
  x: jax.Array,
  emb: jax.Array,
  spec: RuleSpec,
  recurrence: bool = True,
) -> jax.Array:
  """`[]` a neuron's own error (`RuleSpec.error_input`): its external input `x` minus the readout of
  the body it would have without it (`body_update` on the same message with `x` = 0), where it has an
  input; 0 where it has none. On an output neuron being taught, the teaching bit minus what its
  synapses recall of it. Arguments as `body_update`'s."""
  quiet = body_update(theta, body, msg, jnp.zeros_like(x), emb, spec, recurrence)
  return jnp.where(x != 0, x - readout(theta, quiet), 0.0)


def synapse_decay(theta: Theta, time_scale: jax.Array | None = None) -> jax.Array:
  """The synapses' per-step decay `[..., Ds]`: `sigmoid(lambda)`, or `sigmoid(lambda) ** time_scale`
  for an array of exponents `[...]` (one per post neuron: `RuleSpec.reference_fan_in / fan-in`)."""
  logit = theta["synapse"]["decay_logit"]
  if time_scale is None:
    return jax.nn.sigmoid(logit)
  return jnp.exp(jnp.asarray(time_scale)[..., None] * jax.nn.log_sigmoid(logit))


def _fan_in_ratio(spec: RuleSpec, fan_in: jax.Array) -> jax.Array | None:
  """`reference_fan_in / fan-in` for post neurons of fan-in `fan_in`, or None without a reference."""
  if not spec.reference_fan_in:
    return None
  return spec.reference_fan_in / jnp.maximum(jnp.asarray(fan_in, jnp.float32), 1.0)


def time_scales(spec: RuleSpec, fan_in: jax.Array) -> jax.Array | None:
  """`synapse_decay`'s exponents for post neurons of fan-in `fan_in` under `spec`,
  `(reference_fan_in / fan-in) ** decay_power`, or None if the decay is not scaled
  (`RuleSpec.reference_fan_in`)."""
  ratio = _fan_in_ratio(spec, fan_in)
  return None if ratio is None else ratio**spec.decay_power


def rate_scales(spec: RuleSpec, fan_in: jax.Array) -> jax.Array | None:
  """The write rate's factors for post neurons of fan-in `fan_in`,
  `(reference_fan_in / fan-in) ** rate_power`, or None if it is not scaled (`RuleSpec.scale_rate`)."""
  ratio = _fan_in_ratio(spec, fan_in) if spec.scale_rate else None
  return None if ratio is None else ratio**spec.rate_power


def synapse_rate(theta: Theta, rate_scale: jax.Array | None = None) -> jax.Array:
  """The synapses' write rate `[..., Ds]`: `sigmoid(eta)`, times `rate_scale` `[...]` if given."""
  rate = jax.nn.sigmoid(theta["synapse"]["rate_logit"])
  return rate if rate_scale is None else jnp.asarray(rate_scale)[..., None] * rate


def _bounded_synapse(p: dict, syn: jax.Array, pre_act: jax.Array, decay: jax.Array, rate: jax.Array):
  """`decay * s + rate * tanh(W2 tanh(pre_act) + b2)`: decaying and bounded."""
  hid = jnp.tanh(pre_act)
  delta = jnp.tanh(hid @ p["w2"] + p["b2"])
  return decay * syn + rate * delta


def synapse_update(
  theta: Theta,
  syn: jax.Array,
  a_post: jax.Array,
  a_pre: jax.Array,
  emb_post: jax.Array,
  emb_pre: jax.Array,
  time_scale: jax.Array | None = None,
  rate_scale: jax.Array | None = None,
) -> jax.Array:
  """Update of one synapse `pre -> post` from local information only.

  Args:
    syn: `[Ds]` the synapse's state.
    a_post: `[Da]` post-synaptic activation (after this step's body update); `[Da + 1]` with the post
      neuron's own error last (`RuleSpec.error_input`).
    a_pre: `[Da]` pre-synaptic activation (after this step's body update).
    emb_post: `[E]` post-synaptic neuron's type embedding.
    emb_pre: `[E]` pre-synaptic neuron's type embedding.
    time_scale: `[]` exponent of the decay (`time_scales`: from the post neuron's fan-in), or None.
    rate_scale: `[]` factor of the write rate (`rate_scales`), or None.

  Returns:
    `[Ds]` new synapse state.
  """
  p = theta["synapse"]
  pre_act = (
    syn @ p["w_s"]
    + jnp.concatenate([a_post, emb_post]) @ p["w_post"]
    + jnp.concatenate([a_pre, emb_pre]) @ p["w_pre"]
    + p["b1"]
  )
  if "w_bi" in p:
    pre_act = pre_act + jnp.einsum("d,kde,e->k", a_post, p["w_bi"], a_pre)
  return _bounded_synapse(p, syn, pre_act, synapse_decay(theta, time_scale), synapse_rate(theta, rate_scale))


def _contract(x: jax.Array, w: jax.Array) -> jax.Array:
  """`x @ w` over a small last axis, written out as a sum of broadcast products, one per entry of that
  axis: elementwise work that XLA fuses into the loop around it, where a reduction would be a library
  call of its own on CPU (docs/PERFORMANCE.md)."""
  out = x[..., 0:1] * w[0]
  for c in range(1, x.shape[-1]):
    out = out + x[..., c : c + 1] * w[c]
  return out


def _block_pre_act(syn, post, pre, post_bi, act_pre, w_s):
  """First layer of `f_s` for a block of synapses, `[P, Q, H]`.

  `syn` `[P, Q, Ds]`, `post` `[P, H]`, `post_bi` `[P, H, Da]`; `pre` and `act_pre` are per pre neuron
  (`[Q, H]`, `[Q, Da]`) or already gathered per synapse (`[P, Q, H]`, `[P, Q, Da]`).
  """
  if pre.ndim == 2:
    pre, act_pre = pre[None], act_pre[None]
  # (a_i W_k) . a_j for every hidden unit k, its Da terms written out as in `_contract`.
  bilinear = post_bi[:, None, :, 0] * act_pre[:, :, None, 0]
  for e in range(1, act_pre.shape[-1]):
    bilinear = bilinear + post_bi[:, None, :, e] * act_pre[:, :, None, e]
  return _contract(syn, w_s) + post[:, None, :] + pre + bilinear


def _block_core_value(syn, post, pre, post_bi, act_pre, w_s, w2, b2, decay, rate):
  hid = jnp.tanh(_block_pre_act(syn, post, pre, post_bi, act_pre, w_s))
  return decay * syn + rate * jnp.tanh(_contract(hid, w2) + b2)


@jax.custom_vjp
def _block_core(syn, post, pre, post_bi, act_pre, w_s, w2, b2, decay, rate):
  """Per-synapse part of `synapse_update` for one block, `[P, Q, Ds]`.

  The forward pass is one fused elementwise loop over synapses: nothing of size `[P, Q, H]` is stored.
  The backward pass recomputes the hidden layer and writes every contraction over synapses as a
  matrix product or a reduction XLA runs at memory speed (docs/PERFORMANCE.md). Its only residuals are
  its inputs, which are per neuron apart from the synapse states a scan carries anyway.
  """
  return _block_core_value(syn, post, pre, post_bi, act_pre, w_s, w2, b2, decay, rate)


def _block_core_fwd(*args):
  return _block_core_value(*args), args


def _block_core_bwd(args, g):
  syn, post, pre, post_bi, act_pre, w_s, w2, b2, decay, rate = args
  p, q, c = syn.shape
  h = w_s.shape[1]
  hid = jnp.tanh(_block_pre_act(syn, post, pre, post_bi, act_pre, w_s))
  delta = jnp.tanh(_contract(hid, w2) + b2)
  g_z = g * rate * (1.0 - delta * delta)  # [P, Q, Ds]
  g_h = _contract(g_z, w2.T) * (1.0 - hid * hid)  # [P, Q, H]
  g_syn = decay * g + (g_h.reshape(-1, h) @ w_s.T).reshape(p, q, c)
  if pre.ndim == 2:  # shared pre neurons: reduce over the block's posts
    features = jnp.concatenate([jnp.ones((q, 1), act_pre.dtype), act_pre], axis=-1)  # [Q, 1+Da]
    per_post = jnp.sum(g_h[:, :, None, :] * features[None, :, :, None], axis=1)  # [P, 1+Da, H]
    g_pre = jnp.sum(g_h, axis=0)
    g_act_pre = jnp.sum(jnp.einsum("pqh,phe->pqe", g_h, post_bi), axis=0)
  else:  # gathered pre neurons: per-synapse cotangents, scattered back by the gather's transpose
    features = jnp.concatenate([jnp.ones((p, q, 1), act_pre.dtype), act_pre], axis=-1)
    per_post = jnp.einsum("pqf,pqh->pfh", features, g_h)
    g_pre = g_h
    g_act_pre = jnp.einsum("pqh,phe->pqe", g_h, post_bi)
  g_post = per_post[:, 0]
  g_post_bi = jnp.swapaxes(per_post[:, 1:], 1, 2)
  g_w_s = syn.reshape(-1, c).T @ g_h.reshape(-1, h)
  g_w2 = hid.reshape(-1, h).T @ g_z.reshape(-1, c)
  g_b2 = jnp.sum(g_z, axis=(0, 1))
  # The decay and the rate are `[Ds]`, or `[P, 1, Ds]` per post neuron (scaled by fan-in).
  g_decay = _sum_like(g * syn, decay)
  g_rate = _sum_like(g * delta, rate)
  return g_syn, g_post, g_pre, g_post_bi, g_act_pre, g_w_s, g_w2, g_b2, g_decay, g_rate


def _sum_like(x: jax.Array, like: jax.Array) -> jax.Array:
  """`x` `[P, Q, Ds]` summed to the shape of a per-channel `[Ds]` or per-post `[P, 1, Ds]` value."""
  return jnp.sum(x, axis=(0, 1)) if like.ndim == 1 else jnp.sum(x, axis=1, keepdims=True)


_block_core.defvjp(_block_core_fwd, _block_core_bwd)


def synapse_update_block(
  theta: Theta,
  syn: jax.Array,
  act_post: jax.Array,
  emb_post: jax.Array,
  act_pre: jax.Array,
  emb_pre: jax.Array,
  pre_index: jax.Array | None = None,
  chunk_synapses: int | None = None,
  time_scale: jax.Array | None = None,
  rate_scale: jax.Array | None = None,
) -> jax.Array:
  """`synapse_update` for a block of synapses from `P` post to `Q` pre neurons, first layer split.

  The first layer of `f_s` on `[s_ij, a_i, e_i, a_j, e_j]` is a per-synapse term plus a per-post and
  a per-pre neuron term, so the neuron terms are computed once per neuron, not once per synapse
  (docs/DESIGN.md, "The model"); the bilinear term is `(a_i W_k) . a_j`. Equals
  `vmap(vmap(synapse_update))` over the block's pairs; see tests/test_rules.py.

  Args:
    syn: `[P, Q, Ds]` synapse states, post-major.
    act_post, emb_post: `[P, Da]` (`[P, Da + 1]` with `RuleSpec.error_input`), `[P, E]` activations
      (after the body update) and type embeddings of the block's post neurons.
    act_pre, emb_pre: `[M, Da]`, `[M, E]` the same for the pre neurons: the block's `Q` pre neurons
      (`M == Q`) or, with `pre_index`, every neuron the block's synapses may come from.
    pre_index: optional `[P, Q]` int, the pre neuron of each synapse (fan-in lists of a sparse block).
    chunk_synapses: update a block of more than `WHOLE_BLOCK_CHUNKS` times this many synapses in
      chunks of post neurons of at most this many synapses, one chunk after another (same numbers;
      less memory, and on CPU a faster meta-gradient for blocks that large); 0 for the whole block
      at once. Default `RuleSpec.chunk_synapses`.
    time_scale: optional `[P]` exponents of the post neurons' decay (`time_scales`).
    rate_scale: optional `[P]` factors of the post neurons' write rate (`rate_scales`).

  Returns:
    `[P, Q, Ds]` new synapse states (masking absent synapses is the caller's job).
  """
  p = theta["synapse"]
  post = jnp.concatenate([act_post, emb_post], axis=-1) @ p["w_post"]  # [P, H]
  pre = jnp.concatenate([act_pre, emb_pre], axis=-1) @ p["w_pre"] + p["b1"]  # [M, H]
  if "w_bi" in p:
    post_bi = jnp.einsum("id,kde->ike", act_post, p["w_bi"])  # [P, H, Da]
  else:
    post_bi = jnp.zeros(post.shape + act_pre.shape[-1:], post.dtype)
  post, pre, post_bi = (checkpoint_name(v, NEURON_VALUES) for v in (post, pre, post_bi))
  if pre_index is not None:
    pre, act_pre = pre[pre_index], act_pre[pre_index]  # [P, Q, H], [P, Q, Da]
  # Decay and rate: `[Ds]`, or `[P, 1, Ds]` per post neuron when scaled by fan-in.
  decay, rate = synapse_decay(theta, time_scale), synapse_rate(theta, rate_scale)
  decay, rate = (v[:, None, :] if v.ndim == 2 else v for v in (decay, rate))
  weights = (p["w_s"], p["w2"], p["b2"])
  chunk_synapses = RuleSpec.chunk_synapses if chunk_synapses is None else chunk_synapses
  rows = _chunk_rows(syn.shape[0], syn.shape[1], chunk_synapses)
  if rows == syn.shape[0]:
    return _block_core(syn, post, pre, post_bi, act_pre, *weights, decay, rate)
  # Post neurons in chunks of `rows`, one after another, so that each chunk's hidden layer and its
  # gradients stay in cache (docs/PERFORMANCE.md); the pre-neuron terms are shared by all chunks.
  per_post = {"syn": syn, "post": post, "post_bi": post_bi}
  shared = {"pre": pre, "act_pre": act_pre} if pre_index is None else {}
  per_post.update({} if pre_index is None else {"pre": pre, "act_pre": act_pre})
  for name, value in (("decay", decay), ("rate", rate)):
    (shared if value.ndim == 1 else per_post)[name] = value

  def chunk(args):
    c = {**shared, **args}
    return _block_core(
      c["syn"], c["post"], c["pre"], c["post_bi"], c["act_pre"], *weights, c["decay"], c["rate"]
    )

  split = {k: x.reshape(x.shape[0] // rows, rows, *x.shape[1:]) for k, x in per_post.items()}
  out = jax.lax.map(chunk, split)
  return out.reshape(syn.shape)


# Blocks of at most this many chunks are updated whole: the chunk loop costs more than it saves below
# that (full-256, 65,280 synapses: meta-gradient 1.8x faster whole; docs/PERFORMANCE.md).
WHOLE_BLOCK_CHUNKS = 4


def _chunk_rows(num_post: int, num_pre: int, chunk_synapses: int) -> int:
  """Post neurons per chunk: all of them for a block of at most `WHOLE_BLOCK_CHUNKS` chunks, else the
  largest divisor of `num_post` with at most `chunk_synapses` synapses."""
  if not chunk_synapses or num_post * num_pre <= WHOLE_BLOCK_CHUNKS * chunk_synapses:
    return num_post
  target = max(chunk_synapses // num_pre, 1)
  return max(r for r in range(1, target + 1) if num_post % r == 0)


def synapse_update_dense(theta: Theta, syn: jax.Array, act: jax.Array, emb: jax.Array) -> jax.Array:
  """`synapse_update` for every pair `(post i, pre j)` of `N` neurons: `syn` `[N, N, Ds]`, `act`
  `[N, Da]`, `emb` `[N, E]`; returns `[N, N, Ds]` (masking is the caller's job)."""
  return synapse_update_block(theta, syn, act, emb, act, emb)  # (unscaled decay)


def readout(theta: Theta, body: jax.Array) -> jax.Array:
  """Scalar readout of an output neuron's body `[Db]`; shared across output neurons."""
  return body @ theta["readout"]["w"] + theta["readout"]["b"]
