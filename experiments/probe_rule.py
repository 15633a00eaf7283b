r"""What a learned synapse rule does: its increment against pre and post activity (`learned_rules.probe`).

  python -m experiments.probe_rule                                   # the shipped `hetero` rule
  python -m experiments.probe_rule --rule=runs/remember-auto-full-K8-seed0 --workdir=/tmp/probe
  python -m experiments.probe_rule --workdir=docs/figures/probe      # the docs' figure and table

For every pair of neuron types that the rule's network connects, prints how the variance of one
synapse update over a grid of the pre and post neurons' external inputs splits into a post-only, a
pre-only, a Hebbian (post x pre) and a residual part, for the rule and for the untrained rule it started
from, in contexts of the rule's own network on held-out episodes (`learned_rules.probe_study`). Writes
`<workdir>/probe.json` (default runs/probe-<rule>) and draws `probe.png` into `--figure_dir` (default:
the workdir): the increment of the input -> output synapse beside the Hebbian outer product, and the
shares of every type pair. Then, for a `hetero` rule, whether it writes like a delta rule or a Hebbian
one: from the synapse states after K snippets, the write of a stored pair and of a contradicted one
against a new pair's (`learned_rules.storage_probe`), at the rule's training K and at K = 3N/16.

Exit status: 0 done; 2 a rule that is missing, unreadable or has synapse updates off; see
experiments/harness.py.
"""

from __future__ import annotations

import os

from absl import flags

from experiments import harness
from learned_rules import evaluation, files, pretrained, probe_study, storage_probe


def _rule_name(rule: str) -> str:
  return os.path.basename(os.path.normpath(rule))


def default_workdir(cfg, quick: bool = False) -> str:
  del cfg, quick
  return os.path.join("runs", f"probe-{_rule_name(flags.FLAGS.rule)}")


def storage_writes(rule: pretrained.Rule) -> list[dict]:
  """`storage_probe` of a `hetero` rule from its stored synapse states after K snippets, at its
  training K and at K = 3N/16 (0.75 x key bits); none for another protocol."""
  if rule.config.task.protocol != "hetero":
    return []
  ks = sorted({rule.config.task.num_snippets, max(1, round(0.75 * rule.topology.n_in))})
  key = evaluation.eval_key(rule.config.seed)
  return [storage_probe.storage_probe(rule.theta, rule.topology, rule.problem(k), key) for k in ks]


def main(cfg, workdir: str, opts) -> list[dict]:
  del cfg  # no config of its own: the rule's
  try:
    rule = pretrained.load_rule(opts.rule)
  except FileNotFoundError as e:
    raise harness.UsageError(f"--rule: {e}") from e
  result = probe_study.probe_rule(rule)
  records = result.records()
  name = _rule_name(opts.rule)
  print(probe_study.describe(name, rule))
  print(probe_study.format_table(records))
  storage = storage_writes(rule)
  print("Writing one more pair into synapses that hold K pairs (learned_rules/storage_probe.py):")
  for write in storage:
    print("  " + storage_probe.format_probe(write))
  summary = {"rule": opts.rule, "meta_steps": rule.meta_steps, "contexts": probe_study.CONTEXTS}
  files.write_json(files.join(workdir, "probe.json"), {**summary, "records": records, "storage": storage})
  figure = files.join(harness.figure_dir(workdir, opts.figure_dir), "probe.png")
  title = f"rule {name}: one synapse update against pre and post input, in its network's own states"
  probe_study.plot(result, figure, title)
  print(f"wrote {workdir}/probe.json, {figure}")
  return records


if __name__ == "__main__":
  harness.run(
    main,
    workdir=default_workdir,
    workdir_help="Where to write probe.json (and probe.png unless --figure_dir). Default: runs/probe-<rule>.",
    options={
      "rule": (flags.DEFINE_string, "hetero", "A shipped rule's name, a run directory or a saved rule."),
      "figure_dir": (flags.DEFINE_string, None, "Where to draw probe.png (default: the workdir)."),
    },
  )
