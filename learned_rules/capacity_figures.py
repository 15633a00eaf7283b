"""The capacity studies' figures, drawn from their records (`capacity_study.run`) as small PNGs.

`recall_vs_k.png` (networks), `auto_recall_vs_k.png`, `capacity_vs_n.png`, `recall_by_age.png` (size)
and `difficulty.png`: each drawn when the records hold its study.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from learned_rules import figures, files
from learned_rules.capacity_plan import BASELINES
from learned_rules.capacity_study import groups
from learned_rules.evaluation import BY_POSITION, capacity

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
  for name, draw, path, needs in (
    ("networks", plot_recall_vs_k, "recall_vs_k.png", "K"),
    ("auto", plot_recall_vs_k, "auto_recall_vs_k.png", "K"),
    ("size", lambda rows, p: plot_capacity_vs_n(rows, p, train_neurons), "capacity_vs_n.png", "K"),
    ("size", plot_recall_by_age, "recall_by_age.png", BY_POSITION),  # not in records cached before it
    ("difficulty", lambda rows, p: plot_difficulty(rows, p, train_k), "difficulty.png", "K"),
  ):
    rows = [r for r in records if r["study"] == name]
    if any(needs in r for r in rows):
      draw(rows, files.join(folder, path))
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
    label, style = (network_name, "o-") if rule == "learned" else (rule.replace("_", " "), "s--")
    if rule == "random_delta":  # evaluated on every network, with its hidden layers
      label, style = f"{network_name}: random hidden + delta rule", "^:"
    if rule == "random_projection":
      label, style = f"{network_name}: random hidden + projection", "v:"
    if rule == "random_hebbian":
      inputs = "inputs + " if rows[0].get("with_inputs") else ""
      label, style = f"{network_name}: {inputs}random hidden + Hebbian", "<:"
    ax.plot(ks, accuracy, style, label=label)
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


# The size study's target: K@0.95 >= 3N/16, three times the Hebbian memory (K = 0.75 x key bits).
TARGET_MULTIPLE = 0.75
BASELINE_STYLE = {
  "key_blind": ("black", "-."),
  "hebbian": ("gray", "--"),
  "pseudo_inverse": ("tab:brown", "--"),
}


def _size_styles(rules) -> dict[str, tuple[str, str, str, str]]:
  """`{rule: (colour, line style, marker, label)}` in the size figures: a baseline its own style, each
  learned rule the next colour, in the order of `rules`."""
  out, index = {}, 0
  for rule in rules:
    label = rule.replace("_", " ") + (" floor" if rule == "key_blind" else "")
    if rule in BASELINE_STYLE:
      out[rule] = (*BASELINE_STYLE[rule], "s", label)
    else:
      out[rule] = (f"C{index}", "-", "o", label)
      index += 1
  return out


def _at_target(rows: list[dict]) -> dict | None:
  """The record of `rows` at K = 3N/16 (`TARGET_MULTIPLE` x key bits), if the study evaluated it."""
  return next((r for r in rows if r["K"] == round(TARGET_MULTIPLE * r["key_bits"])), None)


def plot_capacity_vs_n(records: list[dict], path: str, train_neurons: int | None = None) -> None:
  """Left: capacity K@0.95 (rules also K@0.99) against N, log-log, with the 3N/16 target; a capacity of
  0 sits on the bottom edge. Right: bit accuracy at K = 3N/16 with 95 % bootstrap intervals, beside
  the key-blind floor and chance. `train_neurons`: the largest N a rule was trained at, marked."""
  fig, (ax_k, ax_a) = plt.subplots(1, 2, figsize=(9.6, 4.0), dpi=100)
  by_rule: dict[str, list] = {}
  for (_, rule, _, n), rows in groups(records, "size").items():
    by_rule.setdefault(rule, []).append((n, rows))
  sizes = sorted({n for points in by_rule.values() for n, _ in points})
  zero = 0.5  # where a capacity of 0 is drawn on the log axis
  styles = _size_styles(by_rule)
  for rule, points in by_rule.items():
    ns = [n for n, _ in points]
    color, style, marker, label = styles[rule]
    caps = [max(capacity(rows, 0.95), zero) for _, rows in points]
    ax_k.plot(ns, caps, marker + style, color=color, label=f"{label}, K@0.95")
    if rule not in BASELINE_STYLE:
      caps99 = [max(capacity(rows, 0.99), zero) for _, rows in points]
      ax_k.plot(ns, caps99, marker + ":", color=color, mfc="none", label=f"{label}, K@0.99")
    at = [(n, _at_target(rows)) for n, rows in points]
    at = [(n, r) for n, r in at if r is not None]
    if at:
      acc = [r["bit_accuracy"] for _, r in at]
      # (clipped at 0: the float32 mean and the float64 interval of equal values differ in the last bits)
      err = [
        [max(r["bit_accuracy"] - r.get("bit_accuracy_low", r["bit_accuracy"]), 0.0) for _, r in at],
        [max(r.get("bit_accuracy_high", r["bit_accuracy"]) - r["bit_accuracy"], 0.0) for _, r in at],
      ]
      ax_a.errorbar(
        [n for n, _ in at], acc, yerr=err, fmt=marker + style, color=color, capsize=3, label=label
      )
  ax_k.plot(sizes, [3 * n / 16 for n in sizes], "-", color="tab:red", lw=2, alpha=0.35, label="target 3N/16")
  if train_neurons is not None:
    for ax in (ax_k, ax_a):
      ax.axvline(train_neurons, color="gray", lw=0.8, ls=":")
  ax_a.axhline(0.95, color="tab:red", lw=1, alpha=0.35)
  ax_a.axhline(0.5, color="gray", lw=0.8, ls=":")
  ax_a.text(sizes[-1], 0.5, "chance ", fontsize=7, color="gray", ha="right", va="bottom")
  for ax in (ax_k, ax_a):
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("N, neurons (a quarter of them input, a quarter output)")
  ax_k.set_yscale("log", base=2)
  ticks = [zero] + [2**e for e in range(0, 12) if 2**e <= 2 * max(3 * n / 16 for n in sizes)]
  ax_k.set_yticks(ticks, ["0"] + [str(int(t)) for t in ticks[1:]])
  ax_k.minorticks_off()
  ax_k.set_ylabel("capacity K (largest K at bit accuracy >= 0.95 / 0.99)")
  ax_a.set_ylabel("bit accuracy at K = 3N/16 (95 % interval)")
  ax_k.legend(fontsize=6, ncol=2)
  ax_a.legend(fontsize=7)
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


AGE_BINS = 8  # stored positions are averaged in this many groups of equal width, oldest to newest


def age_k(rows_by_rule: dict[str, list[dict]]) -> int:
  """The K a size's recall-by-age panel shows: the first K of the grid at which the first learned rule
  (not a baseline) recalls less than 0.95, where it starts to lose pairs; the grid's largest K if it
  never does, or if the records hold no learned rule."""
  learned = [rows for rule, rows in rows_by_rule.items() if rule not in BASELINES]
  ks = sorted({r["K"] for rows in rows_by_rule.values() for r in rows})
  if not learned:
    return ks[-1]
  return next((r["K"] for r in sorted(learned[0], key=lambda r: r["K"]) if r["bit_accuracy"] < 0.95), ks[-1])


def binned_by_age(by_position: list, bins: int = AGE_BINS) -> tuple[np.ndarray, np.ndarray]:
  """`by_position` (`[K]`, the oldest first; None where no query asked) averaged in at most `bins` groups
  of consecutive positions: each group's middle as a fraction of K (0: the oldest end, 1: the newest),
  and its mean recall (NaN for a group no query asked for)."""
  values = np.array([np.nan if v is None else v for v in by_position], float)
  edges = np.linspace(0, len(values), min(bins, len(values)) + 1).round().astype(int)
  middles = (edges[:-1] + edges[1:]) / 2 / len(values)
  groups_ = [values[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]
  means = [np.nan if np.all(np.isnan(g)) else np.nanmean(g) for g in groups_]
  return middles, np.array(means)


def plot_recall_by_age(records: list[dict], path: str) -> None:
  """Recall of each stored position, oldest to newest, one panel per N at one K (`age_k`): every memory
  of the size study on the same episodes. A memory that forgets loses its oldest pairs first (falls at
  the left); one that is full loses all positions alike."""
  by_size: dict[int, dict[str, list[dict]]] = {}
  for (_, rule, _, n), rows in groups(records, "size").items():
    by_size.setdefault(n, {})[rule] = rows
  sizes = sorted(by_size)
  fig, axes = plt.subplots(1, len(sizes), figsize=(3.2 * len(sizes), 3.4), dpi=100, squeeze=False)
  for ax, n in zip(axes[0], sizes, strict=True):
    k = age_k(by_size[n])
    styles = _size_styles(by_size[n])
    for rule, rows in by_size[n].items():
      row = next((r for r in rows if r["K"] == k and BY_POSITION in r), None)
      if row is None:
        continue
      color, style, marker, label = styles[rule]
      x, y = binned_by_age(row[BY_POSITION])
      ax.plot(x, y, marker + style, color=color, ms=3, label=f"{label} ({row['bit_accuracy']:.3f})")
    ax.axhline(0.95, color="tab:red", lw=1, alpha=0.35)
    ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), title=f"N = {n}, K = {k}")
    ax.set_xlabel("stored position (oldest 0 ... newest 1)", fontsize=8)
    ax.legend(fontsize=6, loc="lower right")
  axes[0][0].set_ylabel("recall of the pairs stored there")
  fig.tight_layout()
  figures.save_small_png(fig, path)
