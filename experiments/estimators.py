r"""Meta-training estimators compared: truncated windows, full back-propagation, evolution strategies.

  python -m experiments.estimators                 # runs/estimators, 3 seeds, the default network
  python -m experiments.estimators --quick         # runs/estimators-quick, 2 seeds, a smaller network
  python -m experiments.estimators --config=learned_rules/configs/estimators.py:tiny --workdir=/tmp/est
  python -m experiments.estimators --quick --figure_dir=docs/figures/estimators   # the committed figure

Every estimator of the config (learned_rules/configs/estimators.py) meta-trains the same network for
each seed on the one training loop (learned_rules/estimator_study.py): its own run directory
`<workdir>/<estimator>/seed<s>` with checkpoints, so a stopped study resumes where it stopped. Held-out
recall (bit accuracy on the same fresh streams of `horizon` steps for all) is measured at evenly spaced
meta steps; the clocks run only around training steps (compilation is reported on its own, evaluation
is not counted). Wall time and the process's CPU time (less disturbed by other jobs) are both recorded.

Writes `<workdir>/results.json`, prints a table (final recall per estimator, and the time each first
reaches the final mean recall of `full`), and draws `estimators.png` into the workdir (or
`--figure_dir`): recall against meta steps, training wall time and CPU time, seed means with min-max
bands. Exit statuses as every command's (experiments/harness.py).
"""

from __future__ import annotations

import os

from absl import flags

from experiments import harness
from learned_rules import estimator_study, files


def default_workdir(cfg, quick: bool) -> str:
  del cfg
  return os.path.join("runs", "estimators-quick" if quick else "estimators")


def main(study, workdir: str, opts) -> dict:
  out = estimator_study.run_study(study, workdir)
  estimator_study.plot(
    out["results"], files.join(harness.figure_dir(workdir, opts.figure_dir), "estimators.png")
  )
  print(estimator_study.table(out["summary"]))
  print(f"results in {workdir}/results.json")
  return out


if __name__ == "__main__":
  harness.run(
    main,
    config="estimators",
    workdir=default_workdir,
    workdir_help="Study folder: a run directory per estimator and seed, results.json, the figure. "
    "Default runs/estimators (runs/estimators-quick with --quick).",
    options={
      "figure_dir": (flags.DEFINE_string, None, "Where to draw estimators.png (default: the workdir).")
    },
  )
