r"""A learned rule inside another model: associative recall over token sequences.

  python -m experiments.token_recall                                   # the shipped `hetero` rule
  python -m experiments.token_recall --quick --figure_dir=docs/figures/token_recall
  python -m experiments.token_recall --config=learned_rules/configs/token_recall.py:tiny --workdir=/tmp/tr

The task (`learned_rules.token_task`): L (key token, value token) pairs, keys distinct within a sequence,
then one of the L keys as a query; the target is its value token. The rule was meta-trained on random +-1
patterns shown for two steps each, never on tokens. Two kinds of host (`learned_rules.host_models`), each
with the same learned token encoders and decoder, trained with Adam on cross-entropy for the same steps
on the very same batches (`learned_rules.host_study`):

- `plastic`: a frozen `PlasticMemory.from_rule(rule)` writes the L coded pairs and reads the coded query;
  the decoder reads the recalled code. The rule sits outside `params`; the run checks it is unchanged.
- `lstm<H>`: an LSTM reads the L codes, then the query; `lstm.hidden_sizes` 0 is the smallest H with at
  least as many parameters as the plastic host and its rule together. `lstm<H>x<m>` is the same host
  trained for m times the steps (`lstm.step_multiples`): an LSTM step costs a fraction of a plastic one.

Accuracy (argmax value token = target) is measured on held-out sequences at each L of
`task.eval_lengths`. Writes `<workdir>/token_recall.json` (config, parameter counts, training wall
times, per-host per-L accuracy) and `<workdir>/accuracy_vs_length.png`, also into `--figure_dir` if
named. Exit status: 0 done; 2 a bad config or rule (one `error:` line, before anything is written).
"""

from __future__ import annotations

import os
import time

from absl import flags

from experiments import harness
from learned_rules import files, host_plan, host_study

FIGURE = "accuracy_vs_length.png"
RESULTS = "token_recall.json"


def default_workdir(cfg, quick: bool = False) -> str:
  del cfg
  return os.path.join("runs", "token_recall-quick" if quick else "token_recall")


def main(cfg, workdir: str, opts) -> dict:
  """Runs the study of `cfg`; writes the results JSON under `workdir` and the figure under
  `opts.figure_dir` (or `workdir`); returns the results."""
  study = host_plan.study(cfg)  # a ConfigError names the field before anything runs
  start = time.perf_counter()

  def log(text: str) -> None:
    print(f"[{time.perf_counter() - start:6.0f} s] {text}", flush=True)

  out = {"config": cfg.to_dict(), **host_study.run_study(study, log)}
  files.write_json(files.join(workdir, RESULTS), out)
  # The figure always goes beside the results; a named --figure_dir (docs/figures/...) gets a copy.
  folders = dict.fromkeys([workdir, harness.figure_dir(workdir, opts.figure_dir)])
  figures = [files.join(folder, FIGURE) for folder in folders]
  for path in figures:
    host_study.plot(out, path)
  print(host_study.format_table(out))
  log(f"done in {out['wall_seconds']:.0f} s; results in {workdir}/{RESULTS}, figures {figures}")
  return out


if __name__ == "__main__":
  harness.run(
    main,
    config="token_recall",
    workdir=default_workdir,
    workdir_help="Output folder. Default: runs/token_recall (runs/token_recall-quick with --quick).",
    options={
      "figure_dir": (
        flags.DEFINE_string,
        None,
        "Also draw the PNG here (e.g. docs/figures/token_recall); by default only into the workdir.",
      ),
    },
  )
