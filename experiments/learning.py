r"""Learning from remembering (docs/DESIGN.md): a rule meta-trained to remember, shown pairs `(x, f(x))`
of a teacher fixed per episode; recall on stored keys and prediction on unseen keys, against K.

  python -m experiments.learning                  # runs/learning/, docs/figures/learning/learning.png
  python -m experiments.learning --quick          # runs/learning-quick/ (figure there too), minutes
  python -m experiments.learning --config=learned_rules/configs/learning.py:tiny --workdir=/tmp/learning

learned_rules/configs/learning.py holds the study (rule, teachers, K, episodes, baselines, step sizes).
For each teacher it tunes the online-SGD baseline's step size per K on separate episodes, evaluates the
rule and every baseline on the same held-out episodes, and writes `<workdir>/results.json` (one record
per teacher, method and K; the step-size table; the linear ceiling; timings), prints the table, and
draws `learning.png` (recall and generalisation against K, one row per teacher) into `--figure_dir`.
"""

from __future__ import annotations

import json
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import flagutil  # noqa: E402
from learned_rules import baselines, pretrained, teacher, trained_baselines  # noqa: E402
from learned_rules import config as config_lib  # noqa: E402
from learned_rules import evaluation as evaluate_lib  # noqa: E402
from learned_rules import metrics as metrics_lib  # noqa: E402
from learned_rules.configs import learning as learning_configs  # noqa: E402

_CONFIG = flagutil.define(
  config_flags.DEFINE_config_file, "config", "learned_rules/configs/learning.py", "Study config."
)
_WORKDIR = flagutil.define(
  flags.DEFINE_string, "workdir", "", "Output folder (default runs/learning, or runs/learning-quick)."
)
_QUICK = flagutil.define(
  flags.DEFINE_bool, "quick", False, "Reduced resolution: the config's `quick` variant on top."
)
_PLOT_ONLY = flagutil.define(
  flags.DEFINE_bool, "plot_only", False, "Only redraw the figure from the workdir's results.json."
)
_FIGURE_DIR = flagutil.define(
  flags.DEFINE_string,
  "figure_dir",
  None,
  "Where to draw learning.png (default docs/figures/learning, or the workdir with --quick or another "
  "config than the default one, so that only the full study replaces the committed figure).",
)

METHODS = ("learned", "online_backprop", "hebbian", "hebbian_decay", "pseudo_inverse")
MEASURES = ("recall", "generalisation")
# Keys folded into the evaluation key: tuning episodes and ceiling teachers, disjoint from the evaluation's.
_TUNE_TAG, _CEILING_TAG = 3, 7


def _names(text: str) -> list[str]:
  return [n for n in (s.strip() for s in text.split(",")) if n]


def validate(cfg) -> None:
  """Raises `config_lib.ConfigError` on a study config that cannot run."""
  for name in _names(cfg.teachers) or [""]:
    if name not in teacher.TEACHERS:
      raise config_lib.ConfigError("teachers", f"unknown teacher {name!r}; one of {teacher.TEACHERS}")
  for name in _names(cfg.baselines):
    if name not in METHODS[1:]:
      raise config_lib.ConfigError("baselines", f"unknown baseline {name!r}; one of {METHODS[1:]}")
  if not cfg.k_values or any(int(k) < 1 for k in cfg.k_values):
    raise config_lib.ConfigError("k_values", "needs at least one K, each >= 1")
  checks = {
    "num_episodes": cfg.num_episodes >= 1,
    "batch": cfg.batch >= 1,
    "num_unseen": cfg.num_unseen >= 0,
    "teacher_hidden": cfg.teacher_hidden >= 1,
    "online_backprop.hidden": cfg.online_backprop.hidden >= 1,
    "online_backprop.tune_episodes": cfg.online_backprop.tune_episodes >= 1,
    "ceiling.num_fit": cfg.ceiling.num_fit >= 1 and cfg.ceiling.teachers >= 1 and cfg.ceiling.num_test >= 1,
  }
  for field, ok in checks.items():
    if not ok:
      raise config_lib.ConfigError(field, "must be >= 1 (num_unseen >= 0)")
  if not cfg.online_backprop.step_sizes or any(s <= 0 for s in cfg.online_backprop.step_sizes):
    raise config_lib.ConfigError("online_backprop.step_sizes", "needs at least one step size, each > 0")
  if "hebbian_decay" in _names(cfg.baselines) and (
    not cfg.hebbian_decays or any(not 0 < d <= 1 for d in cfg.hebbian_decays)
  ):
    raise config_lib.ConfigError("hebbian_decays", "needs at least one decay, each in (0, 1]")
  if cfg.online_backprop.tune_on not in MEASURES:
    raise config_lib.ConfigError("online_backprop.tune_on", f"one of {MEASURES}")


