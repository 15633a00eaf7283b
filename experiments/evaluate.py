r"""Recall against K of a trained run, and its capacity points.

  python -m experiments.evaluate --workdir=runs/remember-hetero-full-K8-seed0
  python -m experiments.evaluate --workdir=DIR --k_values=1,4,8,16 --num_episodes=256
  python -m experiments.evaluate --workdir=DIR --figure_dir=docs/figures/hetero_full  # the docs' figures

Restores the latest checkpoint of the run in `--workdir` and the config saved with it, evaluates
held-out episodes at every K (all K snippets queried) beside the key-blind floor on the same episodes
(`learned_rules.recall_study`), and writes `DIR/recall_vs_k.json` (records plus the capacity at bit
accuracy 0.99 and 0.95; each record with `bit_accuracy_by_position`, the recall of the pairs stored
first, second, ...), and into `--figure_dir` (default: DIR) `recall_vs_k.png` and
`training_curve.png` (meta-training loss and recall of the run and of its synapses-off twin, read from
their metrics.jsonl; the same figure `experiments.remember` draws).

Exit status: 0 done; 2 no checkpoint in DIR, a damaged or unreadable one, or a streaming run (refused
before anything is written); see experiments/harness.py.
"""

from __future__ import annotations

from absl import flags

from experiments import harness
from learned_rules import experiment, files, recall_study


def k_values(values: list[str] | None) -> list[int] | None:
  """`--k_values` as whole numbers >= 1 (None: the run's own)."""
  try:
    ks = None if values is None else [int(k) for k in values]
  except ValueError as e:
    raise harness.UsageError(f"--k_values: {e}") from e
  if ks is not None and (not ks or min(ks) < 1):
    raise harness.UsageError("--k_values: needs K values >= 1")
  return ks


def main(cfg, workdir: str, opts) -> dict:
  del cfg  # the run's own, saved with its checkpoints
  if opts.num_episodes is not None and opts.num_episodes < 1:
    raise harness.UsageError("--num_episodes must be >= 1")
  try:
    run = recall_study.evaluate_run(workdir, k_values(opts.k_values), opts.num_episodes)
  except FileNotFoundError as e:
    raise harness.UsageError(str(e)) from e
  json_path = files.join(workdir, "recall_vs_k.json")
  files.write_json(json_path, run.result)
  figure_dir = harness.figure_dir(workdir, opts.figure_dir)
  png_path = files.join(figure_dir, "recall_vs_k.png")
  recall_study.plot(run.result, png_path, run.title)
  curve_path = files.join(figure_dir, experiment.CURVE)
  if experiment.draw_training_curve(workdir, curve_path):
    print(f"wrote {curve_path}")
  print(recall_study.format_table(run.result))
  print(f"wrote {json_path}, {png_path}")
  return run.result


if __name__ == "__main__":
  harness.run(
    main,
    workdir_help="Run directory written by experiments.remember (required): read, and written into.",
    options={
      "k_values": (flags.DEFINE_list, None, "K values to evaluate (default: the config's)."),
      "num_episodes": (flags.DEFINE_integer, None, "Held-out episodes per K (default: the config's)."),
      "figure_dir": (flags.DEFINE_string, None, "Where to write the PNGs (default: the workdir)."),
    },
  )
