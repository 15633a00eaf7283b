r"""Save a meta-trained rule as a few-KB file that `learned_rules.load_rule` reads.

  python -m experiments.export_rule --workdir=DIR --name=mine                    # DIR/exported/mine.json
  python -m experiments.export_rule --workdir=DIR --name=mine --out_dir=/tmp/rules  # /tmp/rules/mine.json
  python -m experiments.export_rule --workdir=runs/remember-hetero-full-K8-seed0 --name=hetero \
      --out_dir=learned_rules/pretrained                                         # ship it with the package

Restores the latest checkpoint of the run in `--workdir`, measures its held-out recall against K (the
run's `eval.k_values` and `eval.num_episodes`), and writes `<out_dir>/<name>.msgpack` (theta) and
`<out_dir>/<name>.json` (config, meta steps, recall, and the commands that made it)
(`learned_rules.rule_export`). With `--sizes_from=<capacity.json>` (a capacity study whose
`size.rules` listed this rule), its recall against K at every size N goes into the file too.
`--out_dir` defaults to `<workdir>/exported/`; `load_rule` reads a rule there by its path. Shipping a
rule means `--out_dir=learned_rules/pretrained`, the package's own folder, whose rules `load_rule(name)`
finds by name.

Exit status: 0 done; 2 a bad --name, no rule in the workdir, or a `net.trained_synapses` run (fixed
trained weights, no learned rule: refused); see experiments/harness.py.
"""

from __future__ import annotations

import json
import os

from absl import flags

from experiments import harness
from learned_rules import evaluation, pretrained, rule_export


def main(cfg, workdir: str, opts) -> rule_export.Export:
  del cfg  # the run's own, saved with its checkpoints
  name = opts.name
  if not name:
    raise harness.UsageError("--name: required (letters, digits, - and _)")
  if not name.replace("-", "").replace("_", "").isalnum():
    raise harness.UsageError(f"--name: {name!r} is not a name of letters, digits, - and _")
  try:
    rule = pretrained.load_rule(workdir)
  except FileNotFoundError as e:
    raise harness.UsageError(str(e)) from e
  command = f"python -m experiments.export_rule --workdir={workdir} --name={name}"
  out_dir = opts.out_dir or os.path.join(workdir, "exported")
  by_size = None
  if opts.sizes_from:
    try:
      with open(opts.sizes_from) as f:
        study = json.load(f)
      by_size = rule_export.size_records(study, opts.size_rule or name, pretrained.theta_digest(rule.theta))
    except (OSError, ValueError) as e:
      raise harness.UsageError(f"--sizes_from: {opts.sizes_from}: {e}") from e
    command += f" --sizes_from={opts.sizes_from}" + (
      f" --size_rule={opts.size_rule}" if opts.size_rule else ""
    )
  exported = rule_export.export_rule(
    rule,
    os.path.join(out_dir, name),
    trained_by=opts.trained_by,
    exported_by=command + (f" --out_dir={opts.out_dir}" if opts.out_dir else ""),
    by_size=by_size,
  )
  caps, topo = exported.capacity, rule.topology
  print(
    f"{name}: {rule.meta_steps} meta steps, {rule.config.task.protocol} on {rule.config.net.topology} "
    f"({topo.num_neurons} neurons); capacity K@0.99 {caps['0.99']}, K@0.95 {caps['0.95']}"
  )
  for r in exported.records:
    print(f"  K={r['K']:3d}  bit accuracy {r['bit_accuracy']:.4f}  perfect recall {r['perfect_recall']:.4f}")
  for n in sorted({r["N"] for r in by_size or ()}):
    at_n = [r for r in by_size if r["N"] == n]
    print(f"  N={n:5d}  K@0.99 {evaluation.capacity(at_n, 0.99)}, K@0.95 {evaluation.capacity(at_n, 0.95)}")
  size = sum(os.path.getsize(p) for p in exported.paths) / 1024
  print(f"wrote {', '.join(exported.paths)} ({size:.1f} KB)")
  return exported


if __name__ == "__main__":
  harness.run(
    main,
    workdir_help="Run directory written by experiments.remember (required).",
    options={
      "name": (flags.DEFINE_string, None, "Name of the saved rule (letters, digits, - and _); required."),
      "out_dir": (
        flags.DEFINE_string,
        None,
        "Where to write it (default <workdir>/exported/; learned_rules/pretrained ships it).",
      ),
      "sizes_from": (
        flags.DEFINE_string,
        None,
        "A finished capacity study's capacity.json whose size study evaluated this rule: its records "
        "(recall against K at every N) are written into the rule's file.",
      ),
      "size_rule": (
        flags.DEFINE_string,
        None,
        "The rule's name in that study's size.rules (default: --name).",
      ),
      "trained_by": (
        flags.DEFINE_string,
        "python -m experiments.remember",
        "The command that trained the run, for the record.",
      ),
    },
  )
