"""The figure of the never-reset streams study (`streams_study.run`): the forgetting curve, recall over
stream time, and the learned rule's state norms over stream time."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from learned_rules import figures
from learned_rules.streams_study import label, present

_STYLE = {
  "learned": ("o-", "C0"),
  "palimpsest": ("s--", "C1"),
  "hebbian_no_decay": ("^:", "C2"),
  "synapses_off": ("x-.", "C3"),
  "key_blind": ("-", "0.45"),
}


def _as_float(values) -> np.ndarray:
  return np.array([np.nan if v is None else v for v in values], np.float64)


def _window_steps(p: dict) -> np.ndarray:
  return (np.arange(p["num_windows"]) + 1) * p["window"]


def _plot_curve(ax, out: dict) -> None:
  train = out["protocols"]["train"]
  curve = out["protocols"].get("probe", train)
  lags = np.arange(1, curve["max_lag"] + 1)
  ax.axvspan(
    0.6, out["train_max_lag"] + 0.4, color="0.92", lw=0, label=f"trained lags (<= {out['train_max_lag']})"
  )
  lowest = 0.45
  for m in present(curve):
    style, color = _STYLE[m]
    values = _as_float(curve[m]["accuracy_by_lag"])
    ax.plot(lags, values, style, color=color, ms=4, label=label(m, curve))
    if "accuracy_by_lag_low" in curve[m] and m == "learned":
      low, high = _as_float(curve[m]["accuracy_by_lag_low"]), _as_float(curve[m]["accuracy_by_lag_high"])
      ax.fill_between(lags, low, high, color=color, alpha=0.25, lw=0, label="learned, 95 % interval")
    lowest = min(lowest, np.nanmin(values) - 0.03)
  if "palimpsest_best_per_lag" in curve:
    values = _as_float(curve["palimpsest_best_per_lag"]["accuracy_by_lag"])
    ax.plot(lags, values, "--", color="C1", lw=0.8, alpha=0.7, label="palimpsest, best decay per lag")
  if curve is not train:  # the learned rule on its own protocol, for the trained lags
    values = _as_float(train["learned"]["accuracy_by_lag"])
    ax.plot(
      lags[: len(values)], values, "o", mfc="none", color="C0", ms=7, label="learned, lags 1..Dmax asked"
    )
  ax.axhline(0.5, color="gray", lw=0.6, ls=":")
  ax.set(xlabel="lag d (slots back)", ylabel="recall bit accuracy", ylim=(lowest, 1.02))
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  size = f"N = {out['num_neurons']}, " if "num_neurons" in out else ""
  ax.set_title(
    f"forgetting curve ({size}lags 1..{curve['max_lag']} asked, trained on 1..{train['max_lag']})", fontsize=9
  )
  ax.legend(fontsize=6.5, loc="lower left")


def _plot_time(ax, train: dict) -> None:
  for m in present(train):
    style, color = _STYLE[m]
    values = _as_float(train[m]["accuracy_by_window"])
    ax.plot(_window_steps(train), values, style[1:] or "-", color=color, lw=1, label=label(m, train))
  ax.axhline(0.5, color="gray", lw=0.6, ls=":")
  ax.set(xlabel="stream step (end of window)", ylabel="recall bit accuracy per window", ylim=(0.45, 1.02))
  ax.set_title(f"recall over the stream (W = {train['window']}, lags 1..{train['max_lag']})", fontsize=9)
  ax.legend(fontsize=6.5, loc="lower left")


def _plot_norms(ax, out: dict) -> None:
  for name, p in out["protocols"].items():
    for state, color in (("body", "C0"), ("synapse", "C4")):
      values = _as_float(p["learned"]["norms"][f"max_{state}"])
      style = "-" if name == "train" else ":"
      ax.plot(_window_steps(p), values, style, color=color, lw=1, label=f"max |{state}| ({name})")
      if name == "train":
        rms = _as_float(p["learned"]["norms"][f"rms_{state}"])
        ax.plot(_window_steps(p), rms, "-", color=color, lw=0.6, alpha=0.6, label=f"RMS {state} ({name})")
  if out["synapse_bound"] is not None:  # None: a rule that centres its synapses has none
    ax.axhline(out["synapse_bound"], color="C4", lw=0.8, ls="--", label="synapse bound")
  ax.set(xlabel="stream step (end of window)", ylabel="|state entry|", ylim=(0, None))
  ax.set_title("learned rule: state norms over the stream", fontsize=9)
  ax.legend(fontsize=6.5, loc="center right")


def plot(out: dict, path: str) -> None:
  """Three panels: the forgetting curve (probe protocol, or train if none), recall over stream time and
  the learned rule's state norms over stream time; a small PNG (64 colours) at `path`."""
  fig, (ax_d, ax_t, ax_n) = plt.subplots(1, 3, figsize=(13.0, 3.6), dpi=80)
  _plot_curve(ax_d, out)
  _plot_time(ax_t, out["protocols"]["train"])
  _plot_norms(ax_n, out)
  fig.tight_layout()
  figures.save_small_png(fig, path)
