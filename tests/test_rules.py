"""Tests of `learned_rules.rules`: theta layout, the two update rules, and the fast synapse update."""

from __future__ import annotations

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_rules import rules

N = 5  # neurons for the all-pairs synapse update


def _expected_shapes(spec: rules.RuleSpec) -> dict:
  db, ds, da, e, h, nt = (
    spec.body_dim,
    spec.synapse_dim,
    spec.act_dim,
    spec.emb_dim,
    spec.hidden,
    spec.num_types,
  )
  body_in = db + ds * da + 1 + e  # previous body, message, input, type embedding
  shapes = {
    "body": {"w1": (body_in, h), "b1": (h,), "w2": (h, db), "b2": (db,), "wz": (body_in, db), "bz": (db,)},
    "synapse": {
      "w_s": (ds, h),
      "w_post": (da + e, h),
      "w_pre": (da + e, h),
      "b1": (h,),
      "w2": (h, ds),
      "b2": (ds,),
      "decay_logit": (ds,),
      "rate_logit": (ds,),
    },
    "type_emb": (nt, e),
    "init_body": (nt, db),
    "init_synapse": (nt, nt, ds),
    "w_in": (da,),
    "readout": {"w": (db,), "b": ()},
  }
  if spec.bilinear:
    shapes["synapse"]["w_bi"] = (h, da, da)
  return shapes


def _normal(rng: np.random.Generator, *shape) -> jax.Array:
  return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def _local_inputs(seed: int, spec: rules.RuleSpec) -> dict:
  """Random arguments of one body update and one synapse update."""
  rng = np.random.default_rng(seed)
  return dict(
    body=_normal(rng, spec.body_dim),
    msg=_normal(rng, spec.msg_dim),
    x=jnp.asarray(-1.0),
    emb=_normal(rng, spec.emb_dim),
    syn=_normal(rng, spec.synapse_dim),
    a_post=jnp.tanh(_normal(rng, spec.act_dim)),
    a_pre=jnp.tanh(_normal(rng, spec.act_dim)),
    emb_pre=_normal(rng, spec.emb_dim),
  )


def _dense_inputs(seed: int, spec: rules.RuleSpec):
  """Synapses `[N, N, Ds]`, activations `[N, Da]`, embeddings `[N, E]`."""
  rng = np.random.default_rng(seed)
  syn = _normal(rng, N, N, spec.synapse_dim)
  act = jnp.tanh(_normal(rng, N, spec.act_dim))
  emb = _normal(rng, N, spec.emb_dim)
  return syn, act, emb


@pytest.mark.parametrize("bilinear", [True, False])
def test_init_theta_shapes_and_values(small_spec, bilinear):
  spec = dataclasses.replace(small_spec, bilinear=bilinear)
  theta = rules.init_theta(jax.random.PRNGKey(0), spec)
  expected = _expected_shapes(spec)
  assert jax.tree.structure(theta) == jax.tree.structure(
    jax.tree.map(lambda s: 0, expected, is_leaf=lambda s: isinstance(s, tuple))
  )
  jax.tree.map(chex.assert_shape, theta, expected, is_leaf=lambda s: isinstance(s, tuple))
  chex.assert_tree_all_finite(theta)
  for leaf in jax.tree.leaves(theta):
    assert leaf.dtype == jnp.float32
  # The decaying, bounded synapse update starts at the configured decay and rate.
  np.testing.assert_allclose(jax.nn.sigmoid(theta["synapse"]["decay_logit"]), spec.init_decay, rtol=1e-6)
  np.testing.assert_allclose(jax.nn.sigmoid(theta["synapse"]["rate_logit"]), spec.init_rate, rtol=1e-6)


def test_extra_types_start_as_the_type_they_copy(small_spec):
  theta = rules.init_theta(jax.random.PRNGKey(0), small_spec)
  theta["init_synapse"] = jax.random.normal(jax.random.PRNGKey(1), theta["init_synapse"].shape)
  have = small_spec.num_types
  more = rules.with_more_types(theta, have + 2, like=have - 1)
  for name in ("type_emb", "init_body"):
    np.testing.assert_array_equal(more[name][:have], theta[name])
    np.testing.assert_array_equal(more[name][have:], jnp.stack([theta[name][have - 1]] * 2))
  syn = more["init_synapse"]
  np.testing.assert_array_equal(syn[:have, :have], theta["init_synapse"])
  np.testing.assert_array_equal(syn[have + 1, :have], theta["init_synapse"][have - 1])  # as post
  np.testing.assert_array_equal(syn[:have, have], theta["init_synapse"][:, have - 1])  # as pre
  np.testing.assert_array_equal(syn[have, have + 1], theta["init_synapse"][have - 1, have - 1])
  assert more["body"] is theta["body"]  # the rule itself is shared
  with pytest.raises(ValueError, match="with_more_types"):
    rules.with_more_types(theta, have - 1, like=0)


