r"""What a learned synapse rule does: its increment against pre and post activity (`learned_rules.probe`).

  python -m experiments.probe_rule                                   # the shipped `hetero` rule
  python -m experiments.probe_rule --rule=runs/remember-auto-full-K8-seed0 --out_dir=/tmp/probe
  python -m experiments.probe_rule --out_dir=docs/figures/probe      # the docs' figure

For every pair of neuron types that the rule's network connects, prints how the variance of one
synapse update over a grid of the pre and post neurons' external inputs splits into a post-only, a
pre-only, a Hebbian (post x pre) and a residual part, for the rule and, as a reference, for the
untrained rule it started from (the same run's initial theta). The update is the network's own: the
rule's network runs on held-out episodes of its task, and in (step, synapse) contexts drawn from them
only the two neurons' inputs are moved over the grid, through their body update and activation; their
bodies before the step, their messages and the synapse's state stay as the network had them, and the
increment is averaged over the contexts (`learned_rules.probe`). Writes `<out_dir>/probe.json` and
`<out_dir>/probe.png`: the increment of the input -> output synapse (the one that stores a key -> value
pair) beside the Hebbian outer product, and the shares of every type pair.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments import flagutil  # noqa: E402
from learned_rules import evaluation, meta_train, network, pretrained, probe, rules  # noqa: E402

_RULE = flagutil.define(
  flags.DEFINE_string, "rule", "hetero", "A shipped rule's name, a run directory or a saved rule."
)
_OUT_DIR = flagutil.define(
  flags.DEFINE_string, "out_dir", None, "Where to write probe.json and probe.png (default runs/probe-<rule>)."
)

TYPE_NAMES = {network.INPUT_TYPE: "input", network.OUTPUT_TYPE: "output"}


def type_name(t: int) -> str:
  return TYPE_NAMES.get(t, "hidden" if t == network.HIDDEN_TYPE else f"hidden{t - network.HIDDEN_TYPE + 1}")


def probe_all(theta, rule: pretrained.Rule) -> dict[str, probe.Probe]:
  """The probe of every type pair that `rule`'s network connects, with rule `theta`, in the contexts of
  that network running on `probe.NUM_EPISODES` held-out episodes of `rule`'s task."""
  topo, spec = rule.topology, rule.spec
  contexts = probe.record_contexts(theta, topo, rule.problem(), evaluation.eval_key(rule.config.seed))
  probes = {}
  for post in range(spec.num_types):
    for pre in range(spec.num_types):
      p = probe.probe(theta, spec, contexts, post, pre, topo.body_recurrence)
      if p is not None:
        probes[f"{type_name(pre)}->{type_name(post)}"] = p
  return probes


def plot(learned: dict, untrained: dict, path: str, title: str) -> None:
  key = f"{type_name(network.INPUT_TYPE)}->{type_name(network.OUTPUT_TYPE)}"
  key = key if key in learned else next(iter(learned))  # layered networks have no input -> output synapse
  p = learned[key]
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
  names = list(learned)
  ys = np.arange(len(names))
  colors = {"post": "tab:blue", "pre": "tab:orange", "hebbian": "tab:green", "residual": "tab:gray"}
  for offset, probes, hatch in ((-0.2, learned, None), (0.2, untrained, "//")):
    left = np.zeros(len(names))
    for term in probe.TERMS:
      share = np.array([probes[n].share(term) for n in names])
      axes[2].barh(ys + offset, share, 0.38, left=left, color=colors[term], hatch=hatch,
                   label=term if offset < 0 else None, edgecolor="white")  # fmt: skip
      left += share
  axes[2].set(yticks=ys, yticklabels=names, xlim=(0, 1), xlabel="share of the increment's variance")
  axes[2].set_title("learned (solid) and untrained (hatched)")
  axes[2].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def run(rule_name: str, out_dir: str | None = None) -> list[dict]:
  """Probes rule `rule_name` (`load_rule`) and its untrained start; prints the table, writes
  `<out_dir>/probe.json` and `probe.png`, and returns the records."""
  rule = pretrained.load_rule(rule_name)
  name = os.path.basename(os.path.normpath(rule_name))
  out_dir = out_dir or os.path.join("runs", f"probe-{name}")
  os.makedirs(out_dir, exist_ok=True)
  if not rule.topology.synapse_updates:
    raise ValueError(f"{rule_name}: its network has synapse updates off; it never applies the synapse rule")
  initial = rules.init_theta(jax.random.split(meta_train.train_key(rule.config.seed))[0], rule.spec)
  learned, untrained = probe_all(rule.theta, rule), probe_all(initial, rule)
  protocol = rule.config.task.protocol
  about = (
    f"{name}: {rule.meta_steps} meta steps. Shares of the variance of one synapse update over a 21 x 21 "
    f"grid of the two neurons' external inputs (x_post, x_pre), averaged over {probe.NUM_CONTEXTS} "
    f"(step, synapse) contexts of the rule's network on {probe.NUM_EPISODES} held-out {protocol} episodes. "
    "The update sees the network's own activations after its body update; only the two inputs are moved "
    "(the bodies before the step, the messages and the synapse state are as the network had them)."
  )
  print(textwrap.fill(about, 100))
  print(f"{'pre->post':<18}{'':>10}" + "".join(f"{t:>10}" for t in probe.TERMS) + f"{'std':>10}")
  records = []
  for pair in learned:
    for label, probes in (("learned", learned), ("untrained", untrained)):
      p = probes[pair]
      row = {t: p.share(t) for t in probe.TERMS}
      records.append({"pair": pair, "rule": label, **row, "std": p.std})
      print(
        f"{pair if label == 'learned' else '':<18}{label:>10}"
        + "".join(f"{row[t]:>10.3f}" for t in probe.TERMS)
        + f"{p.std:>10.4f}"
      )
  with open(os.path.join(out_dir, "probe.json"), "w") as f:
    contexts = {"episodes": probe.NUM_EPISODES, "contexts_per_pair": probe.NUM_CONTEXTS, "grid": 21}
    json.dump(
      {"rule": rule_name, "meta_steps": rule.meta_steps, "contexts": contexts, "records": records},
      f,
      indent=2,
    )
  plot(
    learned,
    untrained,
    os.path.join(out_dir, "probe.png"),
    f"rule {name}: one synapse update against pre and post input, in its network's own states",
  )
  print(f"wrote {out_dir}/probe.json, {out_dir}/probe.png")
  return records


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    run(_RULE.value, _OUT_DIR.value)
  except (FileNotFoundError, ValueError, pretrained.RuleLoadError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
