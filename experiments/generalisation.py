r"""How far a rule generalises: one meta-trained rule evaluated, without retraining, off its setting.

  python -m experiments.generalisation                                  # the shipped `hetero` rule
  python -m experiments.generalisation --rule=runs/remember-auto-full-K8-seed0 --num_episodes=512

Evaluates the rule on held-out episodes in its own setting and in each of `SETTINGS` (config
overrides of the setting it was meta-trained in): 4x the neurons, 2x the snippets, 4x longer
episodes, other topologies, and the other protocol. Prints recall bit accuracy and perfect recall
against the in-distribution value, and writes `<out_dir>/generalisation.json`.

Every setting also gets the key-blind floor on the very same episodes: the bit accuracy of the best
answer that ignores the cue (`baselines.key_blind`, the per-bit majority of the values stored so far,
0.75 at K = 2 and 0.64 at K = 8). A rule that does not beat it by more than `FLOOR_MARGIN` there does not
measurably use the key. On a `streaming` setting (a streaming rule's own), the floor runs on the same
fresh streams as the network (`STREAM_EVAL_WINDOWS` windows each) and answers every step with the
per-bit majority of the values of the snippets it can be asked for: those of the last `Dmax` slots
that the stream saw whole (`baselines.stream_key_blind`).
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

from experiments import flagutil  # noqa: E402
from learned_rules import baselines, network, pretrained
from learned_rules import config as config_lib
from learned_rules import evaluation as evaluate_lib

_RULE = flagutil.define(
  flags.DEFINE_string, "rule", "hetero", "A shipped rule's name, a run directory or a saved rule."
)
_OUT_DIR = flagutil.define(
  flags.DEFINE_string,
  "out_dir",
  None,
  "Where to write generalisation.json (default runs/generalisation-<rule>).",
)
_NUM_EPISODES = flagutil.define(flags.DEFINE_integer, "num_episodes", 256, "Held-out episodes per setting.")


def _four_times_neurons(cfg):
  n = cfg.net.num_inputs + cfg.net.num_outputs + cfg.net.num_hidden
  return {"net.num_hidden": 4 * n - cfg.net.num_inputs - cfg.net.num_outputs}


def _other_protocol(cfg):
  if cfg.task.protocol == "hetero":
    return {"task.protocol": "auto", "task.cue_corruption": 0.25}
  return {"task.protocol": "hetero", "task.cue_corruption": 0.0}


# name -> config overrides, as a function of the rule's own config.
SETTINGS = {
  "in distribution": lambda cfg: {},
  "4x neurons (more hidden)": _four_times_neurons,
  "2x snippets": lambda cfg: {"task.num_snippets": 2 * cfg.task.num_snippets},
  "4x longer episodes": lambda cfg: {
    "task.present_steps": 4 * cfg.task.present_steps,
    "task.delay_steps": 4 * cfg.task.delay_steps,
    "task.query_steps": 4 * cfg.task.query_steps,
  },
  "sparse topology (density 0.5)": lambda cfg: {"net.topology": "sparse", "net.density": 0.5},
  "layered topology (1 hidden layer)": lambda cfg: {
    "net.topology": "layered",
    "net.hidden_layers": (cfg.net.num_hidden,),
  },
  "other protocol": _other_protocol,
}


# A rule "beats the key-blind floor" where its bit accuracy is above the floor's on the same episodes by
# more than this.
FLOOR_MARGIN = 0.01


def run(rule_name: str, num_episodes: int, out_dir: str | None = None) -> list[dict]:
  """Evaluates rule `rule_name` in every setting of `SETTINGS`; prints and writes the table."""
  rule = pretrained.load_rule(rule_name)
  name = os.path.basename(os.path.normpath(rule_name))
  out_dir = out_dir or os.path.join("runs", f"generalisation-{name}")
  os.makedirs(out_dir, exist_ok=True)
  records = []
  for setting, overrides_fn in SETTINGS.items():
    start = time.perf_counter()
    overrides = overrides_fn(rule.config)
    cfg = config_lib.with_overrides(rule.config, overrides)
    topo = network.make_topology(cfg.net)
    problem = evaluate_lib.problem_from_config(cfg, topo)
    key = evaluate_lib.eval_key(cfg.seed)
    metrics = evaluate_lib.evaluate(rule.theta, topo, problem, key, num_episodes)
    floor = baselines.key_blind_metrics(problem.task, key, num_episodes)["bit_accuracy"]
    records.append(
      {
        "setting": setting,
        "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
        "N": topo.num_neurons,
        "synapses": topo.num_synapses,
        "K": problem.task.num_snippets,
        "episode_steps": problem.task.episode_steps,
        **metrics,
        "key_blind_bit_accuracy": floor,
        "beats_key_blind": bool(metrics["bit_accuracy"] > floor + FLOOR_MARGIN),
        "seconds": time.perf_counter() - start,
      }
    )
  base = records[0]
  for r in records:
    r["relative_bit_accuracy"] = r["bit_accuracy"] / base["bit_accuracy"]
  print(f"{name}: {rule.meta_steps} meta steps, {rule.config.task.protocol} on {rule.config.net.topology}; "
        f"{num_episodes} held-out episodes per setting")  # fmt: skip
  print(
    f"{'setting':<36}{'N':>6}{'K':>4}{'T':>5}{'bit acc.':>10}{'vs in-dist.':>13}{'perfect':>9}"
    f"{'key-blind':>11}{'beats it':>10}"
  )
  for r in records:
    print(
      f"{r['setting']:<36}{r['N']:>6}{r['K']:>4}{r['episode_steps']:>5}{r['bit_accuracy']:>10.3f}"
      f"{r['relative_bit_accuracy']:>13.3f}{r['perfect_recall']:>9.3f}"
      f"{r['key_blind_bit_accuracy']:>11.3f}{'yes' if r['beats_key_blind'] else 'NO':>10}"
    )
  print(
    "key-blind: bit accuracy of the best answer that ignores the cue (the per-bit majority of the stored "
    "values), on the same episodes;\nbeats it: the rule's bit accuracy is above it by more than "
    f"{FLOOR_MARGIN} (NO: the rule does not measurably use the key there)"
  )
  with open(os.path.join(out_dir, "generalisation.json"), "w") as f:
    json.dump({"rule": rule_name, "meta_steps": rule.meta_steps, "records": records}, f, indent=2)
  print(f"wrote {out_dir}/generalisation.json")
  return records


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _NUM_EPISODES.value < 1:
    sys.exit("error: --num_episodes must be >= 1")
  try:
    run(_RULE.value, _NUM_EPISODES.value, _OUT_DIR.value)
  except (FileNotFoundError, pretrained.RuleLoadError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
