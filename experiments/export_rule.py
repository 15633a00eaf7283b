r"""Save a meta-trained rule as a few-KB file that `learned_rules.load_rule` reads.

  python -m experiments.export_rule --workdir=DIR --name=mine                    # DIR/exported/mine.json
  python -m experiments.export_rule --workdir=DIR --name=mine --out_dir=/tmp/rules  # /tmp/rules/mine.json
  python -m experiments.export_rule --workdir=runs/remember-hetero-full-K8-seed0 --name=hetero \
      --out_dir=learned_rules/pretrained                                         # ship it with the package

  python -m experiments.export_rule --workdir=runs/c1 --name=general --set=rule.rate_power=0.75 \
      --out_dir=learned_rules/pretrained                                         # its fan-in scaling changed
  python -m experiments.export_rule --workdir=DIR --name=mine \
      --set="eval.k_values=(12, 16, 24, 32),eval.num_episodes=512"              # measured on these

Restores the latest checkpoint of the run in `--workdir`, measures its held-out recall against K (the
run's `eval.k_values` and `eval.num_episodes`; a streaming rule: its recall on that many fresh streams,
as the trainer measures it), and writes `<out_dir>/<name>.msgpack` (theta) and
`<out_dir>/<name>.json` (config, meta steps, recall, and the commands that made it)
(`learned_rules.rule_export`). With `--sizes_from=<capacity.json>` (a capacity study whose
`size.rules` listed this rule), its recall against K at every size N goes into the file too.
`--set` changes how the rule scales with fan-in (`rule.message_norm`, `rule.reference_fan_in`,
`rule.scale_rate`, `rule.rate_power`, `rule.decay_power`, `rule.center_synapses`: fields that leave
theta's layout alone) before it is measured and saved, or what it is measured on (`eval.k_values`,
`eval.num_episodes`: a run whose own held-out evaluation was shortened, measured in full); the command
in the file records it.
`--out_dir` defaults to `<workdir>/exported/`; `load_rule` reads a rule there by its path. Shipping a
rule means `--out_dir=learned_rules/pretrained`, the package's own folder, whose rules `load_rule(name)`
finds by name.

Exit status: 0 done; 2 a bad --name or --set, no rule in the workdir, or a `net.trained_synapses` run
(fixed trained weights, no learned rule: refused); see experiments/harness.py.
"""

from __future__ import annotations

import ast
import dataclasses
import re

from absl import flags

from experiments import harness
from learned_rules import config as config_lib
from learned_rules import evaluation, files, pretrained, rule_export

# The fields `--set` may change: how the rule scales with fan-in, not the shape of its theta, and what
# it is measured on (a run whose own held-out evaluation was shortened is measured in full).
SETTABLE = (
  "rule.message_norm",
  "rule.reference_fan_in",
  "rule.scale_rate",
  "rule.rate_power",
  "rule.decay_power",
  "rule.center_synapses",
  "eval.k_values",
  "eval.num_episodes",
)


def parse_set(text: str) -> dict:
  """`--set`'s `field=value,...` as `{field: value}`, values as Python literals (a bare word is a string);
  a `UsageError` for anything but the `SETTABLE` fields."""
  overrides = {}
  parts = re.split(r",(?=\s*[a-z_]+\.[a-z_]+\s*=)", text)  # at the commas before a field, not in a tuple
  for part in filter(None, (p.strip() for p in parts)):
    field, eq, value = part.partition("=")
    if not eq or field not in SETTABLE:
      raise harness.UsageError(f"--set: {part!r} is not field=value with a field of {SETTABLE}")
    try:
      overrides[field] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[field] = value
  return overrides


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
  if opts.set:
    cfg = config_lib.with_overrides(rule.config, parse_set(opts.set))
    config_lib.validate(cfg)  # a ConfigError names the field (exit status 2)
    rule = dataclasses.replace(rule, config=cfg)
    command += f" --set={opts.set}"
  out_dir = opts.out_dir or files.join(workdir, "exported")
  by_size = None
  if opts.sizes_from:
    try:
      study = files.read_json(opts.sizes_from)
      by_size = rule_export.size_records(study, opts.size_rule or name, pretrained.theta_digest(rule.theta))
    except (OSError, ValueError) as e:
      raise harness.UsageError(f"--sizes_from: {opts.sizes_from}: {e}") from e
    command += f" --sizes_from={opts.sizes_from}" + (
      f" --size_rule={opts.size_rule}" if opts.size_rule else ""
    )
  exported = rule_export.export_rule(
    rule,
    files.join(out_dir, name),
    trained_by=opts.trained_by,
    exported_by=command + (f" --out_dir={opts.out_dir}" if opts.out_dir else ""),
    by_size=by_size,
  )
  caps, topo = exported.capacity, rule.topology
  what = f"{name}: {rule.meta_steps} meta steps, {rule.config.task.protocol} on {rule.config.net.topology} "
  what += f"({topo.num_neurons} neurons)"
  if caps is None:  # a streaming rule
    r = exported.records[0]
    print(f"{what}; lags 1..{r['max_lag']}, bit accuracy {r['bit_accuracy']:.4f} on {r['measured_on']}")
  else:
    print(f"{what}; capacity K@0.99 {caps['0.99']}, K@0.95 {caps['0.95']}")
    for r in exported.records:
      accuracy, perfect = r["bit_accuracy"], r["perfect_recall"]
      print(f"  K={r['K']:3d}  bit accuracy {accuracy:.4f}  perfect recall {perfect:.4f}")
  for n in sorted({r["N"] for r in by_size or ()}):
    at_n = [r for r in by_size if r["N"] == n]
    print(f"  N={n:5d}  K@0.99 {evaluation.capacity(at_n, 0.99)}, K@0.95 {evaluation.capacity(at_n, 0.95)}")
  size = sum(files.size(p) for p in exported.paths) / 1024
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
      "set": (
        flags.DEFINE_string,
        None,
        "Comma-separated field=value of the rule's fan-in scaling to change before measuring and saving: "
        + ", ".join(SETTABLE)
        + ".",
      ),
      "trained_by": (
        flags.DEFINE_string,
        "python -m experiments.remember",
        "The command that trained the run, for the record.",
      ),
    },
  )
