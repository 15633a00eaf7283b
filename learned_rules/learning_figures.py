"""The figure of the learning-from-remembering study (`learning_study.run`): recall and generalisation
bit accuracy against K, one row per teacher."""

from __future__ import annotations

import matplotlib.pyplot as plt

from learned_rules import figures, learning_study

_LABELS = {
  "learned": "learned rule (hetero, frozen)",
  "online_backprop": "online SGD, step size tuned",
  "hebbian": "Hebbian outer product",
  "hebbian_decay": "Hebbian, decay matched to the rule's recall",
  "pseudo_inverse": "pseudo-inverse (least squares)",
}
_STYLES = {
  "learned": "o-",
  "online_backprop": "s--",
  "hebbian": "^--",
  "hebbian_decay": "d:",
  "pseudo_inverse": "v--",
}


def _panel(ax, result: dict, kind: str, measure: str) -> None:
  """One teacher's `measure` against K, every method, with chance (and the linear ceiling)."""
  records = result["records"]
  for method in dict.fromkeys(r["method"] for r in records):
    rows = learning_study.rows(records, kind, method)
    ax.plot([r["K"] for r in rows], [r[measure] for r in rows], _STYLES[method], label=_LABELS[method], ms=4)
  ax.axhline(0.5, color="gray", lw=0.8, ls=":")
  if measure == "generalisation":
    ax.axhline(result["linear_ceiling"][kind], color="gray", lw=0.8, ls="-.", label="best linear readout")
  ax.set_xscale("log", base=2)
  ks = sorted({r["K"] for r in records})
  ax.set_xticks(ks, [str(k) for k in ks])
  ax.minorticks_off()
  ax.set_ylim(0.45, 1.02)
  where = "stored keys (memory)" if measure == "recall" else "unseen keys (learning)"
  ax.set_title(f"{kind} teacher: {measure} on {where}", fontsize=9)
  ax.set_ylabel("bit accuracy")


def plot(result: dict, path: str) -> None:
  """Recall (left) and generalisation (right) bit accuracy against K, one row per teacher, to `path`."""
  kinds = list(dict.fromkeys(r["teacher"] for r in result["records"]))
  fig, axes = plt.subplots(len(kinds), 2, figsize=(9, 3.3 * len(kinds)), dpi=90, squeeze=False, sharex=True)
  for row_axes, kind in zip(axes, kinds, strict=True):
    for ax, measure in zip(row_axes, learning_study.MEASURES, strict=True):
      _panel(ax, result, kind, measure)
  for ax in axes[-1]:
    ax.set_xlabel("K, pairs (x, f(x)) shown once")
  # One legend for all panels, below them.
  handles, labels = axes[0][1].get_legend_handles_labels()
  fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=3, frameon=False)
  fig.tight_layout(rect=(0, 0.07, 1, 1))
  figures.save_png(fig, path)