def test_init_theta_leaves_are_not_weakly_typed(small_spec):
  theta = rules.init_theta(jax.random.PRNGKey(0), small_spec)
  weak = [
    jax.tree_util.keystr(path)
    for path, leaf in jax.tree_util.tree_flatten_with_path(theta)[0]
    if jax.typeof(leaf).weak_type
  ]
  assert not weak, f"weakly typed leaves: {weak}"


def test_init_theta_depends_on_key(small_spec):
  a = rules.init_theta(jax.random.PRNGKey(0), small_spec)
  b = rules.init_theta(jax.random.PRNGKey(1), small_spec)
  assert not np.allclose(a["body"]["w1"], b["body"]["w1"])
  chex.assert_trees_all_equal(a, rules.init_theta(jax.random.PRNGKey(0), small_spec))


def test_rule_output_shapes(theta, small_spec):
  s = small_spec
  inp = _local_inputs(3, s)
  chex.assert_shape(rules.activation(theta, inp["body"], inp["x"], s), (s.act_dim,))
  chex.assert_shape(rules.body_update(theta, inp["body"], inp["msg"], inp["x"], inp["emb"], s), (s.body_dim,))
  chex.assert_shape(
    rules.synapse_update(theta, inp["syn"], inp["a_post"], inp["a_pre"], inp["emb"], inp["emb_pre"]),
    (s.synapse_dim,),
  )
  syn, act, emb = _dense_inputs(4, s)
  chex.assert_shape(rules.synapse_update_dense(theta, syn, act, emb), (N, N, s.synapse_dim))
  chex.assert_shape(rules.readout(theta, inp["body"]), ())


def test_activation_is_tanh_of_slice_plus_input_drive(theta, small_spec):
  inp = _local_inputs(5, small_spec)
  got = rules.activation(theta, inp["body"], inp["x"], small_spec)
  want = np.tanh(np.asarray(inp["body"][: small_spec.act_dim]) + np.asarray(theta["w_in"]) * float(inp["x"]))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("recurrence", [True, False])
def test_body_update_jit_matches_eager(theta, small_spec, recurrence):
  inp = _local_inputs(6, small_spec)
  args = (theta, inp["body"], inp["msg"], inp["x"], inp["emb"])
  eager = rules.body_update(*args, small_spec, recurrence)
  jitted = jax.jit(rules.body_update, static_argnums=(5, 6))(*args, small_spec, recurrence)
  np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bilinear", [True, False])
def test_synapse_update_jit_matches_eager(make_theta, small_spec, bilinear):
  spec = dataclasses.replace(small_spec, bilinear=bilinear)
  theta = make_theta(jax.random.PRNGKey(0), spec, seed=7)
  inp = _local_inputs(8, spec)
  args = (theta, inp["syn"], inp["a_post"], inp["a_pre"], inp["emb"], inp["emb_pre"])
  np.testing.assert_allclose(
    jax.jit(rules.synapse_update)(*args), rules.synapse_update(*args), rtol=1e-5, atol=1e-6
  )
  syn, act, emb = _dense_inputs(9, spec)
  np.testing.assert_allclose(
    jax.jit(rules.synapse_update_dense)(theta, syn, act, emb),
    rules.synapse_update_dense(theta, syn, act, emb),
    rtol=1e-5,
    atol=1e-6,
  )


@pytest.mark.parametrize("bilinear", [True, False])
def test_dense_synapse_update_equals_per_synapse_vmap(make_theta, small_spec, bilinear):
  spec = dataclasses.replace(small_spec, bilinear=bilinear)
  theta = make_theta(jax.random.PRNGKey(0), spec, seed=10)
  syn, act, emb = _dense_inputs(11, spec)
  # Inner vmap over the pre neuron j, outer over the post neuron i: result[i, j] is synapse j -> i.
  per_pre = jax.vmap(rules.synapse_update, in_axes=(None, 0, None, 0, None, 0))
  per_pair = jax.vmap(per_pre, in_axes=(None, 0, 0, None, 0, None))
  want = per_pair(theta, syn, act, act, emb, emb)
  got = rules.synapse_update_dense(theta, syn, act, emb)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Spot-check one off-diagonal pair against the single-synapse function, so that a transposed
  # (pre, post) convention in both batched forms would still be caught.
  i, j = 3, 1
  one = rules.synapse_update(theta, syn[i, j], act[i], act[j], emb[i], emb[j])
  np.testing.assert_allclose(got[i, j], one, rtol=1e-5, atol=1e-6)
  assert not np.allclose(got[j, i], one, atol=1e-3)


