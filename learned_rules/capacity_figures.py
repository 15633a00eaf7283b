"""The capacity studies' figures, drawn from their records (`capacity_study.run`) as small PNGs.

`recall_vs_k.png` (networks), `auto_recall_vs_k.png`, `capacity_vs_n.png` and `difficulty.png`: each
drawn when the records hold its study.
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import matplotlib.ticker

from learned_rules import figures
from learned_rules.capacity_study import groups
from learned_rules.evaluation import capacity

AXIS_LABELS = {
  "width": "key and value bits",
  "delay": "delay D",
  "present": "presentation steps P",
  "corruption": "cue bits zeroed",
}


def plot_all(records: list[dict], folder: str, train_neurons: int | None, train_k: int) -> list[str]:
  """Writes into `folder` every figure the records allow; returns their file names. `train_neurons`
  and `train_k` are the N and K the rules were trained at (None: no linear-growth line)."""
  made = []
  for name, draw, path in (
    ("networks", plot_recall_vs_k, "recall_vs_k.png"),
    ("auto", plot_recall_vs_k, "auto_recall_vs_k.png"),
    ("size", lambda rows, p: plot_capacity_vs_n(rows, p, train_neurons), "capacity_vs_n.png"),
    ("difficulty", lambda rows, p: plot_difficulty(rows, p, train_k), "difficulty.png"),
  ):
    rows = [r for r in records if r["study"] == name]
    if rows:
      draw(rows, os.path.join(folder, path))
      made.append(path)
  return made


def plot_recall_vs_k(records: list[dict], path: str) -> None:
  """Bit accuracy against K of every memory of one study, with chance and the theoretical capacities."""
  fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
  ax.set_prop_cycle(color=plt.cm.tab20.colors[::2] + plt.cm.tab20.colors[1::2])  # 20 distinct curves
  floor_drawn = False
  for (network_name, rule, _, _), rows in groups(records, records[0]["study"]).items():
    ks, accuracy = [r["K"] for r in rows], [r["bit_accuracy"] for r in rows]
    if rule == "key_blind":  # one curve: the floor's expectation is the same on every network's task
      if not floor_drawn:
        ax.plot(ks, accuracy, color="black", lw=1.6, ls="-.", label="key-blind floor", zorder=5)
        floor_drawn = True
      continue
    label = network_name if rule == "learned" else rule.replace("_", " ")
    ax.plot(ks, accuracy, "o-" if rule == "learned" else "s--", label=label)
  ax.axhline(0.5, color="gray", lw=0.8, ls=":")
  ax.text(ax.get_xlim()[1], 0.5, "chance ", fontsize=7, color="gray", ha="right", va="bottom")
  # Theory for a memory of n-bit keys: Hebbian about 0.14 n (Hopfield, full cue), Cover/Gardner 2 n.
  n = records[0]["key_bits"]
  for k, text in ((0.14 * n, "0.14 n Hebbian"), (2 * n, "2 n Cover/Gardner")):
    if k <= max(r["K"] for r in records):
      ax.axvline(k, color="gray", lw=0.8, ls="--")
      ax.text(k, 0.52, f" {text}", fontsize=7, color="gray", rotation=90, va="bottom")
  ax.set_xlabel("K, snippets stored per episode")
  ax.set_ylabel("held-out recall bit accuracy")
  ax.set_title(f"{records[0]['protocol']}, N = {records[0]['N']}, {n}-bit keys", fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  figures.save_small_png(fig, path)


def plot_capacity_vs_n(records: list[dict], path: str, train_neurons: int | None = None) -> None:
  """Capacity (K at 0.99 and 0.95) against N, and stored bits per synapse at the 0.95 point; with
  `train_neurons`, the rule's 0.95 capacity there grown linearly in N."""
  fig, (ax_k, ax_s) = plt.subplots(1, 2, figsize=(9, 3.8), dpi=100)
  by_rule: dict[str, list] = {}
  for (_, rule, _, n), rows in groups(records, "size").items():
    by_rule.setdefault(rule, []).append((n, rows))
  for i, (rule, points) in enumerate(by_rule.items()):
    ns = [n for n, _ in points]
    color = f"C{i}"
    for threshold, style in ((0.99, "o-"), (0.95, "s--")):
      ks = [capacity(rows, threshold) for _, rows in points]
      ax_k.plot(ns, ks, style, color=color, label=f"{rule.replace('_', ' ')}, {threshold}")
    bits = [capacity(rows, 0.95) * rows[0]["value_bits"] / rows[0]["synapses"] for _, rows in points]
    ax_s.plot(ns, bits, "s--", color=color, label=rule.replace("_", " "))
  if "learned" in by_rule and train_neurons is not None:
    anchor = [capacity(rows, 0.95) for n, rows in by_rule["learned"] if n == train_neurons]
    if anchor and anchor[0] > 0:
      ns = [n for n, _ in by_rule["learned"]]
      ax_k.plot(ns, [anchor[0] * n / train_neurons for n in ns], ":", color="gray", label="linear in N")
  sizes = sorted({n for points in by_rule.values() for n, _ in points})
  for ax in (ax_k, ax_s):
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("N, neurons (a quarter of them input, a quarter output)")
  ax_k.set_yscale("symlog", linthresh=1, base=2)
  ax_k.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
  ax_k.set_ylim(bottom=-0.1)
  ax_k.set_ylabel("capacity K at bit accuracy 0.99 / 0.95")
  ax_s.set_ylabel("stored value bits per synapse at 0.95")
  ax_k.legend(fontsize=7)
  ax_s.legend(fontsize=7)
  fig.tight_layout()
  figures.save_small_png(fig, path)


def plot_difficulty(records: list[dict], path: str, train_k: int = 8) -> None:
  """Bit accuracy at the training K `train_k` (or the nearest evaluated) along each difficulty axis."""
  axes_names = list(dict.fromkeys(r["axis"] for r in records))
  fig, axes = plt.subplots(1, len(axes_names), figsize=(3.2 * len(axes_names), 3.4), dpi=100, squeeze=False)
  k = min(sorted({r["K"] for r in records}), key=lambda x: abs(x - train_k))
  for ax, axis in zip(axes[0], axes_names, strict=True):
    rules = list(dict.fromkeys(r["rule"] for r in records if r["axis"] == axis))
    for rule in rules:
      rows = [r for r in records if r["axis"] == axis and r["rule"] == rule and r["K"] == k]
      values, accuracy = [r["value"] for r in rows], [r["bit_accuracy"] for r in rows]
      ax.plot(values, accuracy, "o-" if rule == "learned" else "s--", label=rule.replace("_", " "))
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax.set_ylim(0.45, 1.02)
  axes[0][0].set_ylabel(f"bit accuracy at K = {k}")
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  figures.save_small_png(fig, path)