def load_hetero_rule(name: str) -> pretrained.Rule:
  """The rule `name`; it must be meta-trained on `hetero` (keys on the inputs, values on the outputs)."""
  rule = pretrained.load_rule(name)
  if rule.config.task.protocol != "hetero":
    raise config_lib.ConfigError(
      "rule", f"{name} was meta-trained on {rule.config.task.protocol!r}, not hetero"
    )
  return rule


def per_episode(eval_fn, key: jax.Array, num_episodes: int, batch: int) -> dict[str, np.ndarray]:
  """`{name: [G, num_episodes]}`: the per-episode scores `eval_fn(fold_in(key, i), n)` `{name: [G, n]}`
  of batches of at most `batch` episodes, joined: the batches and keys of `evaluate.mean_over_batches`,
  so the episodes are the same for every method."""
  sizes = [batch] * (num_episodes // batch) + ([num_episodes % batch] if num_episodes % batch else [])
  results = [eval_fn(jax.random.fold_in(key, i), n) for i, n in enumerate(sizes)]
  return {name: np.concatenate([np.asarray(r[name]) for r in results], axis=1) for name in results[0]}


def mean_and_error(values: np.ndarray) -> tuple[float, float]:
  """Mean and standard error of the mean of per-episode values `[num_episodes]`."""
  n = len(values)
  return float(np.mean(values)), float(np.std(values, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def _hebbian_decay(decay, episode, init_key, spec):
  """`baselines.hebbian` with a per-step `decay` (a palimpsest), as a `teacher.readout_scores` readout."""
  del init_key
  return baselines.hebbian(episode, spec, decay)


class _Study:
  """One teacher's evaluation: the rule, the tasks at every K, the episodes' keys, timings."""

  def __init__(self, cfg, rule: pretrained.Rule, kind: str):
    self.cfg, self.rule = cfg, rule
    self.teacher = teacher.TeacherSpec(kind, int(cfg.teacher_hidden), int(cfg.num_unseen))
    self.specs = tuple(rule.problem(int(k)).task for k in cfg.k_values)
    too_many = [k for k in cfg.k_values if k >= 2 ** self.specs[0].n_in]
    if too_many:
      raise config_lib.ConfigError("k_values", f"K {too_many} leaves no unseen {self.specs[0].n_in}-bit key")
    self.timings = {}

  def scorer(self, method: str, args=None):
    """`eval_fn(key, n)` for `per_episode`: `{measure: [len(K), n]}` of `method` on the `n`
    held-out teacher episodes of `key` (the same episodes for every method); `args` `[len(K)]` are
    the SGD step sizes or the Hebbian decays."""
    readouts = {
      "hebbian": baselines.READOUT_FNS["hebbian"],
      "pseudo_inverse": baselines.READOUT_FNS["pseudo_inverse"],
    }
    readouts["online_backprop"] = trained_baselines.online_backprop_readout_fn(
      int(self.cfg.online_backprop.hidden)
    )
    readouts["hebbian_decay"] = _hebbian_decay
    args = jnp.asarray(args if args is not None else [0.0] * len(self.specs), jnp.float32)

    def eval_fn(key, n):
      stored, unseen, lengths, init_keys = teacher.held_out_episodes(key, self.specs, self.teacher, n)
      if method == "learned":
        problem = self.rule.problem()
        return teacher.network_scores(
          self.rule.theta, self.rule.topology, problem, stored, unseen, lengths, init_keys
        )
      return teacher.readout_scores(readouts[method], args, self.specs[0], stored, unseen, init_keys)

    return eval_fn

  def timed(self, label: str, fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    self.timings[label] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    return out

  def tune(self, key) -> tuple[list[float], dict]:
    """The online-SGD step size of highest `tune_on` bit accuracy at every K (the first on a tie), and
    the table `{step size: [accuracy per K]}`, on `tune_episodes` episodes drawn from `key`."""
    ob = self.cfg.online_backprop
    table = {}
    for lr in ob.step_sizes:
      fn = self.scorer("online_backprop", [float(lr)] * len(self.specs))
      table[float(lr)] = [
        float(v) for v in per_episode(fn, key, ob.tune_episodes, self.cfg.batch)[ob.tune_on].mean(axis=1)
      ]
    best = [max(table, key=lambda lr: table[lr][i]) for i in range(len(self.specs))]
    return best, table

  def match_decay(self, key, learned: dict[str, np.ndarray]) -> tuple[float, dict, dict]:
    """The Hebbian decay (of `hebbian_decays`) whose recall against K is closest (least squares over K)
    to the rule's `learned` per-episode recall `[len(K), E]` on the episodes of `key`: a memory that
    forgets as fast as the rule. Returns it, its per-episode scores, and `{decay: squared distance}`.
    Matched on recall only, so the generalisation it is compared on was not selected for."""
    target = learned["recall"].mean(axis=1)
    fits, distance = {}, {}
    for decay in self.cfg.hebbian_decays:
      fits[float(decay)] = per_episode(
        self.scorer("hebbian_decay", [float(decay)] * len(self.specs)),
        key,
        self.cfg.num_episodes,
        self.cfg.batch,
      )
      distance[float(decay)] = float(np.sum((fits[float(decay)]["recall"].mean(axis=1) - target) ** 2))
    best = min(distance, key=distance.get)
    return best, fits[best], distance


def evaluate_teacher(cfg, rule: pretrained.Rule, kind: str, eval_key: jax.Array) -> dict:
  """Teacher `kind`: tunes the SGD step size (if `online_backprop` is a baseline), evaluates every method
  on the held-out episodes of `eval_key` (and matches the Hebbian decay to the rule's recall, if
  `hebbian_decay` is one); returns its records, tuning tables, linear ceiling, timings."""
  study = _Study(cfg, rule, kind)
  step_sizes, tuning = None, {}
  methods = ["learned", *_names(cfg.baselines)]
  if "online_backprop" in methods:
    tune_key = jax.random.fold_in(eval_key, _TUNE_TAG)
    step_sizes, table = study.timed("tune online_backprop", lambda: study.tune(tune_key))
    tuning["online_backprop"] = {"best": step_sizes, "table": {str(lr): accs for lr, accs in table.items()}}
  evaluate = lambda m: per_episode(study.scorer(m, step_sizes), eval_key, cfg.num_episodes, cfg.batch)  # noqa: E731
  per_method = {m: study.timed(m, lambda m=m: evaluate(m)) for m in methods if m != "hebbian_decay"}
  decay = None
  if "hebbian_decay" in methods:
    decay, per_method["hebbian_decay"], distance = study.timed(
      "hebbian_decay", lambda: study.match_decay(eval_key, per_method["learned"])
    )
    tuning["hebbian_decay"] = {"best": decay, "recall_distance": {str(d): v for d, v in distance.items()}}
  records = []
  for method, values in per_method.items():
    for i, spec in enumerate(study.specs):
      row = {"teacher": kind, "method": method, "K": spec.num_snippets, "U": study.teacher.unseen(spec)}
      for name, per_k in values.items():
        row[name], row[name + "_se"] = mean_and_error(per_k[i])
      row["generalisation_error"] = 1.0 - row["generalisation"]
      if method != "learned":  # paired over the same episodes: > 0 where the rule generalises better
        diff = per_method["learned"]["generalisation"][i] - values["generalisation"][i]
        row["rule_advantage"], row["rule_advantage_se"] = mean_and_error(diff)
      if method == "online_backprop":
        row["step_size"] = step_sizes[i]
      if method == "hebbian_decay":
        row["decay"] = decay
      records.append(row)
  c, n_in, n_out = cfg.ceiling, study.specs[0].n_in, study.specs[0].n_out
  ceiling_key = jax.random.fold_in(eval_key, _CEILING_TAG)
  ceiling = study.timed(
    "linear ceiling",
    lambda: teacher.linear_ceiling(
      ceiling_key, study.teacher, n_in, n_out, c.num_fit, c.num_test, c.teachers
    ),
  )
  return {"records": records, "tuning": tuning, "ceiling": float(ceiling), "timings": study.timings}


def run(cfg, workdir: str, figure_dir: str | None = None) -> dict:
  """Runs the study of `cfg`; writes `<workdir>/results.json` and `<figure_dir or workdir>/learning.png`,
  prints the table, and returns what it wrote."""
  validate(cfg)
  rule = load_hetero_rule(cfg.rule)
  os.makedirs(workdir, exist_ok=True)
  start, cpu_start = time.perf_counter(), time.process_time()
  eval_key = evaluate_lib.eval_key(int(cfg.seed))
  per_teacher = {}
  for kind in _names(cfg.teachers):
    per_teacher[kind] = evaluate_teacher(cfg, rule, kind, eval_key)
    print(f"[{time.perf_counter() - start:6.0f} s] teacher {kind} done", flush=True)
  result = {
    "rule": cfg.rule,
    "rule_meta_steps": rule.meta_steps,
    "config": cfg.to_dict(),
    "num_episodes": int(cfg.num_episodes),
    "chance": 0.5,
    "records": [r for t in per_teacher.values() for r in t["records"]],
    "linear_ceiling": {kind: t["ceiling"] for kind, t in per_teacher.items()},
    "tuning": {kind: t["tuning"] for kind, t in per_teacher.items()},
    "timings": {kind: t["timings"] for kind, t in per_teacher.items()},
    "wall_s": time.perf_counter() - start,
    "cpu_s": time.process_time() - cpu_start,
  }
  print(format_table(result))
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(result, f, indent=2)
  figure_dir = figure_dir or workdir
  os.makedirs(figure_dir, exist_ok=True)
  plot(result, os.path.join(figure_dir, "learning.png"))
  print(
    f"wrote {workdir}/results.json and {figure_dir}/learning.png "
    f"({result['wall_s']:.0f} s wall, {result['cpu_s']:.0f} s CPU)"
  )
  return result


def _rows(records, kind: str, method: str) -> list[dict]:
  return [r for r in records if r["teacher"] == kind and r["method"] == method]


def format_table(result: dict) -> str:
  """Recall and generalisation bit accuracy per teacher, K and method; the rule's generalisation minus
  SGD's over the same episodes with its 95% interval (1.96 standard errors); SGD's tuned step size."""
  records = result["records"]
  methods = list(dict.fromkeys(r["method"] for r in records))
  short = {
    "learned": "rule",
    "online_backprop": "sgd",
    "hebbian": "hebb",
    "hebbian_decay": "hebd",
    "pseudo_inverse": "pinv",
  }
  lines = []
  for kind in dict.fromkeys(r["teacher"] for r in records):
    lines.append(
      f"\nteacher {kind}: bit accuracy, {result['num_episodes']} held-out episodes per K; chance 0.5, "
      f"best linear readout {result['linear_ceiling'][kind]:.3f}"
    )
    head = "".join(f"{'rec ' + short[m]:>10}" for m in methods)
    head += "".join(f"{'gen ' + short[m]:>10}" for m in methods)
    sgd = "online_backprop" in methods
    lines.append(f"{'K':>4}{head}" + (f"{'gen rule - sgd':>20}{'sgd lr':>8}" if sgd else ""))
    by_method = {m: _rows(records, kind, m) for m in methods}
    for i, row in enumerate(by_method["learned"]):
      cells = "".join(f"{by_method[m][i]['recall']:>10.3f}" for m in methods)
      cells += "".join(f"{by_method[m][i]['generalisation']:>10.3f}" for m in methods)
      if sgd:
        r = by_method["online_backprop"][i]
        cells += f"{r['rule_advantage']:>+12.3f} ± {1.96 * r['rule_advantage_se']:.3f}{r['step_size']:>8g}"
      lines.append(f"{row['K']:>4}{cells}")
  return "\n".join(lines)


_LABELS = {
  "learned": "learned rule (hetero, frozen)",
  "online_backprop": "online SGD, step size tuned",
  "hebbian": "Hebbian outer product",
  "hebbian_decay": "Hebbian, decay matched to the rule's recall",
  "pseudo_inverse": "pseudo-inverse (least squares)",
}
_STYLES = {
  "learned": "o-",
  "online_backprop": "s--",
  "hebbian": "^--",
  "hebbian_decay": "d:",
  "pseudo_inverse": "v--",
}


def plot(result: dict, path: str) -> None:
  """Recall (left) and generalisation (right) bit accuracy against K, one row per teacher."""
  records = result["records"]
  kinds = list(dict.fromkeys(r["teacher"] for r in records))
  fig, axes = plt.subplots(len(kinds), 2, figsize=(9, 3.3 * len(kinds)), dpi=90, squeeze=False, sharex=True)
  for row_axes, kind in zip(axes, kinds, strict=True):
    for ax, measure in zip(row_axes, MEASURES, strict=True):
      for method in dict.fromkeys(r["method"] for r in records):
        rows = _rows(records, kind, method)
        ax.plot(
          [r["K"] for r in rows], [r[measure] for r in rows], _STYLES[method], label=_LABELS[method], ms=4
        )
      ax.axhline(0.5, color="gray", lw=0.8, ls=":")
      if measure == "generalisation":
        ax.axhline(result["linear_ceiling"][kind], color="gray", lw=0.8, ls="-.", label="best linear readout")
      ax.set_xscale("log", base=2)
      ks = sorted({r["K"] for r in records})
      ax.set_xticks(ks, [str(k) for k in ks])
      ax.minorticks_off()
      ax.set_ylim(0.45, 1.02)
      where = "stored keys (memory)" if measure == "recall" else "unseen keys (learning)"
      ax.set_title(f"{kind} teacher: {measure} on {where}", fontsize=9)
      ax.set_ylabel("bit accuracy")
  for ax in axes[-1]:
    ax.set_xlabel("K, pairs (x, f(x)) shown once")
  # One legend for all panels, below them.
  handles, labels = axes[0][1].get_legend_handles_labels()
  fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=3, frameon=False)
  fig.tight_layout(rect=(0, 0.07, 1, 1))
  fig.savefig(path)
  plt.close(fig)


def replot(workdir: str, figure_dir: str | None = None) -> None:
  """Redraws `learning.png` from `<workdir>/results.json` and prints its table (nothing is evaluated)."""
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    sys.exit(f"error: --plot_only: no {path}; run the study first")
  with open(path) as f:
    result = json.load(f)
  figure_dir = figure_dir or workdir
  os.makedirs(figure_dir, exist_ok=True)
  plot(result, os.path.join(figure_dir, "learning.png"))
  print(format_table(result))
  print(f"drew {figure_dir}/learning.png from {path}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  metrics_lib.quiet_library_logs()
  cfg = _CONFIG.value
  if _QUICK.value:
    cfg = flagutil.with_variant(cfg, learning_configs.apply_variant, "quick")
  workdir = _WORKDIR.value or os.path.join("runs", "learning-quick" if _QUICK.value else "learning")
  figure_dir = _FIGURE_DIR.value
  if (
    figure_dir is None and not _QUICK.value and cfg.to_dict() == learning_configs.get_config().to_dict()
  ):  # `==` also compares locks
    figure_dir = os.path.join("docs", "figures", "learning")
  if _PLOT_ONLY.value:
    replot(workdir, figure_dir)
    return
  try:
    run(cfg, workdir, figure_dir)
  except (config_lib.ConfigError, FileNotFoundError, pretrained.RuleLoadError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