def test_bilinear_term_is_used(theta, small_spec):
  inp = _local_inputs(12, small_spec)
  args = (inp["syn"], inp["a_post"], inp["a_pre"], inp["emb"], inp["emb_pre"])
  base = rules.synapse_update(theta, *args)
  scaled = {**theta, "synapse": {**theta["synapse"], "w_bi": 3.0 * theta["synapse"]["w_bi"]}}
  assert not np.allclose(rules.synapse_update(scaled, *args), base, atol=1e-4)
  without = {**theta, "synapse": {k: v for k, v in theta["synapse"].items() if k != "w_bi"}}
  assert not np.allclose(rules.synapse_update(without, *args), base, atol=1e-4)


def test_body_update_without_recurrence_ignores_previous_body(theta, small_spec):
  inp = _local_inputs(13, small_spec)

  def new_body(body, recurrence):
    return rules.body_update(theta, body, inp["msg"], inp["x"], inp["emb"], small_spec, recurrence)

  d_off = jax.jacfwd(new_body)(inp["body"], False)
  d_on = jax.jacfwd(new_body)(inp["body"], True)
  chex.assert_shape(d_off, (small_spec.body_dim, small_spec.body_dim))
  np.testing.assert_array_equal(d_off, 0.0)
  assert np.abs(d_on).max() > 1e-3
  # Without recurrence the update is the bare candidate: a different update, not a rescaled one.
  assert not np.allclose(new_body(inp["body"], False), new_body(inp["body"], True), atol=1e-3)


def test_body_update_is_a_convex_gate(theta, small_spec):
  """`(1 - z) b + z tanh(.)` with z in (0, 1): each new coordinate lies between b and [-1, 1]."""
  inp = _local_inputs(14, small_spec)
  body = 4.0 * inp["body"]
  new = np.asarray(rules.body_update(theta, body, inp["msg"], inp["x"], inp["emb"], small_spec))
  body = np.asarray(body)
  assert np.all(new <= np.maximum(body, 1.0) + 1e-6)
  assert np.all(new >= np.minimum(body, -1.0) - 1e-6)


def test_synapse_update_is_decaying_and_bounded(theta, small_spec):
  """`|s'| <= sigmoid(lambda) |s| + sigmoid(eta)` per channel (docs/DESIGN.md: bounded synapse update)."""
  inp = _local_inputs(15, small_spec)
  p = theta["synapse"]
  for scale in (0.1, 10.0, 1e3):
    syn = scale * inp["syn"]
    new = rules.synapse_update(theta, syn, inp["a_post"], inp["a_pre"], inp["emb"], inp["emb_pre"])
    bound = jax.nn.sigmoid(p["decay_logit"]) * jnp.abs(syn) + jax.nn.sigmoid(p["rate_logit"])
    assert np.all(np.abs(new) <= np.asarray(bound) * (1 + 1e-6))


