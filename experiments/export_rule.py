r"""Save a meta-trained rule as a few-KB file that `learned_rules.load_rule` reads.

  python -m experiments.export_rule --workdir=runs/remember-hetero-full-K8-seed0 --name=hetero
  python -m experiments.export_rule --workdir=DIR --name=mine --out_dir=/tmp/rules  # /tmp/rules/mine.json

Restores the run's latest checkpoint, measures its held-out recall against K (the run's
`eval.k_values` and `eval.num_episodes`), and writes `<out_dir>/<name>.msgpack` (theta) and
`<out_dir>/<name>.json` (config, meta steps, recall, and the commands that made it). The default
`out_dir` is the package's own `learned_rules/pretrained/`, whose rules `load_rule(name)` finds.
A `net.trained_synapses` run (fixed trained weights, no learned rule) is refused.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from experiments import flagutil
from learned_rules import evaluation as evaluate_lib
from learned_rules import metrics as metrics_lib
from learned_rules import pretrained

_WORKDIR = flagutil.define(
  flags.DEFINE_string, "workdir", None, "Run directory written by experiments.remember.", required=True
)
_NAME = flagutil.define(
  flags.DEFINE_string, "name", None, "Name of the saved rule (letters, digits, - and _).", required=True
)
_OUT_DIR = flagutil.define(flags.DEFINE_string, "out_dir", pretrained.PRETRAINED_DIR, "Where to write it.")
_TRAINED_BY = flagutil.define(
  flags.DEFINE_string,
  "trained_by",
  "python -m experiments.remember",
  "The command that trained the run, for the record.",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  name = _NAME.value
  if not name.replace("-", "").replace("_", "").isalnum():
    sys.exit(f"--name: {name!r} is not a name of letters, digits, - and _")
  metrics_lib.quiet_library_logs()
  try:
    rule = pretrained.load_rule(_WORKDIR.value)
  except (FileNotFoundError, pretrained.RuleLoadError) as e:
    sys.exit(str(e))
  if rule.topology.trained_synapses:
    sys.exit(
      f"{_WORKDIR.value} is a net.trained_synapses run: a trained network with fixed per-synapse weights, "
      "no learned rule to export; load_rule(<its run directory>) reads it as it is"
    )
  cfg = rule.config
  key = evaluate_lib.eval_key(cfg.seed)
  k_values = [int(k) for k in cfg.eval.k_values]
  records = evaluate_lib.recall_vs_k(rule.theta, rule.topology, cfg, k_values, cfg.eval.num_episodes, key)
  caps = {str(level): evaluate_lib.capacity(records, level) for level in (0.99, 0.95)}
  paths = pretrained.save_rule(
    rule,
    os.path.join(_OUT_DIR.value, name),
    trained_by=_TRAINED_BY.value,
    exported_by=f"python -m experiments.export_rule --workdir={_WORKDIR.value} --name={name}",
    held_out_episodes=int(cfg.eval.num_episodes),
    recall_vs_k=records,
    capacity=caps,
  )
  print(
    f"{name}: {rule.meta_steps} meta steps, {cfg.task.protocol} on {cfg.net.topology} "
    f"({rule.topology.num_neurons} neurons); capacity K@0.99 {caps['0.99']}, K@0.95 {caps['0.95']}"
  )
  for r in records:
    print(f"  K={r['K']:3d}  bit accuracy {r['bit_accuracy']:.4f}  perfect recall {r['perfect_recall']:.4f}")
  print(f"wrote {', '.join(paths)} ({sum(os.path.getsize(p) for p in paths) / 1024:.1f} KB)")


if __name__ == "__main__":
  app.run(main)
