r"""How far a rule generalises: one meta-trained rule evaluated, without retraining, off its setting.

  python -m experiments.generalisation                                  # the shipped `hetero` rule
  python -m experiments.generalisation --rule=runs/remember-auto-full-K8-seed0 --num_episodes=512

Evaluates the rule on held-out episodes in its own setting and in each of
`learned_rules.generalisation_study.SETTINGS` (4x the neurons, 2x the snippets, 4x longer episodes,
other topologies, the other protocol), beside the key-blind floor on the very same episodes. Prints
recall bit accuracy and perfect recall against the in-distribution value, and writes
`<workdir>/generalisation.json` (default runs/generalisation-<rule>).

Exit status: 0 done; 2 a bad flag or a rule that is missing or unreadable; see experiments/harness.py.
"""

from __future__ import annotations

import os

from absl import flags

from experiments import harness
from learned_rules import files, generalisation_study, pretrained


def _rule_name(rule: str) -> str:
  return os.path.basename(os.path.normpath(rule))


def default_workdir(cfg, quick: bool = False) -> str:
  del cfg, quick
  return os.path.join("runs", f"generalisation-{_rule_name(flags.FLAGS.rule)}")


def load_rule(name: str) -> pretrained.Rule:
  """`pretrained.load_rule(name)`, a missing rule a usage error (exit 2)."""
  try:
    return pretrained.load_rule(name)
  except FileNotFoundError as e:
    raise harness.UsageError(f"--rule: {e}") from e


def main(cfg, workdir: str, opts) -> list[dict]:
  del cfg  # no config of its own: the rule's
  if opts.num_episodes < 1:
    raise harness.UsageError("--num_episodes must be >= 1")
  rule = load_rule(opts.rule)
  records = generalisation_study.evaluate_settings(rule, opts.num_episodes)
  print(generalisation_study.format_table(_rule_name(opts.rule), rule, records, opts.num_episodes))
  summary = {"rule": opts.rule, "meta_steps": rule.meta_steps, "records": records}
  files.write_json(files.join(workdir, "generalisation.json"), summary)
  print(f"wrote {workdir}/generalisation.json")
  return records


if __name__ == "__main__":
  harness.run(
    main,
    workdir=default_workdir,
    workdir_help="Where to write generalisation.json (default runs/generalisation-<rule>).",
    options={
      "rule": (flags.DEFINE_string, "hetero", "A shipped rule's name, a run directory or a saved rule."),
      "num_episodes": (flags.DEFINE_integer, 256, "Held-out episodes per setting."),
    },
  )
