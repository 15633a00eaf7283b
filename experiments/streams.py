r"""Streams that never reset: a streaming rule run for 100-200 times its training window.

  python -m experiments.remember --config=learned_rules/configs/remember.py:streaming --workdir=runs/streaming
  python -m experiments.streams --rule=runs/streaming                 # 64 streams x 200 windows
  python -m experiments.streams --rule=runs/streaming --quick         # 32 streams x 100 windows

Fresh streams of the rule's streaming protocol (`learned_rules.streaming`) run window by window, never
reset, for `--num_windows` windows of the training length W, twice:

- `train`: the protocol the rule was meta-trained on (lags d = 1..Dmax): recall over stream time and the
  state norms (the largest |body| and |synapse| entry of every window, their RMS);
- `probe`: the same with lags up to `--probe_max_lag` (default 16): a forgetting curve past the lags
  the rule was trained on (its input then holds cues of older snippets than it ever saw in training).

On exactly the same stream steps run: the palimpsest, a Hebbian outer-product memory with decay
(`baselines.hebbian`, online), its decay tuned over `DECAY_GRID` on separate streams of the same protocol,
and the same memory with decay 1 (no forgetting); and, when the rule's run has one
(`<rule>/synapses_off`, written by `experiments.remember`), the same network meta-trained with synapse
updates off (no synaptic memory). Recall is scored, as in training, on both query steps of every slot
whose asked-for snippet was shown whole in the stream.

Prints the forgetting-curve tables and the norm summary; writes `<out_dir>/results.json` (default
runs/streams or runs/streams-quick) and `streams.png` (`streams-quick.png`) into `<out_dir>` and into
`--figure_dir` (default docs/figures/streams; empty: none).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments import flagutil  # noqa: E402
from learned_rules import config as config_lib  # noqa: E402
from learned_rules import evaluation as evaluate_lib  # noqa: E402
from learned_rules import figures, pretrained, streaming  # noqa: E402
from learned_rules import metrics as metrics_lib  # noqa: E402

_RULE = flagutil.define(
  flags.DEFINE_string, "rule", "runs/streaming", "A streaming rule: a run directory or a saved rule."
)
_QUICK = flagutil.define(flags.DEFINE_bool, "quick", False, "Fewer streams, 100 windows (minutes).")
_OUT_DIR = flagutil.define(flags.DEFINE_string, "out_dir", None, "Default runs/streams[-quick].")
_FIGURE_DIR = flagutil.define(
  flags.DEFINE_string, "figure_dir", "docs/figures/streams", "Also write the PNG here ('': nowhere)."
)
_NUM_STREAMS = flagutil.define(flags.DEFINE_integer, "num_streams", 0, "Streams (0: 64, --quick 32).")
_NUM_WINDOWS = flagutil.define(
  flags.DEFINE_integer, "num_windows", 0, "Windows of W steps per stream (0: 200, --quick 100)."
)
_PROBE_MAX_LAG = flagutil.define(
  flags.DEFINE_integer, "probe_max_lag", 16, "Dmax of the probe protocol (<= the rule's Dmax: no probe)."
)
_SYNAPSES_OFF = flagutil.define(
  flags.DEFINE_string,
  "synapses_off",
  "",
  "The synapses-off run to compare with ('': <rule>/synapses_off if it exists; 'none': skip).",
)

DECAY_GRID = (0.5, 0.7, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0)
FULL = {"num_streams": 64, "num_windows": 200}
QUICK = {"num_streams": 32, "num_windows": 100}
MEMORIES = ("learned", "palimpsest", "hebbian_no_decay", "synapses_off")


class StreamsError(ValueError):
  """The rule given cannot be run on never-reset streaming."""


def _clock():
  return time.perf_counter(), time.process_time()


def _since(start) -> dict[str, float]:
  return {"wall_seconds": time.perf_counter() - start[0], "cpu_seconds": time.process_time() - start[1]}


def _nan_to_none(values) -> list:
  return [None if not math.isfinite(v) else float(v) for v in np.asarray(values, np.float64).ravel()]


def load_streaming_rule(path: str, what: str = "rule") -> pretrained.Rule:
  """The rule at `path`, checked to be meta-trained on the streaming protocol."""
  try:
    rule = pretrained.load_rule(path)
  except (FileNotFoundError, pretrained.RuleLoadError) as e:
    raise StreamsError(f"cannot load the {what} {path!r}: {e}") from e
  protocol = rule.config.task.protocol
  if protocol != "streaming":
    raise StreamsError(
      f"the {what} {path!r} was meta-trained on the {protocol!r} protocol, not 'streaming'; meta-train one "
      "with: python -m experiments.remember --config=learned_rules/configs/remember.py:streaming "
      "--workdir=runs/streaming"
    )
  return rule


def _on_protocol(rule: pretrained.Rule, max_lag: int):
  """`(topology, problem)` of `rule` on its streaming protocol with lags up to `max_lag`."""
  cfg = config_lib.with_overrides(rule.config, {"task.max_lag": max_lag})
  return rule.topology, evaluate_lib.problem_from_config(cfg, rule.topology)


def _memory_record(counts: streaming.RecallCounts, **extra) -> dict:
  """Forgetting curve and per-window accuracy of one memory's `[num_windows, Dmax]` counts."""
  return {
    "bit_accuracy": _nan_to_none(streaming.accuracy(counts))[0],
    "accuracy_by_lag": _nan_to_none(streaming.accuracy(counts, axis=0)),
    "scored_bits_by_lag": _nan_to_none(np.sum(counts.bits_by_lag, axis=0)),
    "accuracy_by_window": _nan_to_none(streaming.accuracy(counts, axis=1)),
    **extra,
  }


