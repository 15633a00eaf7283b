r"""Capacity studies: recall against K, network type, size and difficulty, against baselines and theory.

  python -m experiments.capacity                  # every study of learned_rules/configs/capacity.py
  python -m experiments.capacity --quick          # every figure at reduced resolution (<= 30 min, 2 cores)
  python -m experiments.capacity --config=learned_rules/configs/capacity.py:tiny --workdir=/tmp/cap
  python -m experiments.capacity --config.studies=size,difficulty --figure_dir=docs/figures/capacity

Runs the studies of the config (`learned_rules/capacity_study.py`) in `--workdir` (default
runs/capacity, or runs/capacity-quick with `--quick`): meta-trains each learned rule a study needs in
`<workdir>/<rule>/` (resuming a run that was interrupted, skipping one that is done), trains the recurrent
baselines and tunes the online-backprop baseline, and evaluates everything on the same held-out episodes.
Every evaluated group of records is kept in `<workdir>/cache.json` as soon as it is done, so a study that
is stopped resumes where it was and a finished one re-plots in seconds. Writes:

- `<workdir>/capacity.json`: one record per study, network, rule, N, K and difficulty setting, with the
  bit accuracy, the perfect-recall fraction and, for a memory evaluated on the held-out episodes of
  several K at once, `bit_accuracy_by_position`: the recall of the pairs stored first, second, ... (the
  oldest first);
- figures, in `--figure_dir` (default the workdir): `recall_vs_k.png` (networks), `auto_recall_vs_k.png`,
  `capacity_vs_n.png` and `recall_by_age.png` (size: each memory's recall by stored position, at the
  first K where the first learned rule falls below 0.95), `difficulty.png`, each when its study ran;

and prints a table of capacities with the K at which each memory beats the key-blind floor.

Exit status: 0 done; 2 a bad config or flag (refused before anything is written), or a workdir or
checkpoint a rule cannot use; 1 a rule's meta-training stopped on too many non-finite steps in a row; 143
stopped by SIGTERM (rerun the same command to resume). Each failure prints one `error:` (or `stopped:`)
line. See docs/RELIABILITY.md.
"""

from __future__ import annotations

import os
import time

from absl import flags

from experiments import harness
from learned_rules import capacity_figures, capacity_plan, capacity_study, files


def default_workdir(cfg, quick: bool = False) -> str:
  del cfg  # one study folder, whatever the config
  return os.path.join("runs", "capacity-quick" if quick else "capacity")


def write_records(workdir: str, cfg, plan: capacity_plan.Plan, records: list[dict]) -> str:
  """Writes `<workdir>/capacity.json` (the studies, the config and the records); returns its path."""
  path = files.join(workdir, "capacity.json")
  files.write_json(path, {"studies": list(plan.studies), "config": cfg.to_dict(), "records": records})
  return path


def main(cfg, workdir: str, opts) -> list[dict]:
  start = time.perf_counter()
  plan = capacity_plan.read_plan(cfg)  # every check, before anything is written
  records = capacity_study.run(plan, workdir)
  path = write_records(workdir, cfg, plan, records)
  folder = harness.figure_dir(workdir, opts.figure_dir)
  drawn = capacity_figures.plot_all(records, folder, plan.train_neurons, plan.train_k)
  print(capacity_study.format_table(records))
  print(
    f"wall time {time.perf_counter() - start:.0f} s; records in {path}, "
    f"figures in {folder}: {', '.join(drawn) or 'none'}"
  )
  return records


if __name__ == "__main__":
  harness.run(
    main,
    config="capacity",
    workdir=default_workdir,
    workdir_help="Study folder (rules, recurrent baselines, cache.json, capacity.json). Default: "
    "runs/capacity, or runs/capacity-quick with --quick.",
    options={
      "figure_dir": (flags.DEFINE_string, None, "Where to draw the PNGs (default: the workdir)."),
    },
  )
