r"""Recall against K for every network type and baseline of a capacity study, as JSON and a figure.

  python -m experiments.capacity --config=experiments/configs/capacity.py --quick
  python -m experiments.capacity --config=experiments/configs/capacity.py:tiny --workdir=/tmp/cap

For each network of the study it meta-trains the learned rule in `<workdir>/<network>/` (resuming a
run that was interrupted, skipping one that is done), evaluates it at every K, and evaluates the
baselines on the very same held-out episodes. Writes `<workdir>/capacity.json` (one record per
network, rule, N, K) and `<workdir>/recall_vs_k.png`.
"""

from __future__ import annotations

import json
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments.configs import capacity as capacity_configs  # noqa: E402
from learned_rules import baselines, checkpointing, meta_train  # noqa: E402
from learned_rules import config as config_lib  # noqa: E402
from learned_rules import evaluate as evaluate_lib  # noqa: E402
from learned_rules import metrics as metrics_lib  # noqa: E402


def _flag(define, name: str, *args, **kwargs) -> flags.FlagHolder:
  """Defines flag `name`, or reuses it when another experiment module imported into the same process
  (the test suite) defined it first; only one `main` runs per process, so they never disagree."""
  if name in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS[name])
  return define(name, *args, **kwargs)


_CONFIG = _flag(config_flags.DEFINE_config_file, "config", "experiments/configs/capacity.py", "Study config.")
_WORKDIR = _flag(flags.DEFINE_string, "workdir", "", "Study folder (default runs/capacity-<study>).")
_QUICK = _flag(flags.DEFINE_bool, "quick", False, "Reduced resolution: the config's `quick` variant on top.")


def network_config(study, name: str) -> ml_collections.ConfigDict:
  """The `remember` config of one network of the study: `study.base` with the network's overrides."""
  if name not in capacity_configs.NETWORKS:
    raise config_lib.ConfigError(
      "networks", f"unknown network {name!r}; one of {list(capacity_configs.NETWORKS)}"
    )
  cfg = ml_collections.ConfigDict(study.base.to_dict())
  for field, value in capacity_configs.NETWORKS[name].items():
    group, key = field.split(".")
    cfg[group][key] = value
  cfg.eval.k_values = tuple(study.k_values)
  cfg.eval.num_episodes = study.num_episodes
  return cfg


def _names(text: str) -> list[str]:
  return [n for n in (s.strip() for s in text.split(",")) if n]


def validate(study) -> list[ml_collections.ConfigDict]:
  """The networks' configs, all validated before anything runs."""
  for name in _names(study.baselines):
    if name not in baselines.BASELINES:
      raise config_lib.ConfigError("baselines", f"unknown baseline {name!r}; one of {baselines.BASELINES}")
  if not study.k_values or any(int(k) < 1 for k in study.k_values):
    raise config_lib.ConfigError("k_values", "needs at least one K, each >= 1")
  cfgs = [network_config(study, name) for name in _names(study.networks)]
  for cfg in cfgs:
    config_lib.validate(cfg)
  return cfgs


def run(study, workdir: str) -> list[dict]:
  start = time.perf_counter()
  cfgs = validate(study)
  os.makedirs(workdir, exist_ok=True)
  records = []
  for name, cfg in zip(_names(study.networks), cfgs, strict=True):
    run_dir = os.path.join(workdir, name)
    meta_train.train_and_evaluate(cfg, run_dir, label=f"{name}: ")
    _, topo, state = meta_train.load_run(run_dir)
    key = evaluate_lib.eval_key(cfg.seed)
    per_k = evaluate_lib.recall_vs_k(state.theta, topo, cfg, cfg.eval.k_values, cfg.eval.num_episodes, key)
    common = {
      "network": name,
      "N": topo.num_neurons,
      "synapses": topo.num_synapses,
      "key_bits": topo.n_in,
      "protocol": cfg.task.protocol,
    }
    records += [{**common, "rule": "learned", **r} for r in per_k]
    for baseline in _names(study.baselines):
      for k in cfg.eval.k_values:
        problem = evaluate_lib.problem_from_config(cfg, topo, num_snippets=int(k))
        metrics = baselines.evaluate(baseline, problem.task, key, cfg.eval.num_episodes)
        records.append({**common, "rule": baseline, "K": int(k), **metrics})
    print(f"{name}: done ({time.perf_counter() - start:.0f} s so far)", flush=True)
  with open(os.path.join(workdir, "capacity.json"), "w") as f:
    json.dump({"study": study.study, "records": records}, f, indent=2)
  plot(records, os.path.join(workdir, "recall_vs_k.png"))
  print(format_table(records))
  print(f"wall time {time.perf_counter() - start:.0f} s; results in {workdir}/capacity.json")
  return records


def format_table(records: list[dict]) -> str:
  lines = [f"{'network':<18}{'rule':<16}{'K@0.99':>8}{'K@0.95':>8}"]
  for network, rule in dict.fromkeys((r["network"], r["rule"]) for r in records):
    rows = [r for r in records if r["network"] == network and r["rule"] == rule]
    lines.append(
      f"{network:<18}{rule:<16}{evaluate_lib.capacity(rows, 0.99):>8}{evaluate_lib.capacity(rows, 0.95):>8}"
    )
  return "\n".join(lines)


def plot(records: list[dict], path: str) -> None:
  fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
  for network, rule in dict.fromkeys((r["network"], r["rule"]) for r in records):
    if rule != "learned" and network != records[0]["network"]:
      continue  # a baseline's curve depends only on the task, which all networks share
    rows = [r for r in records if r["network"] == network and r["rule"] == rule]
    label = network if rule == "learned" else rule
    ax.plot(
      [r["K"] for r in rows],
      [r["bit_accuracy"] for r in rows],
      "o-" if rule == "learned" else "s--",
      label=label,
    )
  ax.axhline(0.5, color="gray", lw=0.8, ls=":")
  # Theory for a memory of n-bit keys: Hebbian about 0.14 n (Hopfield, full cue), Cover/Gardner 2 n.
  n = records[0]["key_bits"]
  for k, text in ((0.14 * n, "0.14 n Hebbian"), (2 * n, "2 n Cover/Gardner")):
    if k <= max(r["K"] for r in records):
      ax.axvline(k, color="gray", lw=0.8, ls="--")
      ax.text(k, 0.52, f" {text}", fontsize=7, color="gray", rotation=90, va="bottom")
  ax.set_xlabel("K, snippets stored per episode")
  ax.set_ylabel("held-out recall bit accuracy")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  metrics_lib.quiet_library_logs()
  study = _CONFIG.value
  if _QUICK.value:
    capacity_configs.apply_variant(study, "quick")
  workdir = _WORKDIR.value or os.path.join("runs", f"capacity-{study.study}")
  try:
    run(study, workdir)
  except (config_lib.ConfigError, checkpointing.IncompatibleCheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