def test_decay_is_scaled_by_the_post_neurons_fan_in(theta, small_spec):
  """`reference_fan_in`: decay ** (reference_fan_in / fan-in) per post neuron, the plain decay at that fan-in;
  without it, no time scale at all."""
  plain = jax.nn.sigmoid(theta["synapse"]["decay_logit"])
  assert rules.time_scales(small_spec, jnp.asarray([4.0])) is None
  spec = dataclasses.replace(small_spec, reference_fan_in=63)
  scales = rules.time_scales(spec, jnp.asarray([63.0, 126.0, 0.0]))
  np.testing.assert_allclose(scales, [1.0, 0.5, 63.0])  # a neuron without inputs counts one
  decay = rules.synapse_decay(theta, scales)
  chex.assert_shape(decay, (3, small_spec.synapse_dim))
  np.testing.assert_allclose(decay[0], plain, rtol=1e-6)
  np.testing.assert_allclose(decay[1], np.sqrt(plain), rtol=1e-6)  # twice the fan-in: half the forgetting
  inp = _local_inputs(17, small_spec)
  args = (theta, inp["syn"], inp["a_post"], inp["a_pre"], inp["emb"], inp["emb_pre"])
  unscaled = rules.synapse_update(*args)
  np.testing.assert_allclose(rules.synapse_update(*args, time_scale=scales[0]), unscaled, rtol=1e-5)
  np.testing.assert_allclose(
    rules.synapse_update(*args, time_scale=scales[1]) - unscaled,
    (np.sqrt(plain) - plain) * inp["syn"],
    atol=1e-5,
  )
  # scale_rate: the write (what is added to the decayed state) times sqrt(reference_fan_in / fan-in).
  assert rules.rate_scales(spec, jnp.asarray([126.0])) is None
  rates = rules.rate_scales(dataclasses.replace(spec, scale_rate=True), jnp.asarray([63.0, 252.0]))
  np.testing.assert_allclose(rates, [1.0, 0.5])
  # decay_power: the decay's exponent is (F0 / F) ** decay_power; the rate's power is its own.
  slower = dataclasses.replace(spec, scale_rate=True, decay_power=0.5, rate_power=1.0)
  np.testing.assert_allclose(rules.time_scales(slower, jnp.asarray([63.0, 252.0])), [1.0, 0.5], rtol=1e-6)
  np.testing.assert_allclose(rules.rate_scales(slower, jnp.asarray([63.0, 252.0])), [1.0, 0.25], rtol=1e-6)
  steeper = dataclasses.replace(spec, scale_rate=True, rate_power=0.75)
  np.testing.assert_allclose(
    rules.rate_scales(steeper, jnp.asarray([63.0, 252.0])), [1.0, 0.25**0.75], rtol=1e-6
  )
  write = unscaled - plain * inp["syn"]
  quarter = rules.synapse_update(*args, time_scale=jnp.asarray(0.25), rate_scale=rates[1])
  np.testing.assert_allclose(quarter - plain**0.25 * inp["syn"], 0.5 * write, atol=1e-5)


def test_readout_is_affine_in_body(theta, small_spec):
  body = _normal(np.random.default_rng(16), small_spec.body_dim)
  want = float(np.dot(np.asarray(body), np.asarray(theta["readout"]["w"])) + theta["readout"]["b"])
  np.testing.assert_allclose(rules.readout(theta, body), want, rtol=1e-5, atol=1e-6)


# ---- the block form and its custom VJP ----

P, Q, M = 3, 4, 6  # post neurons, pre neurons (fan-in K = Q), neurons a fan-in block draws from


def _block_case(seed: int, spec: rules.RuleSpec, fan_in: bool):
  """Arguments of `synapse_update_block` for a dense `P x Q` block or a fan-in block with `Q` inputs per
  post neuron drawn from the first `M - 1` of `M` neurons (so some are shared between post neurons, and
  the last feeds no synapse), and the cotangent weights."""
  rng = np.random.default_rng(seed)
  num_pre = M if fan_in else Q
  args = dict(
    syn=_normal(rng, P, Q, spec.synapse_dim),
    act_post=jnp.tanh(_normal(rng, P, spec.act_dim)),
    emb_post=_normal(rng, P, spec.emb_dim),
    act_pre=jnp.tanh(_normal(rng, num_pre, spec.act_dim)),
    emb_pre=_normal(rng, num_pre, spec.emb_dim),
  )
  index = np.stack([rng.choice(M - 1, Q, replace=False) for _ in range(P)]) if fan_in else None
  return (
    args,
    (None if index is None else jnp.asarray(index, jnp.int32)),
    _normal(rng, P, Q, spec.synapse_dim),
  )


def _per_synapse_block(
  theta, syn, act_post, emb_post, act_pre, emb_pre, pre_index, time_scale=None, rate_scale=None
):
  """`vmap(vmap(synapse_update))` over a block's pairs; a fan-in block gathers its pre neurons first."""
  pre_axis = None if pre_index is None else 0
  if pre_index is not None:
    act_pre, emb_pre = act_pre[pre_index], emb_pre[pre_index]
  per_pre = jax.vmap(rules.synapse_update, in_axes=(None, 0, None, 0, None, 0, None, None))
  axes = [None if v is None else 0 for v in (time_scale, rate_scale)]
  per_pair = jax.vmap(per_pre, in_axes=(None, 0, 0, pre_axis, 0, pre_axis, *axes))
  return per_pair(theta, syn, act_post, act_pre, emb_post, emb_pre, time_scale, rate_scale)


