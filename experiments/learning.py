r"""Learning from remembering (docs/DESIGN.md): a rule meta-trained to remember, shown pairs `(x, f(x))`
of a teacher fixed per episode; recall on stored keys and prediction on unseen keys, against K.

  python -m experiments.learning                  # runs/learning/ (results.json, learning.png)
  python -m experiments.learning --figure_dir=docs/figures/learning   # the docs' figure
  python -m experiments.learning --quick          # runs/learning-quick/, minutes
  python -m experiments.learning --config=learned_rules/configs/learning.py:tiny --workdir=/tmp/learning

learned_rules/configs/learning.py holds the study (rule, teachers, K, episodes, baselines, step sizes);
`learned_rules.learning_study` runs it. For each teacher it tunes the online-SGD baseline's step size
per K on separate episodes, evaluates the rule and every baseline on the same held-out episodes, and
this command writes `<workdir>/results.json` (one record per teacher, method and K; the step-size
table; the linear ceiling; timings), prints the table, and draws `learning.png` (recall and
generalisation against K, one row per teacher) into `--figure_dir` (default: the workdir).
`--plot_only` redraws the figure and the table from the workdir's results.json.

Exit status: 0 done; 2 a bad config or rule (refused before any evaluation); see experiments/harness.py.
"""

from __future__ import annotations

import os

from absl import flags

from experiments import harness
from learned_rules import files, learning_figures, learning_study


def default_workdir(cfg, quick: bool = False) -> str:
  del cfg
  return os.path.join("runs", "learning-quick" if quick else "learning")


def read_results(workdir: str) -> dict:
  """The `results.json` a run of this command left in `workdir` (for `--plot_only`)."""
  path = files.join(workdir, "results.json")
  if not files.exists(path):
    raise harness.UsageError(f"--plot_only: no {path}; run the study first")
  return files.read_json(path)


def main(cfg, workdir: str, opts) -> dict:
  """The study of `cfg` (or, with `--plot_only`, the one in `workdir`): its table, JSON and figure."""
  if opts.plot_only:
    result = read_results(workdir)
  else:
    result = learning_study.run(cfg)
    files.write_json(files.join(workdir, "results.json"), result)
  print(learning_study.format_table(result))
  figure = files.join(harness.figure_dir(workdir, opts.figure_dir), "learning.png")
  learning_figures.plot(result, figure)
  if opts.plot_only:
    print(f"drew {figure} from {workdir}/results.json")
  else:
    took = f"{result['wall_s']:.0f} s wall, {result['cpu_s']:.0f} s CPU"
    print(f"wrote {workdir}/results.json and {figure} ({took})")
  return result


if __name__ == "__main__":
  harness.run(
    main,
    config="learning",
    workdir=default_workdir,
    workdir_help="Output folder (results.json; learning.png unless --figure_dir). Default: runs/learning, "
    "or runs/learning-quick with --quick.",
    options={
      "figure_dir": (flags.DEFINE_string, None, "Where to draw learning.png (default: the workdir)."),
      "plot_only": (flags.DEFINE_bool, False, "Only redraw the figure and the table from results.json."),
    },
  )
