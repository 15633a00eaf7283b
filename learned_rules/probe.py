"""What a learned synapse rule does: its increment as a function of pre- and post-synaptic activity.

For a pair of neuron types (pre -> post), each neuron starts from its type's learned initial body and
is driven by a scalar external input x (what the task clamps on input and output neurons, +-1 for a
bit). Its activation is then `a(x) = tanh(body[:Da] + w_in * x)`. The probe evaluates one synapse
update from the pair's learned initial synapse state,

  delta(x_post, x_pre) = synapse_update(theta, s0, a(x_post), a(x_pre), e_post, e_pre) - s0,   [Ds]

on a grid of x, and fits every channel of delta by least squares to

  c0 + c_post * x_post + c_pre * x_pre + c_hebb * x_post * x_pre.

The share of each channel's variance over the grid that each term explains says what kind of rule it
is: a Hebbian rule lives in the `x_post * x_pre` term; a rule driven by one side only lives in
`x_post` or `x_pre`; what no term explains (`residual`) is the non-linear rest.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from learned_rules import rules

TERMS = ("post", "pre", "hebbian", "residual")


@dataclasses.dataclass(frozen=True)
class Probe:
  """One type pair's probe.

  Attributes:
    xs: `[G]` the grid of external inputs, for the post and the pre neuron alike.
    delta: `[G, G, Ds]` the synapse increment, `[post x, pre x, channel]`.
    shares: `{term: [Ds]}` each term's share of each channel's variance over the grid (`TERMS`; they
      sum to 1 per channel).
    coefficients: `[Ds, 4]` the fitted `c0, c_post, c_pre, c_hebb` per channel.
  """

  xs: np.ndarray
  delta: np.ndarray
  shares: dict
  coefficients: np.ndarray

  @property
  def channel_variance(self) -> np.ndarray:
    """`[Ds]` each channel's variance over the grid."""
    return self.delta.reshape(-1, self.delta.shape[-1]).var(axis=0)

  @property
  def std(self) -> float:
    """Size of the increment: the square root of its total variance over the grid (all channels)."""
    return float(np.sqrt(self.channel_variance.sum()))

  def share(self, term: str) -> float:
    """Share of the increment's total variance (all channels) that `term` of `TERMS` explains."""
    var = self.channel_variance
    return float((self.shares[term] * var).sum() / max(var.sum(), 1e-30))


def synapse_increment(
  theta: rules.Theta, spec: rules.RuleSpec, post_type: int, pre_type: int, xs
) -> jax.Array:
  """`delta` `[G, G, Ds]` of one update from the type pair's initial synapse state (module doc)."""
  xs = jnp.asarray(xs, jnp.float32)
  act = lambda t: jax.vmap(lambda x: rules.activation(theta, theta["init_body"][t], x, spec))(xs)  # noqa: E731
  a_post, a_pre = act(post_type), act(pre_type)
  s0 = theta["init_synapse"][post_type, pre_type]
  e_post, e_pre = theta["type_emb"][post_type], theta["type_emb"][pre_type]
  update = lambda ap, aq: rules.synapse_update(theta, s0, ap, aq, e_post, e_pre) - s0  # noqa: E731
  return jax.vmap(lambda ap: jax.vmap(lambda aq: update(ap, aq))(a_pre))(a_post)


def probe(theta: rules.Theta, spec: rules.RuleSpec, post_type: int, pre_type: int, xs=None) -> Probe:
  """The probe of the type pair `pre_type -> post_type` on the grid `xs` (default 21 points in [-1, 1])."""
  xs = np.linspace(-1.0, 1.0, 21) if xs is None else np.asarray(xs, np.float64)
  delta = np.asarray(synapse_increment(theta, spec, post_type, pre_type, xs), np.float64)
  shares, coefficients = variance_shares(xs, delta)
  return Probe(xs=xs, delta=delta, shares=shares, coefficients=coefficients)


def variance_shares(xs: np.ndarray, delta: np.ndarray) -> tuple[dict, np.ndarray]:
  """Least-squares fit of `delta` `[G, G, C]` (post x, pre x, channel) on the grid `xs` (symmetric
  about 0) to `c0 + c_post x_post + c_pre x_pre + c_hebb x_post x_pre`: each term's share of each
  channel's variance (`{term: [C]}`, `TERMS`) and the coefficients `[C, 4]`."""
  post, pre = np.meshgrid(xs, xs, indexing="ij")
  design = np.stack([np.ones(post.size), post.ravel(), pre.ravel(), (post * pre).ravel()], axis=1)
  targets = delta.reshape(-1, delta.shape[-1])  # [G*G, C]
  coefficients, *_ = np.linalg.lstsq(design, targets, rcond=None)  # [4, C]
  total = targets.var(axis=0)
  safe = np.where(total > 0, total, 1.0)
  # On a grid symmetric about 0 the three centred regressors are orthogonal: their variances add up.
  shares = {
    name: np.var(np.outer(design[:, i], coefficients[i]), axis=0) / safe
    for i, name in ((1, "post"), (2, "pre"), (3, "hebbian"))
  }
  shares["residual"] = np.var(targets - design @ coefficients, axis=0) / safe
  return shares, coefficients.T