# (fan-in block, bilinear, chunk_synapses, decay scaled per post neuron): chunk 0 is the whole block at
# once, 1 one post neuron per chunk (a block of more than `WHOLE_BLOCK_CHUNKS` chunks).
BLOCK_GRAD_CASES = [
  (False, True, 0, False),
  (True, True, 0, False),
  (True, False, 0, False),
  (False, True, 1, False),
  (True, True, 1, False),
  (False, True, 0, True),
  (True, True, 1, True),
]


def test_blocks_of_a_few_chunks_are_updated_whole():
  """full-256 (256 x 255 synapses, under 4 chunks of 16,384) is one chunk; full-1024 is chunked."""
  chunk = rules.RuleSpec.chunk_synapses
  assert rules._chunk_rows(256, 255, chunk) == 256
  assert rules._chunk_rows(256, 256, chunk) == 256  # exactly WHOLE_BLOCK_CHUNKS chunks
  assert rules._chunk_rows(257, 256, chunk) == 1  # more: the largest divisor of 257 (a prime) under 64
  assert rules._chunk_rows(1024, 1023, chunk) == 16
  assert rules._chunk_rows(1024, 1023, 0) == 1024


@pytest.mark.parametrize(
  "fan_in,bilinear,chunk,scaled",
  BLOCK_GRAD_CASES,
  ids=[
    f"{'fan_in' if f else 'dense'}-bilinear={b}-chunk={c}{'-scaled' if d else ''}"
    for f, b, c, d in BLOCK_GRAD_CASES
  ],
)
def test_block_update_values_and_gradients_equal_per_synapse_vmap(
  make_theta, small_spec, fan_in, bilinear, chunk, scaled
):
  """The hand-written backward pass of `synapse_update_block`, whole or in chunks of post neurons, with
  the decay shared or scaled per post neuron, against autodiff of the per-synapse rule, w.r.t. theta
  and every per-synapse and per-neuron input."""
  spec = dataclasses.replace(small_spec, bilinear=bilinear)
  theta = make_theta(jax.random.PRNGKey(0), spec, seed=30)
  args, pre_index, weights = _block_case(31, spec, fan_in)
  names = ("syn", "act_post", "emb_post", "act_pre", "emb_pre")
  # Post neurons of fan-in 2, 4 and 8 under reference_fan_in = 4: decay exponents 2, 1 and 0.5, and the
  # rate times their square roots.
  scaled_spec = dataclasses.replace(spec, reference_fan_in=4, scale_rate=True)
  post_fan_in = jnp.asarray([2.0, 4.0, 8.0])
  scale = rules.time_scales(scaled_spec, post_fan_in) if scaled else None
  rate = rules.rate_scales(scaled_spec, post_fan_in) if scaled else None

  def loss(update, theta, *values):
    out = update(theta, *values, pre_index=pre_index, time_scale=scale, rate_scale=rate)
    return jnp.sum(weights * out), out

  grad_argnums = tuple(range(1 + len(names)))

  @jax.jit
  def both(theta, values):
    update = functools.partial(rules.synapse_update_block, chunk_synapses=chunk)
    block = jax.value_and_grad(functools.partial(loss, update), grad_argnums, has_aux=True)
    reference = jax.value_and_grad(functools.partial(loss, _per_synapse_block), grad_argnums, has_aux=True)
    return block(theta, *values), reference(theta, *values)

  ((_, got), got_grads), ((_, want), want_grads) = both(theta, tuple(args[n] for n in names))
  assert rules._chunk_rows(P, Q, chunk) == (P if chunk == 0 else 1)  # P = 3 rows: 1 per chunk
  chex.assert_shape(got, (P, Q, spec.synapse_dim))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  labels = ("theta", *names)
  for label, g, w in zip(labels, got_grads, want_grads, strict=True):
    chex.assert_trees_all_equal_shapes(g, w)
    for (path, g_leaf), w_leaf in zip(
      jax.tree_util.tree_flatten_with_path(g)[0], jax.tree.leaves(w), strict=True
    ):
      np.testing.assert_allclose(
        g_leaf, w_leaf, rtol=1e-5, atol=1e-6, err_msg=f"d/d{label}{jax.tree_util.keystr(path)}"
      )
  # Every input gets a gradient (a cotangent dropped by the backward pass would show up as zeros),
  # and in a fan-in block, pre neurons that feed no synapse get none.
  for label, g in zip(labels, got_grads, strict=True):
    if label != "theta":
      assert np.abs(np.asarray(g)).max() > 1e-3, label
  if fan_in:
    np.testing.assert_array_equal(np.asarray(got_grads[4])[M - 1], 0.0)
