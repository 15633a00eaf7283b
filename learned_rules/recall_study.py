"""Recall against K of a trained run, beside the key-blind floor on the same episodes, and its capacity
points (`python -m experiments.evaluate`); the figures of recall against K and of meta-training."""

from __future__ import annotations

from typing import NamedTuple

import matplotlib.pyplot as plt

from learned_rules import baselines, evaluation, figures, meta_train
from learned_rules import config as config_lib

LEVELS = (0.99, 0.95)  # bit accuracies whose capacity (the largest K that reaches them) is reported


class RunRecall(NamedTuple):
  """What `evaluate_run` measured: `result` as recall_vs_k.json holds it, and the figure's `title`."""

  result: dict
  title: str


def recall_against_k(theta, topo, cfg, k_values: list[int], num_episodes: int) -> list[dict]:
  """`evaluation.recall_vs_k` of `theta` on the held-out episodes of `cfg` at every K of `k_values`,
  each record with `key_blind_bit_accuracy`: the best answer that ignores the cue, on the same episodes."""
  key = evaluation.eval_key(config_lib.train_spec(cfg).seed)
  records = evaluation.recall_vs_k(theta, topo, config_lib.problem(cfg, topo), k_values, num_episodes, key)
  specs = tuple(config_lib.problem(cfg, topo, num_snippets=k).task for k in k_values)
  floors = baselines.evaluate_over_k(baselines.READOUT_FNS["key_blind"], None, specs, key, num_episodes)
  for r, floor in zip(records, floors, strict=True):
    r["key_blind_bit_accuracy"] = floor["bit_accuracy"]
  return records


def capacities(records: list[dict]) -> dict[str, int]:
  """`{str(level): capacity}` at every level of `LEVELS` (`evaluation.capacity`)."""
  return {str(level): evaluation.capacity(records, level) for level in LEVELS}


def load_episode_run(workdir: str):
  """`meta_train.load_run(workdir)` of a run of the `hetero` or `auto` protocol. Raises
  FileNotFoundError without a checkpoint, `ConfigError` for a saved config this version cannot read or
  a `streaming` run, and the checkpoint errors of `load_run`."""
  try:
    cfg, topo, state = meta_train.load_run(workdir)
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f"{e} (the run's saved config; was it written by an older version?)") from e
  if config_lib.experiment_spec(cfg).task.protocol == "streaming":
    raise config_lib.ConfigError("task.protocol", "recall against K applies to the hetero and auto protocols")
  return cfg, topo, state


def evaluate_run(workdir: str, k_values=None, num_episodes: int | None = None) -> RunRecall:
  """Recall against K (default: the run's `eval.k_values`, `eval.num_episodes` episodes per K) of the
  latest checkpoint in `workdir`, with the key-blind floor and the capacities (`load_episode_run`)."""
  cfg, topo, state = load_episode_run(workdir)
  spec = config_lib.experiment_spec(cfg)
  k_values = [int(k) for k in (k_values or spec.train.k_values)]
  episodes = num_episodes or spec.train.eval_episodes
  records = recall_against_k(state.theta, topo, cfg, k_values, episodes)
  result = {
    "workdir": workdir,
    "meta_step": int(state.step),
    "protocol": spec.task.protocol,
    "topology": spec.topology,
    "num_episodes": episodes,
    "capacity": capacities(records),
    "records": records,
  }
  return RunRecall(result, f"{spec.task.protocol}, {spec.topology}, N={topo.num_neurons}")


def format_table(result: dict) -> str:
  """One line per K of `evaluate_run`'s result, and the capacities."""
  lines = [
    f"K={r['K']:>3}  bit accuracy {r['bit_accuracy']:.3f}  perfect {r['perfect_recall']:.3f}  "
    f"key-blind floor {r['key_blind_bit_accuracy']:.3f}"
    for r in result["records"]
  ]
  caps = result["capacity"]
  lines.append(f"capacity: K={caps['0.99']} at 0.99, K={caps['0.95']} at 0.95")
  return "\n".join(lines)


def plot(result: dict, path: str, title: str) -> None:
  """Bit accuracy and perfect recall against K, the key-blind floor and the capacity levels."""
  records, caps = result["records"], result["capacity"]
  ks = [r["K"] for r in records]
  fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
  ax.plot(ks, [r["bit_accuracy"] for r in records], "o-", label="bit accuracy")
  ax.plot(ks, [r["perfect_recall"] for r in records], "s--", label="perfect recall")
  floor = [r["key_blind_bit_accuracy"] for r in records]
  ax.plot(ks, floor, color="black", ls="-.", lw=1.2, label="key-blind floor (bit accuracy)")
  for level, style in zip(LEVELS, (":", "-."), strict=True):
    ax.axhline(level, color="gray", ls=style, lw=0.8)
    ax.text(ks[-1], level, f"{level}: K={caps[str(level)]}", ha="right", va="bottom", fontsize=8)
  ax.axhline(0.5, color="k", lw=0.5)
  ax.set(xlabel="snippets per episode K", ylabel="held-out recall", ylim=(0, 1.02), title=title)
  ax.legend(loc="lower left", fontsize=8)
  fig.tight_layout()
  figures.save_png(fig, path)
