r"""Recall against K of a trained run, and its capacity points.

  python -m experiments.evaluate --workdir=runs/remember-hetero-full-K8-seed0
  python -m experiments.evaluate --workdir=DIR --k_values=1,4,8,16 --num_episodes=256
  python -m experiments.evaluate --workdir=DIR --figure_dir=docs/figures/hetero_full  # the docs' figures

Restores the latest checkpoint and the config saved with it, evaluates held-out episodes at every K
(all K snippets queried), and writes `DIR/recall_vs_k.json` (records plus the capacity at bit accuracy
0.99 and 0.95), `DIR/recall_vs_k.png`, and `DIR/training_curve.png` (meta-training recall of the run
and of its synapses-off twin, read from their metrics.jsonl).
"""

from __future__ import annotations

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments import flagutil  # noqa: E402
from learned_rules import baselines, checkpointing, meta_train  # noqa: E402
from learned_rules import config as config_lib  # noqa: E402
from learned_rules import evaluation as evaluate_lib  # noqa: E402
from learned_rules import metrics as metrics_lib  # noqa: E402

_WORKDIR = flagutil.define(
  flags.DEFINE_string, "workdir", None, "Run directory written by experiments.remember.", required=True
)
_K_VALUES = flagutil.define(
  flags.DEFINE_list, "k_values", None, "K values to evaluate (default: the config's)."
)
_NUM_EPISODES = flagutil.define(flags.DEFINE_integer, "num_episodes", None, "Held-out episodes per K.")
_FIGURE_DIR = flagutil.define(
  flags.DEFINE_string, "figure_dir", None, "Where to write the PNGs (default: the workdir)."
)


def plot(records: list[dict], caps: dict, path: str, title: str) -> None:
  ks = [r["K"] for r in records]
  fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
  ax.plot(ks, [r["bit_accuracy"] for r in records], "o-", label="bit accuracy")
  ax.plot(ks, [r["perfect_recall"] for r in records], "s--", label="perfect recall")
  floor = [r["key_blind_bit_accuracy"] for r in records]
  ax.plot(ks, floor, color="black", ls="-.", lw=1.2, label="key-blind floor (bit accuracy)")
  for level, style in ((0.99, ":"), (0.95, "-.")):
    ax.axhline(level, color="gray", ls=style, lw=0.8)
    ax.text(ks[-1], level, f"{level}: K={caps[str(level)]}", ha="right", va="bottom", fontsize=8)
  ax.axhline(0.5, color="k", lw=0.5)
  ax.set(xlabel="snippets per episode K", ylabel="held-out recall", ylim=(0, 1.02), title=title)
  ax.legend(loc="lower left", fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def plot_training(workdir: str, path: str) -> bool:
  """Meta-training bit accuracy against meta step, with the synapses-off run where there is one."""
  runs = [("learned rule", workdir), ("synapses off", os.path.join(workdir, "synapses_off"))]
  fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
  plotted = False
  for name, run_dir in runs:
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(metrics_path):
      continue
    records = [r for r in metrics_lib.read_metrics(metrics_path) if "bit_accuracy" in r]
    ax.plot([r["step"] for r in records], [r["bit_accuracy"] for r in records], label=name)
    plotted = True
  ax.axhline(0.5, color="k", lw=0.5)
  ax.set(xlabel="meta step", ylabel="training recall bit accuracy", ylim=(0.4, 1.02))
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  if plotted:
    fig.savefig(path)
  plt.close(fig)
  return plotted


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  metrics_lib.quiet_library_logs()
  try:
    cfg, topo, state = meta_train.load_run(_WORKDIR.value)
  except (
    FileNotFoundError,
    checkpointing.IncompatibleCheckpointError,
    checkpointing.DamagedCheckpointError,
  ) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except config_lib.ConfigError as e:
    print(f"error: {e} (the run's saved config; was it written by an older version?)", file=sys.stderr)
    sys.exit(2)
  if cfg.task.protocol == "streaming":
    print("error: recall against K applies to the hetero and auto protocols", file=sys.stderr)
    sys.exit(2)
  k_values = [int(k) for k in (_K_VALUES.value or cfg.eval.k_values)]
  episodes = _NUM_EPISODES.value or cfg.eval.num_episodes
  step = int(state.step)
  key = evaluate_lib.eval_key(cfg.seed)
  records = evaluate_lib.recall_vs_k(state.theta, topo, cfg, k_values, episodes, key)
  # The best answer that ignores the cue, on the same episodes at every K.
  specs = tuple(evaluate_lib.problem_from_config(cfg, topo, num_snippets=k).task for k in k_values)
  floors = baselines.evaluate_over_k(baselines.READOUT_FNS["key_blind"], None, specs, key, episodes)
  for r, floor in zip(records, floors, strict=True):
    r["key_blind_bit_accuracy"] = floor["bit_accuracy"]
  caps = {str(level): evaluate_lib.capacity(records, level) for level in (0.99, 0.95)}
  result = {
    "workdir": _WORKDIR.value,
    "meta_step": step,
    "protocol": cfg.task.protocol,
    "topology": cfg.net.topology,
    "num_episodes": episodes,
    "capacity": caps,
    "records": records,
  }
  json_path = os.path.join(_WORKDIR.value, "recall_vs_k.json")
  with open(json_path, "w") as f:
    json.dump(result, f, indent=2)
  figure_dir = _FIGURE_DIR.value or _WORKDIR.value
  os.makedirs(figure_dir, exist_ok=True)
  png_path = os.path.join(figure_dir, "recall_vs_k.png")
  plot(records, caps, png_path, f"{cfg.task.protocol}, {cfg.net.topology}, N={topo.num_neurons}")
  curve_path = os.path.join(figure_dir, "training_curve.png")
  if plot_training(_WORKDIR.value, curve_path):
    print(f"wrote {curve_path}")
  for r in records:
    print(
      f"K={r['K']:>3}  bit accuracy {r['bit_accuracy']:.3f}  perfect {r['perfect_recall']:.3f}  "
      f"key-blind floor {r['key_blind_bit_accuracy']:.3f}"
    )
  print(f"capacity: K={caps['0.99']} at 0.99, K={caps['0.95']} at 0.95; wrote {json_path}, {png_path}")


if __name__ == "__main__":
  app.run(main)