def _norm_record(norms: streaming.StateNorms) -> dict:
  """Per-window `[num_windows]` norms, the first, last and largest maximum, and whether all are finite."""
  record = {name: _nan_to_none(getattr(norms, name)) for name in streaming.StateNorms._fields}
  for name in ("max_body", "max_synapse"):
    values = np.asarray(getattr(norms, name))
    first, last, most = _nan_to_none([values[0], values[-1], values.max()])  # NaN: not finite
    record[f"{name}_summary"] = {"first_window": first, "last_window": last, "max": most}
  record["finite"] = bool(all(np.all(np.isfinite(np.asarray(v))) for v in norms))
  return record


def run_protocol(rule, off_rule, max_lag: int, keys, sizes: dict) -> dict:
  """Every memory on `sizes["num_streams"]` streams of `rule`'s protocol with lags up to `max_lag`,
  `sizes["num_windows"]` windows each: the learned rule, the palimpsest (its decay the best of
  `DECAY_GRID` on as many other streams of `keys[1]`), decay 1, and synapses off."""
  k_eval, k_tune = keys
  topo, problem = _on_protocol(rule, max_lag)
  b, w = sizes["num_streams"], sizes["num_windows"]
  out = {"max_lag": max_lag, "window": problem.task.window, "num_streams": b, "num_windows": w}
  start = _clock()
  grid = jnp.asarray(DECAY_GRID)
  tune_counts, _ = streaming.run_hebbian_streams(problem.task, k_tune, b, w, grid)
  counts, max_weight = streaming.run_hebbian_streams(problem.task, k_eval, b, w, grid)
  pick = lambda tree, i: jax.tree.map(lambda a: a[i], tree)  # noqa: E731
  tuned = [float(streaming.accuracy(pick(tune_counts, i))) for i in range(len(DECAY_GRID))]
  best = int(np.argmax(tuned))
  out["decay_tuning"] = {
    "grid": list(DECAY_GRID),
    "accuracy_tuning_streams": tuned,
    "accuracy_eval_streams": [float(streaming.accuracy(pick(counts, i))) for i in range(len(DECAY_GRID))],
    "chosen": DECAY_GRID[best],
  }
  timing = _since(start)  # both Hebbian runs, every decay of the grid
  for name, i in (("palimpsest", best), ("hebbian_no_decay", DECAY_GRID.index(1.0))):
    extra = {"decay": DECAY_GRID[i], "max_abs_weight": _nan_to_none(max_weight[i])}
    out[name] = _memory_record(pick(counts, i), **extra, **timing)
  start = _clock()
  counts, norms = jax.block_until_ready(streaming.run_long_streams(rule.theta, topo, problem, k_eval, b, w))
  out["learned"] = _memory_record(counts, norms=_norm_record(norms), **_since(start))
  if off_rule is not None:
    start = _clock()
    off_topo, off_problem = _on_protocol(off_rule, max_lag)
    off = jax.block_until_ready(
      streaming.run_long_streams(off_rule.theta, off_topo, off_problem, k_eval, b, w)
    )
    out["synapses_off"] = _memory_record(off[0], norms=_norm_record(off[1]), **_since(start))
  return out


