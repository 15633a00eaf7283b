r"""Learning from remembering (docs/DESIGN.md): a rule meta-trained to remember, shown pairs `(x, f(x))`
of a teacher fixed per episode; recall on stored keys and prediction on unseen keys, against K.

`run(cfg)` is the study of `learned_rules/configs/learning.py` (`python -m experiments.learning`). For
each teacher it tunes the online-SGD baseline's step size per K on separate episodes, evaluates the rule
and every baseline on the same held-out episodes (`teacher.held_out_episodes`), matches the Hebbian
decay to the rule's recall, and measures the best linear readout. It returns one record per teacher,
method and K, the tuning tables, the linear ceiling and the timings; `format_table` prints them and
`learning_figures.plot` draws them.

The config stops at `study_spec`: below it every function takes the frozen `StudySpec`.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from learned_rules import baselines, evaluation, pretrained, teacher, trained_baselines
from learned_rules import config as config_lib

METHODS = ("learned", "online_backprop", "hebbian", "hebbian_decay", "pseudo_inverse")
MEASURES = ("recall", "generalisation")
# Keys folded into the evaluation key: tuning episodes and ceiling teachers, disjoint from the evaluation's.
_TUNE_TAG, _CEILING_TAG = 3, 7


@dataclasses.dataclass(frozen=True)
class StudySpec:
  """The study of a `configs/learning.py` config, in plain values (the fields of the config's docstring;
  `sgd_*` are its `online_backprop` block, `ceiling_*` its `ceiling` block)."""

  rule: str
  seed: int
  teachers: tuple[str, ...]
  teacher_hidden: int
  num_unseen: int
  k_values: tuple[int, ...]
  num_episodes: int
  batch: int
  baselines: tuple[str, ...]
  hebbian_decays: tuple[float, ...]
  sgd_hidden: int
  sgd_step_sizes: tuple[float, ...]
  tune_episodes: int
  tune_on: str
  ceiling_num_fit: int
  ceiling_teachers: int
  ceiling_num_test: int


def _names(text: str) -> tuple[str, ...]:
  return tuple(n for n in (s.strip() for s in text.split(",")) if n)


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


def study_spec(cfg) -> StudySpec:
  """The `StudySpec` of study config `cfg`, validated (`validate`)."""
  validate(cfg)
  sgd, ceiling = cfg.online_backprop, cfg.ceiling
  return StudySpec(
    rule=str(cfg.rule),
    seed=int(cfg.seed),
    teachers=_names(cfg.teachers),
    teacher_hidden=int(cfg.teacher_hidden),
    num_unseen=int(cfg.num_unseen),
    k_values=tuple(int(k) for k in cfg.k_values),
    num_episodes=int(cfg.num_episodes),
    batch=int(cfg.batch),
    baselines=_names(cfg.baselines),
    hebbian_decays=tuple(float(d) for d in cfg.hebbian_decays),
    sgd_hidden=int(sgd.hidden),
    sgd_step_sizes=tuple(float(s) for s in sgd.step_sizes),
    tune_episodes=int(sgd.tune_episodes),
    tune_on=str(sgd.tune_on),
    ceiling_num_fit=int(ceiling.num_fit),
    ceiling_teachers=int(ceiling.teachers),
    ceiling_num_test=int(ceiling.num_test),
  )


def load_hetero_rule(name: str) -> pretrained.Rule:
  """The rule `name`; it must be meta-trained on `hetero` (keys on the inputs, values on the outputs).
  Raises `ConfigError` (field `rule`) for a rule that is missing or of another protocol."""
  try:
    rule = pretrained.load_rule(name)
  except FileNotFoundError as e:
    raise config_lib.ConfigError("rule", str(e)) from e
  if rule.experiment.task.protocol != "hetero":
    raise config_lib.ConfigError(
      "rule", f"{name} was meta-trained on {rule.experiment.task.protocol!r}, not hetero"
    )
  return rule


def per_episode(eval_fn, key: jax.Array, num_episodes: int, batch: int) -> dict[str, np.ndarray]:
  """`{name: [G, num_episodes]}`: the per-episode scores `eval_fn(fold_in(key, i), n)` `{name: [G, n]}`
  of batches of at most `batch` episodes, joined: the batches and keys of `evaluation.mean_over_batches`,
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

  def __init__(self, spec: StudySpec, rule: pretrained.Rule, kind: str):
    self.spec, self.rule = spec, rule
    self.teacher = teacher.TeacherSpec(kind, spec.teacher_hidden, spec.num_unseen)
    self.tasks = tuple(rule.problem(k).task for k in spec.k_values)
    too_many = [k for k in spec.k_values if k >= 2 ** self.tasks[0].n_in]
    if too_many:
      raise config_lib.ConfigError("k_values", f"K {too_many} leaves no unseen {self.tasks[0].n_in}-bit key")
    self.timings = {}

  def scorer(self, method: str, args=None):
    """`eval_fn(key, n)` for `per_episode`: `{measure: [len(K), n]}` of `method` on the `n`
    held-out teacher episodes of `key` (the same episodes for every method); `args` `[len(K)]` are
    the SGD step sizes or the Hebbian decays."""
    readouts = {
      "hebbian": baselines.READOUT_FNS["hebbian"],
      "pseudo_inverse": baselines.READOUT_FNS["pseudo_inverse"],
      "online_backprop": trained_baselines.online_backprop_readout_fn(self.spec.sgd_hidden),
      "hebbian_decay": _hebbian_decay,
    }
    args = jnp.asarray(args if args is not None else [0.0] * len(self.tasks), jnp.float32)

    def eval_fn(key, n):
      stored, unseen, lengths, init_keys = teacher.held_out_episodes(key, self.tasks, self.teacher, n)
      if method == "learned":
        problem = self.rule.problem()
        return teacher.network_scores(
          self.rule.theta, self.rule.topology, problem, stored, unseen, lengths, init_keys
        )
      return teacher.readout_scores(readouts[method], args, self.tasks[0], stored, unseen, init_keys)

    return eval_fn

  def timed(self, label: str, fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    self.timings[label] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    return out

  def tune(self, key) -> tuple[list[float], dict]:
    """The online-SGD step size of highest `tune_on` bit accuracy at every K (the first on a tie), and
    the table `{step size: [accuracy per K]}`, on `tune_episodes` episodes drawn from `key`."""
    table = {}
    for lr in self.spec.sgd_step_sizes:
      fn = self.scorer("online_backprop", [lr] * len(self.tasks))
      scores = per_episode(fn, key, self.spec.tune_episodes, self.spec.batch)[self.spec.tune_on]
      table[lr] = [float(v) for v in scores.mean(axis=1)]
    best = [max(table, key=lambda lr: table[lr][i]) for i in range(len(self.tasks))]
    return best, table

  def linear_ceiling(self, key) -> jax.Array:
    """The best linear readout's generalisation on this teacher (`teacher.linear_ceiling`)."""
    spec, task = self.spec, self.tasks[0]
    return teacher.linear_ceiling(
      key,
      self.teacher,
      task.n_in,
      task.n_out,
      spec.ceiling_num_fit,
      spec.ceiling_num_test,
      spec.ceiling_teachers,
    )

  def match_decay(self, key, learned: dict[str, np.ndarray]) -> tuple[float, dict, dict]:
    """The Hebbian decay (of `hebbian_decays`) whose recall against K is closest (least squares over K)
    to the rule's `learned` per-episode recall `[len(K), E]` on the episodes of `key`: a memory that
    forgets as fast as the rule. Returns it, its per-episode scores, and `{decay: squared distance}`.
    Matched on recall only, so the generalisation it is compared on was not selected for."""
    target = learned["recall"].mean(axis=1)
    fits, distance = {}, {}
    for decay in self.spec.hebbian_decays:
      fn = self.scorer("hebbian_decay", [decay] * len(self.tasks))
      fits[decay] = per_episode(fn, key, self.spec.num_episodes, self.spec.batch)
      distance[decay] = float(np.sum((fits[decay]["recall"].mean(axis=1) - target) ** 2))
    best = min(distance, key=distance.get)
    return best, fits[best], distance


def _records(study: _Study, per_method: dict, step_sizes, decay) -> list[dict]:
  """One record per method and K of `per_method` `{method: {measure: [len(K), E]}}`: means and
  standard errors, and the rule's generalisation advantage paired over the same episodes."""
  records = []
  for method, values in per_method.items():
    for i, task in enumerate(study.tasks):
      row = {"teacher": study.teacher.kind, "method": method, "K": task.num_snippets}
      row["U"] = study.teacher.unseen(task)
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
  return records


def evaluate_teacher(spec: StudySpec, rule: pretrained.Rule, kind: str, eval_key: jax.Array) -> dict:
  """Teacher `kind`: tunes the SGD step size (if `online_backprop` is a baseline), evaluates every method
  on the held-out episodes of `eval_key` (and matches the Hebbian decay to the rule's recall, if
  `hebbian_decay` is one); returns its records, tuning tables, linear ceiling, timings."""
  study = _Study(spec, rule, kind)
  step_sizes, tuning = None, {}
  methods = ["learned", *spec.baselines]
  if "online_backprop" in methods:
    tune_key = jax.random.fold_in(eval_key, _TUNE_TAG)
    step_sizes, table = study.timed("tune online_backprop", lambda: study.tune(tune_key))
    tuning["online_backprop"] = {"best": step_sizes, "table": {str(lr): accs for lr, accs in table.items()}}
  evaluate = lambda m: per_episode(study.scorer(m, step_sizes), eval_key, spec.num_episodes, spec.batch)  # noqa: E731
  per_method = {m: study.timed(m, lambda m=m: evaluate(m)) for m in methods if m != "hebbian_decay"}
  decay = None
  if "hebbian_decay" in methods:
    decay, per_method["hebbian_decay"], distance = study.timed(
      "hebbian_decay", lambda: study.match_decay(eval_key, per_method["learned"])
    )
    tuning["hebbian_decay"] = {"best": decay, "recall_distance": {str(d): v for d, v in distance.items()}}
  records = _records(study, per_method, step_sizes, decay)
  ceiling = study.timed(
    "linear ceiling", lambda: study.linear_ceiling(jax.random.fold_in(eval_key, _CEILING_TAG))
  )
  return {"records": records, "tuning": tuning, "ceiling": float(ceiling), "timings": study.timings}


def run(cfg) -> dict:
  """The study of config `cfg` (`configs/learning.py`): `{rule, rule_meta_steps, config, num_episodes,
  chance, records, linear_ceiling, tuning, timings, wall_s, cpu_s}`, JSON-ready. Raises `ConfigError`
  before anything is compiled on an invalid config or a rule that is missing or not a `hetero` rule."""
  spec = study_spec(cfg)
  rule = load_hetero_rule(spec.rule)
  start, cpu_start = time.perf_counter(), time.process_time()
  eval_key = evaluation.eval_key(spec.seed)
  per_teacher = {}
  for kind in spec.teachers:
    per_teacher[kind] = evaluate_teacher(spec, rule, kind, eval_key)
    logging.info("[%6.0f s] teacher %s done", time.perf_counter() - start, kind)
  return {
    "rule": cfg.rule,
    "rule_meta_steps": rule.meta_steps,
    "config": cfg.to_dict(),
    "num_episodes": spec.num_episodes,
    "chance": 0.5,
    "records": [r for t in per_teacher.values() for r in t["records"]],
    "linear_ceiling": {kind: t["ceiling"] for kind, t in per_teacher.items()},
    "tuning": {kind: t["tuning"] for kind, t in per_teacher.items()},
    "timings": {kind: t["timings"] for kind, t in per_teacher.items()},
    "wall_s": time.perf_counter() - start,
    "cpu_s": time.process_time() - cpu_start,
  }


def rows(records: list[dict], kind: str, method: str) -> list[dict]:
  """The records of teacher `kind` and `method`, in K order."""
  return [r for r in records if r["teacher"] == kind and r["method"] == method]


_SHORT = {"learned": "rule", "online_backprop": "sgd", "hebbian": "hebb", "hebbian_decay": "hebd",
          "pseudo_inverse": "pinv"}  # fmt: skip


def format_table(result: dict) -> str:
  """Recall and generalisation bit accuracy per teacher, K and method; the rule's generalisation minus
  SGD's over the same episodes with its 95% interval (1.96 standard errors); SGD's tuned step size."""
  records = result["records"]
  methods = list(dict.fromkeys(r["method"] for r in records))
  lines = []
  for kind in dict.fromkeys(r["teacher"] for r in records):
    lines.append(
      f"\nteacher {kind}: bit accuracy, {result['num_episodes']} held-out episodes per K; chance 0.5, "
      f"best linear readout {result['linear_ceiling'][kind]:.3f}"
    )
    head = "".join(f"{'rec ' + _SHORT[m]:>10}" for m in methods)
    head += "".join(f"{'gen ' + _SHORT[m]:>10}" for m in methods)
    sgd = "online_backprop" in methods
    lines.append(f"{'K':>4}{head}" + (f"{'gen rule - sgd':>20}{'sgd lr':>8}" if sgd else ""))
    by_method = {m: rows(records, kind, m) for m in methods}
    for i, row in enumerate(by_method["learned"]):
      cells = "".join(f"{by_method[m][i]['recall']:>10.3f}" for m in methods)
      cells += "".join(f"{by_method[m][i]['generalisation']:>10.3f}" for m in methods)
      if sgd:
        r = by_method["online_backprop"][i]
        cells += f"{r['rule_advantage']:>+12.3f} ± {1.96 * r['rule_advantage_se']:.3f}{r['step_size']:>8g}"
      lines.append(f"{row['K']:>4}{cells}")
  return "\n".join(lines)
