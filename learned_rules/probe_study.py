r"""What a learned synapse rule does, type pair by type pair, beside the untrained rule it started from
(`python -m experiments.probe_rule`; the probe itself is `learned_rules.probe`).

For every pair of neuron types that the rule's network connects, `probe_rule` splits the variance of
one synapse update over a grid of the pre and post neurons' external inputs into a post-only, a
pre-only, a Hebbian (post x pre) and a residual part, for the rule and, as a reference, for the
untrained rule it started from (the same run's initial theta). The update is the network's own: the
rule's network runs on held-out episodes of its task, and in (step, synapse) contexts drawn from them
only the two neurons' inputs are moved over the grid, through their body update and activation; their
bodies before the step, their messages and the synapse's state stay as the network had them, and the
increment is averaged over the contexts. `plot` draws the increment of the input -> output synapse
(the one that stores a key -> value pair) beside the Hebbian outer product, and the shares of every
type pair.
"""

from __future__ import annotations

import dataclasses
import textwrap

import jax
import matplotlib.pyplot as plt
import numpy as np

from learned_rules import config as config_lib
from learned_rules import evaluation, figures, meta_train, network, pretrained, probe, rules

TYPE_NAMES = {network.INPUT_TYPE: "input", network.OUTPUT_TYPE: "output"}
GRID = 21  # points of `probe.probe`'s default grid of inputs in [-1, 1]
# How the probe's contexts were drawn, as the JSON records them.
CONTEXTS = {"episodes": probe.NUM_EPISODES, "contexts_per_pair": probe.NUM_CONTEXTS, "grid": GRID}


def type_name(t: int) -> str:
  return TYPE_NAMES.get(t, "hidden" if t == network.HIDDEN_TYPE else f"hidden{t - network.HIDDEN_TYPE + 1}")


@dataclasses.dataclass(frozen=True)
class RuleProbe:
  """The probes `{"pre->post": probe.Probe}` of a rule and of its untrained start, same type pairs."""

  learned: dict
  untrained: dict

  def records(self) -> list[dict]:
    """One record per type pair and rule (learned, then untrained): each term's share and the std."""
    records = []
    for pair in self.learned:
      for label, probes in (("learned", self.learned), ("untrained", self.untrained)):
        p = probes[pair]
        records.append({"pair": pair, "rule": label, **{t: p.share(t) for t in probe.TERMS}, "std": p.std})
    return records


def probe_all(theta, rule: pretrained.Rule) -> dict[str, probe.Probe]:
  """The probe of every type pair that `rule`'s network connects, with rule `theta`, in the contexts of
  that network running on `probe.NUM_EPISODES` held-out episodes of `rule`'s task."""
  topo, spec = rule.topology, rule.spec
  contexts = probe.record_contexts(
    theta, topo, rule.problem(), evaluation.eval_key(rule.experiment.train.seed)
  )
  probes = {}
  for post in range(spec.num_types):
    for pre in range(spec.num_types):
      p = probe.probe(theta, spec, contexts, post, pre, topo.body_recurrence)
      if p is not None:
        probes[f"{type_name(pre)}->{type_name(post)}"] = p
  return probes


def probe_rule(rule: pretrained.Rule) -> RuleProbe:
  """`rule` and its untrained start (the initial theta of its run's seed), probed. Raises `ConfigError`
  for a network with synapse updates off, which never applies the synapse rule."""
  if not rule.topology.synapse_updates:
    raise config_lib.ConfigError(
      "net.synapse_updates", f"{rule.source}: its network has synapse updates off; it never applies the rule"
    )
  initial = rules.init_theta(jax.random.split(meta_train.train_key(rule.experiment.train.seed))[0], rule.spec)
  return RuleProbe(probe_all(rule.theta, rule), probe_all(initial, rule))


def describe(name: str, rule: pretrained.Rule) -> str:
  """What the table of rule `name` shows, wrapped to 100 columns."""
  about = (
    f"{name}: {rule.meta_steps} meta steps. Shares of the variance of one synapse update over a "
    f"{GRID} x {GRID} grid of the two neurons' external inputs (x_post, x_pre), averaged over "
    f"{probe.NUM_CONTEXTS} (step, synapse) contexts of the rule's network on {probe.NUM_EPISODES} held-out "
    f"{rule.experiment.task.protocol} episodes. The update sees the network's own activations after its body "
    "update; only the two inputs are moved (the bodies before the step, the messages and the synapse "
    "state are as the network had them)."
  )
  return textwrap.fill(about, 100)


def format_table(records: list[dict]) -> str:
  """`RuleProbe.records` as a table: per type pair, the learned and the untrained rule's shares."""
  lines = [f"{'pre->post':<18}{'':>10}" + "".join(f"{t:>10}" for t in probe.TERMS) + f"{'std':>10}"]
  for r in records:
    pair = r["pair"] if r["rule"] == "learned" else ""
    shares = "".join(f"{r[t]:>10.3f}" for t in probe.TERMS)
    lines.append(f"{pair:<18}{r['rule']:>10}{shares}{r['std']:>10.4f}")
  return "\n".join(lines)


def _shares_panel(ax, result: RuleProbe) -> None:
  """Stacked bars of each term's share per type pair: learned solid, untrained hatched."""
  names = list(result.learned)
  ys = np.arange(len(names))
  colors = {"post": "tab:blue", "pre": "tab:orange", "hebbian": "tab:green", "residual": "tab:gray"}
  for offset, probes, hatch in ((-0.2, result.learned, None), (0.2, result.untrained, "//")):
    left = np.zeros(len(names))
    for term in probe.TERMS:
      share = np.array([probes[n].share(term) for n in names])
      ax.barh(ys + offset, share, 0.38, left=left, color=colors[term], hatch=hatch,
              label=term if offset < 0 else None, edgecolor="white")  # fmt: skip
      left += share
  ax.set(yticks=ys, yticklabels=names, xlim=(0, 1), xlabel="share of the increment's variance")
  ax.set_title("learned (solid) and untrained (hatched)")
  ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)


def plot(result: RuleProbe, path: str, title: str) -> None:
  """The input -> output increment (the channel most Hebbian), the Hebbian outer product with its
  sign, and every pair's shares; to `path`."""
  key = f"{type_name(network.INPUT_TYPE)}->{type_name(network.OUTPUT_TYPE)}"
  key = key if key in result.learned else next(iter(result.learned))  # layered: no input -> output synapse
  p = result.learned[key]
  channel = int(np.argmax(p.shares["hebbian"] * p.channel_variance))
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=80, gridspec_kw={"width_ratios": [1, 1, 1.6]})
  extent = (p.xs[0], p.xs[-1], p.xs[0], p.xs[-1])
  image = p.delta[:, :, channel]
  bound = float(np.abs(image).max()) or 1.0
  axes[0].imshow(image, origin="lower", extent=extent, cmap="RdBu_r", vmin=-bound, vmax=bound)
  axes[0].set(
    xlabel="pre input x_pre", ylabel="post input x_post", title=f"{key}: increment, channel {channel}"
  )
  hebb = np.outer(p.xs, p.xs)
  axes[1].imshow(np.sign(p.coefficients[channel, 3]) * hebb, origin="lower", extent=extent, cmap="RdBu_r")
  axes[1].set(xlabel="pre input x_pre", title="Hebbian x_post * x_pre (same sign)")
  _shares_panel(axes[2], result)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  figures.save_png(fig, path)