def synapses_off_rule(rule_path: str, rule: pretrained.Rule, synapses_off: str):
  """The synapses-off run to compare with (see `--synapses_off`), checked against `rule`, or None."""
  if synapses_off == "none":
    return None
  path = synapses_off or os.path.join(rule_path, "synapses_off")
  if not synapses_off and not os.path.isdir(os.path.join(path, "checkpoints")):
    return None
  off = load_streaming_rule(path, "synapses-off run")
  if off.config.net.synapse_updates:
    raise StreamsError(f"the synapses-off run {path!r} has synapse updates on (net.synapse_updates)")
  if _on_protocol(off, 1)[1].task != _on_protocol(rule, 1)[1].task:
    raise StreamsError(f"the synapses-off run {path!r} was trained on another stream than the rule")
  return off


def _meta_training(rule_path: str) -> dict | None:
  """What `experiments.remember` recorded of the rule's meta-training (its summary.json), if anything."""
  path = os.path.join(rule_path, "summary.json")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def run(
  rule_path: str,
  out_dir: str,
  sizes: dict,
  probe_max_lag: int = 16,
  synapses_off: str = "",
  figure_dir: str | None = None,
  figure_name: str = "streams.png",
) -> dict:
  """Runs every protocol (`train`, and `probe` if `probe_max_lag` exceeds the rule's Dmax), prints
  the tables, writes `<out_dir>/results.json` and the figure. Raises `StreamsError` for a rule that
  is not a streaming rule or cannot be loaded."""
  start = _clock()
  rule = load_streaming_rule(rule_path)
  off = synapses_off_rule(rule_path, rule, synapses_off)
  train_lag = int(rule.config.task.max_lag)
  keys = jax.random.split(evaluate_lib.eval_key(int(rule.config.seed)))  # evaluation, decay tuning
  lags = {"train": train_lag, **({"probe": probe_max_lag} if probe_max_lag > train_lag else {})}
  out = {
    "rule": rule_path,
    "meta_steps": rule.meta_steps,
    "meta_training": _meta_training(rule_path),
    "synapses_off_run": None if off is None else off.source,
    "train_max_lag": train_lag,
    "sizes": sizes,
    "synapse_bound": streaming.synapse_bound(rule.theta),
    "protocols": {name: run_protocol(rule, off, lag, keys, sizes) for name, lag in lags.items()},
  }
  out.update(_since(start))
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(out, f, indent=1)
  print(format_tables(out))
  for folder in filter(None, (out_dir, figure_dir)):
    os.makedirs(folder, exist_ok=True)
    plot(out, os.path.join(folder, figure_name))
  print(f"wrote {out_dir}/results.json and {figure_name} ({out['wall_seconds']:.0f} s wall, "
        f"{out['cpu_seconds']:.0f} s CPU)")  # fmt: skip
  return out


def _present(p: dict) -> list[str]:
  return [m for m in MEMORIES if m in p]


def _label(name: str, p: dict) -> str:
  if name in ("palimpsest", "hebbian_no_decay"):
    return f"{'palimpsest' if name == 'palimpsest' else 'Hebbian'} (decay {p[name]['decay']:g})"
  return {"learned": "learned rule", "synapses_off": "synapses off"}[name]


def _num(value) -> str:
  return "inf/nan" if value is None else f"{value:.3f}"


def format_tables(out: dict) -> str:
  """The forgetting curve of every protocol and the state-norm summary, as text."""
  lines = []
  for name, p in out["protocols"].items():
    memories = _present(p)
    steps = p["num_windows"] * p["window"]
    lines.append(
      f"\n{name} protocol: lags 1..{p['max_lag']}, {p['num_streams']} streams x {p['num_windows']} windows "
      f"of W={p['window']} ({steps} steps, never reset); recall bit accuracy by lag d (slots)"
    )
    lines.append(f"{'d':>4}{'bits':>9}" + "".join(f"{_label(m, p):>26}" for m in memories))
    for d in range(p["max_lag"]):
      row = [p[m]["accuracy_by_lag"][d] for m in memories]
      cells = "".join(f"{'-' if v is None else _num(v):>26}" for v in row)
      lines.append(f"{d + 1:>4}{p['learned']['scored_bits_by_lag'][d]:>9.0f}{cells}")
    lines.append(f"{'all':>4}{'':>9}" + "".join(f"{_num(p[m]['bit_accuracy']):>26}" for m in memories))
  lines.append("\nstate norms: largest |entry| over every step of a window and every stream")
  lines.append(f"{'protocol':<10}{'memory':<14}{'state':<9}{'first window':>14}{'last window':>13}{'max':>9}")
  for name, p in out["protocols"].items():
    for m in ("learned", "synapses_off"):
      for state in ("body", "synapse") if m in p else ():
        s = p[m]["norms"][f"max_{state}_summary"]
        lines.append(
          f"{name:<10}{m:<14}{state:<9}{_num(s['first_window']):>14}{_num(s['last_window']):>13}{_num(s['max']):>9}"
        )
  lines.append(
    f"(the bounded synapse update allows |synapse| <= {out['synapse_bound']:.3f}; bodies are gated tanh)"
  )
  return "\n".join(lines)


