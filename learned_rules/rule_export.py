"""A meta-trained rule saved as a few-KB file that `load_rule` reads, with the held-out recall it was
measured to have (`python -m experiments.export_rule`)."""

from __future__ import annotations

from typing import NamedTuple

from learned_rules import evaluation, pretrained, recall_study


class Export(NamedTuple):
  """What `export_rule` measured and wrote: recall records per K, `{str(level): K}`, the two paths."""

  records: list[dict]
  capacity: dict[str, int]
  paths: tuple[str, str]


def export_rule(rule: pretrained.Rule, prefix: str, *, trained_by: str, exported_by: str) -> Export:
  """Measures `rule`'s held-out recall against K (its config's `eval.k_values`, `eval.num_episodes`)
  and saves it to `<prefix>.json` and `<prefix>.msgpack` (`pretrained.save_rule`) with that recall and
  the commands that made it. Raises `pretrained.RuleSaveError` for a `net.trained_synapses` run (fixed
  trained weights, no learned rule), before anything is evaluated."""
  if rule.topology.trained_synapses:
    raise pretrained.RuleSaveError(
      f"{rule.source} is a net.trained_synapses run: a trained network with fixed per-synapse weights, "
      "no learned rule to export; load_rule(<its run directory>) reads it as it is"
    )
  train = rule.experiment.train
  key = evaluation.eval_key(train.seed)
  records = evaluation.recall_vs_k(
    rule.theta, rule.topology, rule.problem(), list(train.k_values), train.eval_episodes, key
  )
  caps = recall_study.capacities(records)
  paths = pretrained.save_rule(
    rule,
    prefix,
    trained_by=trained_by,
    exported_by=exported_by,
    held_out_episodes=train.eval_episodes,
    recall_vs_k=records,
    capacity=caps,
  )
  return Export(records, caps, paths)
