r"""Meta-train update rules to remember snippets, then report held-out recall.

  python -m experiments.remember                      # default config, about 2 minutes on 2 CPU cores
  python -m experiments.remember --config=learned_rules/configs/remember.py:tiny --workdir=/tmp/tiny
  python -m experiments.remember --config.task.num_snippets=12 --config.train.num_steps=800

Trains the learned rule in `--workdir` and, unless `--config.baseline_synapses_off=False`, the same
network with synapse updates off in `<workdir>/synapses_off` (its own run, same budget). Rerunning with
the same workdir resumes both. Ends with a table of held-out recall bit accuracy, beside the key-blind
floor (the best answer that ignores the cue, on the same episodes) and chance, and writes
`<workdir>/summary.json` and `<workdir>/training_curve.png` (loss and recall against meta step).
While it trains, `tensorboard --logdir=<workdir>` shows loss, recall, gradient norm, steps per second
and the non-finite count (event files in the workdir and in `synapses_off/`, written by process 0).
The workdir may be any path `etils.epath` understands: a local folder, or `gs://bucket/...` (with
the `gcs` extra). The `routing` variant (`net.trained_synapses`) trains a network with synapse
updates off whose fixed per-synapse weights are meta-trained, and no twin.

Exit status: 0 done; 2 a bad config, workdir or checkpoint (refused before training) or a save that failed
for a full disk (the last checkpoint intact); 1 too many non-finite meta steps in a row (the last
checkpoint intact); 143 stopped by SIGTERM after saving a checkpoint (rerun the same command to resume).
Each failure prints one `error:` (or `stopped:`) line. See docs/RELIABILITY.md.
"""

from __future__ import annotations

import os

import jax

from experiments import harness
from learned_rules import experiment


def default_workdir(cfg, quick: bool = False) -> str:
  del quick  # no quick variant
  t = cfg.task
  size = f"lag{t.max_lag}" if t.protocol == "streaming" else f"K{t.num_snippets}"
  return os.path.join("runs", f"remember-{t.protocol}-{cfg.net.topology}-{size}-seed{cfg.seed}")


def main(cfg, workdir: str, opts=None) -> dict:
  del opts  # no flags of its own
  summary, table = experiment.run_experiment(cfg, workdir)
  if jax.process_index() == 0:
    print(table)
    print(f"wall time {summary['wall_seconds']:.0f} s; summary in {workdir}/summary.json")
  return summary


def run_or_exit(cfg, workdir: str) -> dict:
  """`main`, with every failure a user can act on one line on stderr and the exit status of
  `experiments.harness` (no traceback)."""
  return harness.call(main, cfg, workdir, None)


def cli() -> None:
  """The command line: flags, config and exit statuses (experiments/harness.py)."""
  harness.run(
    main,
    config="remember",
    workdir=default_workdir,
    workdir_help="Run directory (checkpoints, metrics.jsonl, summary.json). Default: "
    "runs/remember-<protocol>-<topology>-K<K>-seed<seed> (lag<max_lag> for streaming).",
    distributed=True,
  )


if __name__ == "__main__":
  cli()