_STYLE = {
  "learned": ("o-", "C0"),
  "palimpsest": ("s--", "C1"),
  "hebbian_no_decay": ("^:", "C2"),
  "synapses_off": ("x-.", "C3"),
}


def _as_float(values) -> np.ndarray:
  return np.array([np.nan if v is None else v for v in values], np.float64)


def _plot_curve(ax, out: dict) -> None:
  train = out["protocols"]["train"]
  curve = out["protocols"].get("probe", train)
  lags = np.arange(1, curve["max_lag"] + 1)
  ax.axvspan(
    0.6, out["train_max_lag"] + 0.4, color="0.92", lw=0, label=f"trained lags (<= {out['train_max_lag']})"
  )
  lowest = 0.45
  for m in _present(curve):
    style, color = _STYLE[m]
    values = _as_float(curve[m]["accuracy_by_lag"])
    ax.plot(lags, values, style, color=color, ms=4, label=_label(m, curve))
    lowest = min(lowest, np.nanmin(values) - 0.03)
  if curve is not train:  # the learned rule on its own protocol, for the trained lags
    values = _as_float(train["learned"]["accuracy_by_lag"])
    ax.plot(
      lags[: len(values)], values, "o", mfc="none", color="C0", ms=7, label="learned, lags 1..Dmax asked"
    )
  ax.axhline(0.5, color="gray", lw=0.6, ls=":")
  ax.set(xlabel="lag d (slots back)", ylabel="recall bit accuracy", ylim=(lowest, 1.02))
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.set_title(
    f"forgetting curve (lags 1..{curve['max_lag']} asked, trained on 1..{train['max_lag']})", fontsize=9
  )
  ax.legend(fontsize=6.5, loc="lower left")


def _window_steps(p: dict) -> np.ndarray:
  return (np.arange(p["num_windows"]) + 1) * p["window"]


def _plot_time(ax, train: dict) -> None:
  for m in _present(train):
    style, color = _STYLE[m]
    values = _as_float(train[m]["accuracy_by_window"])
    ax.plot(_window_steps(train), values, style[1:] or "-", color=color, lw=1, label=_label(m, train))
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
  ax.axhline(out["synapse_bound"], color="C4", lw=0.8, ls="--", label="synapse bound")
  ax.set(xlabel="stream step (end of window)", ylabel="|state entry|", ylim=(0, None))
  ax.set_title("learned rule: state norms over the stream", fontsize=9)
  ax.legend(fontsize=6.5, loc="center right")


def plot(out: dict, path: str) -> None:
  """Three panels: the forgetting curve (probe protocol, or train if none), recall over stream time and
  the learned rule's state norms over stream time; a small PNG (64 colours)."""
  fig, (ax_d, ax_t, ax_n) = plt.subplots(1, 3, figsize=(13.0, 3.6), dpi=80)
  _plot_curve(ax_d, out)
  _plot_time(ax_t, out["protocols"]["train"])
  _plot_norms(ax_n, out)
  fig.tight_layout()
  figures.save_small_png(fig, path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  metrics_lib.quiet_library_logs()
  sizes = dict(QUICK if _QUICK.value else FULL)
  for flag, name in ((_NUM_STREAMS, "num_streams"), (_NUM_WINDOWS, "num_windows")):
    if flag.value < 0:
      sys.exit(f"error: --{name} must be >= 1 (0: the default)")
    sizes[name] = flag.value or sizes[name]
  if _PROBE_MAX_LAG.value < 1:
    sys.exit("error: --probe_max_lag must be >= 1")
  suffix = "-quick" if _QUICK.value else ""
  out_dir = _OUT_DIR.value or os.path.join("runs", f"streams{suffix}")
  try:
    run(_RULE.value, out_dir, sizes, _PROBE_MAX_LAG.value, _SYNAPSES_OFF.value, _FIGURE_DIR.value or None,
        f"streams{suffix}.png")  # fmt: skip
  except StreamsError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
