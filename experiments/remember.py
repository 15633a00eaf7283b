r"""Meta-train update rules to remember snippets, then report held-out recall.

  python -m experiments.remember                      # default config, about 5 minutes on 2 CPU cores
  python -m experiments.remember --config=learned_rules/configs/remember.py:tiny --workdir=/tmp/tiny
  python -m experiments.remember --config.task.num_snippets=12 --config.train.num_steps=800

Trains the learned rule in `--workdir` and, unless `--config.baseline_synapses_off=False`, the same
network with synapse updates off in `<workdir>/synapses_off` (its own run, same budget). Rerunning with
the same workdir resumes both. Ends with a table of held-out recall bit accuracy, beside the key-blind
floor (the best answer that ignores the cue, on the same episodes) and chance, and writes
`<workdir>/summary.json`. The `routing` variant (`net.trained_synapses`) trains a network with synapse
updates off whose fixed per-synapse weights are meta-trained, and no twin.

Exit status: 0 done; 2 a bad config, workdir or checkpoint (refused before training) or a save that failed
for a full disk (the last checkpoint intact); 1 too many non-finite meta steps in a row (the last
checkpoint intact); 143 stopped by SIGTERM after saving a checkpoint (rerun the same command to resume).
Each failure prints one `error:` (or `stopped:`) line. See docs/RELIABILITY.md.
"""

from __future__ import annotations

import copy
import json
import os
import time

import jax

from experiments import harness
from learned_rules import baselines, meta_train, network
from learned_rules import config as config_lib


def default_workdir(cfg, quick: bool = False) -> str:
  t = cfg.task
  size = f"lag{t.max_lag}" if t.protocol == "streaming" else f"K{t.num_snippets}"
  return os.path.join("runs", f"remember-{t.protocol}-{cfg.net.topology}-{size}-seed{cfg.seed}")


def chance_bit_accuracy() -> float:
  """Targets are uniform +-1 bits, so any fixed guess is right half the time."""
  return 0.5


def synapses_off_config(cfg):
  off = copy.deepcopy(cfg)
  with off.unlocked():
    off.net.synapse_updates = False
  return off


def run_name(cfg) -> str:
  """What the run of `cfg` trains: a learned rule, or (`net.trained_synapses`) fixed trained weights."""
  return "trained synapses, updates off" if config_lib.trained_synapses(cfg) else "learned rule"


def task_label(cfg) -> str:
  t = cfg.task
  if t.protocol == "streaming":
    return f"streaming, recall of the snippet 1..{t.max_lag} slots back"
  return f"{t.protocol}, K = {t.num_snippets} snippets per episode"


def format_table(rows: list[tuple[str, float]], label: str) -> str:
  lines = [f"Held-out recall ({label})", f"{'rule':<36}{'bit accuracy':>14}"]
  lines += [f"{name:<36}{value:>14.3f}" for name, value in rows]
  return "\n".join(lines)


def run(cfg, workdir: str) -> dict:
  """Both runs and the summary; returns the summary dict (also written to summary.json)."""
  start = time.perf_counter()
  # Fail before any compilation, and before anything is written, on an invalid config.
  config_lib.validate(cfg)
  name = run_name(cfg)
  learned = meta_train.train_and_evaluate(cfg, workdir, label=f"{name}: ")
  summary = {
    "bit_accuracy": learned["bit_accuracy"],
    "perfect_recall": learned["perfect_recall"],
    "chance_bit_accuracy": chance_bit_accuracy(),
    "num_snippets": cfg.task.num_snippets,
    "protocol": cfg.task.protocol,
    "topology": cfg.net.topology,
    "meta_steps": learned["meta_steps"],
  }
  rows = [(name, learned["bit_accuracy"])]
  if cfg.baseline_synapses_off and cfg.net.synapse_updates:
    off = meta_train.train_and_evaluate(
      synapses_off_config(cfg), os.path.join(workdir, "synapses_off"), label="synapses off: "
    )
    summary["bit_accuracy_synapses_off"] = off["bit_accuracy"]
    rows.append(("same network, synapse updates off", off["bit_accuracy"]))
  floor = baselines.key_blind_floor(cfg, network.make_topology(cfg.net))
  summary["key_blind_bit_accuracy"] = floor  # the best answer that ignores the cue, same held-out episodes
  rows.append(("key-blind floor (ignores the cue)", floor))
  rows.append(("chance", chance_bit_accuracy()))
  summary["wall_seconds"] = time.perf_counter() - start
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
    print(format_table(rows, task_label(cfg)))
    print(f"wall time {summary['wall_seconds']:.0f} s; summary in {workdir}/summary.json")
  return summary


def main(cfg, workdir: str, opts=None) -> dict:
  del opts  # no flags of its own
  return run(cfg, workdir)


def run_or_exit(cfg, workdir: str) -> dict:
  """`run`, with every failure a user can act on one line on stderr and the exit status of
  `experiments.harness` (no traceback)."""
  return harness.call(main, cfg, workdir, None)


if __name__ == "__main__":
  harness.run(
    main,
    config="remember",
    workdir=default_workdir,
    workdir_help="Run directory (checkpoints, metrics.jsonl, summary.json). Default: "
    "runs/remember-<protocol>-<topology>-K<K>-seed<seed> (lag<max_lag> for streaming).",
    distributed=True,
  )
