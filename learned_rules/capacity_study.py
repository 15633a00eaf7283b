"""The capacity studies: recall against K of learned rules and baselines, across network types, size and
difficulty, every memory of a setting on the very same held-out episodes.

`run(plan, workdir)` runs the studies of a `capacity_plan.Plan` and returns one record per study,
network, rule, N, K and difficulty setting. It meta-trains each learned rule a study needs in
`<workdir>/<run name>/` (resuming one that was interrupted, skipping one that is done), fits the trained
baselines (`capacity_baselines.py`), and keeps every evaluated group of records in `<workdir>/cache.json`
as soon as it is done, so a study that is stopped resumes where it was and a finished one is read back in
seconds. `format_table` reads the records: capacities, and the K at which each memory beats the
key-blind floor.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable

import jax

from learned_rules import (
  capacity_baselines,
  files,
  meta_train,
  network,
  pretrained,
  result_cache,
  trained_baselines,
)
from learned_rules import config as config_lib
from learned_rules import evaluation as evaluate_lib
from learned_rules import metrics as metrics_lib
from learned_rules.capacity_plan import (
  CONTROLS,
  LEARNED,
  LINEAR_BASELINES,
  RANDOM_FEATURES,
  RECURRENT_BASELINES,
  Plan,
  run_name,
  size_rule_config,
  with_setting,
)

# Baselines whose step size the study tunes per K (`capacity_baselines`), each with a spec of its own in
# the plan under its name.
TUNED_BASELINES = ("online_backprop", "random_delta")
# Baselines of the networks study evaluated on every network rather than on the first only: the key-blind
# floor, whose task may differ (the layered networks' longer queries and held keys), and the memories on
# random features, which take the network's hidden layers (a layered network's control: can anything
# store through hidden layers of these sizes?).
PER_NETWORK = ("key_blind", *RANDOM_FEATURES)


class Study:
  """What one invocation shares across studies: trained rules and baselines, the cache, progress."""

  def __init__(self, plan: Plan, workdir: str):
    self.plan, self.workdir = plan, workdir
    self.cache = result_cache.ResultCache(workdir)
    self.start = time.perf_counter()
    self.rules = {}
    self.recurrent = {}
    self.memo = {}
    self.episode_specs = None  # the tasks of the last evaluation's episodes

  def log(self, text: str) -> None:
    print(f"[{time.perf_counter() - self.start:6.0f} s] {text}", flush=True)

  def rule(self, run: str):
    """`(cfg, theta, meta_steps)` of learned rule `run`, meta-trained first where needed."""
    if run not in self.rules:
      cfg = self.plan.rules[run]
      run_dir = files.join(self.workdir, run)
      meta_train.train_and_evaluate(cfg, run_dir, label=f"{run}: ", evaluate=False)
      _, _, state = meta_train.load_run(run_dir)
      steps = int(state.step) + pretrained.init_rule_meta_steps(run_dir, cfg)  # every stage's
      self.rules[run] = (cfg, state.theta, steps)
      self.log(f"rule {run}: {steps} meta steps ({int(state.step)} in this run)")
    return self.rules[run]

  def recurrent_records(self, rule: str, cfg, topo, specs: tuple, key, num_episodes: int, theta):
    """`capacity_baselines.recurrent_records` of recurrent baseline `rule` next to the learned rule
    `theta` on `(cfg, topo)`, fitted once per sweep, seed and size in an invocation."""
    spec = self.plan.recurrent
    size = trained_baselines.param_count(theta)
    hidden, state = capacity_baselines.recurrent_size(rule, spec, cfg, topo, size)
    memo = (specs, config_lib.train_spec(cfg).seed, hidden)
    if memo not in self.recurrent:
      folder = files.join(self.workdir, "recurrent")
      self.recurrent[memo] = capacity_baselines.fit_recurrent(*memo, spec, folder, rule, self.log)
    fit = self.recurrent[memo]
    return capacity_baselines.recurrent_records(fit, specs, key, num_episodes, hidden, state, spec.cell)

  def _evaluate(self, rule: str, cfg, topo, k_values, specs: tuple, key, num_episodes: int, learned):
    """Records of `rule` at every K of `k_values` (tasks `specs`) on the held-out episodes of `key`."""
    # Drop the compiled programs when the episodes change: a study compiles hundreds, and XLA:CPU keeps
    # each mapped until the process ends, which exhausts the memory maps of a long study. The memories
    # of one setting share their episodes (`evaluate.held_out_episodes`), compiled once.
    if specs != self.episode_specs:
      jax.clear_caches()
      self.episode_specs = specs
    if rule not in (*LINEAR_BASELINES, *RECURRENT_BASELINES, *TUNED_BASELINES, *RANDOM_FEATURES):
      # a rule or a control
      return evaluate_lib.recall_vs_k(
        learned[0], topo, config_lib.problem(cfg, topo), k_values, num_episodes, key
      )
    if rule in LINEAR_BASELINES:
      out = capacity_baselines.linear_records(rule, specs, key, num_episodes)
    elif rule in RECURRENT_BASELINES:
      out = self.recurrent_records(rule, cfg, topo, specs, key, num_episodes, learned[0])
    elif rule == "online_backprop":
      spec = self.plan.online_backprop
      out = capacity_baselines.online_backprop_records(
        spec, specs, config_lib.train_spec(cfg).seed, key, num_episodes
      )
    else:  # random features: the hidden layers of the network evaluated
      hidden = capacity_baselines.random_features_hidden(cfg)
      if rule == "random_delta":
        out = capacity_baselines.random_delta_records(
          self.plan.random_delta, specs, config_lib.train_spec(cfg).seed, key, num_episodes, hidden
        )
      elif rule == "random_projection":
        out = capacity_baselines.random_projection_records(specs, key, num_episodes, hidden)
      else:
        inputs = capacity_baselines.random_features_read_inputs(cfg)
        out = capacity_baselines.random_hebbian_records(specs, key, num_episodes, hidden, inputs)
    return [{"K": int(k), **r} for k, r in zip(k_values, out, strict=True)]

  def records(self, meta: dict, cfg, k_values, num_episodes: int, rule: str, learned=None, digest: str = ""):
    """Records of `rule` at every K of `k_values` on `cfg`'s network and task, cached. `learned` is
    `(theta, meta_steps)` for a learned rule (or a control), and for the recurrent baseline the rule
    whose parameter count it matches; `digest` identifies a saved rule's theta (`pretrained.theta_digest`),
    and its records carry it."""
    # The network built from `cfg` itself, so that a memory never runs on another network than its
    # config says (a saved rule's fixed random input synapses, a setting of the difficulty study).
    topo = config_lib.make_topology(cfg)
    key = evaluate_lib.eval_key(config_lib.train_spec(cfg).seed)
    common = {**meta, "rule": rule, **_shape(cfg, topo), "num_episodes": num_episodes}
    if digest:
      common["theta_digest"] = digest
    specs = tuple(config_lib.problem(cfg, topo, num_snippets=int(k)).task for k in k_values)

    def compute() -> list[dict]:
      t0 = time.perf_counter()
      out = self._evaluate(rule, cfg, topo, k_values, specs, key, num_episodes, learned)
      setting = f" {meta['axis']}={meta['value']}" if meta["axis"] else ""
      self.log(
        f"{meta['study']}: {meta['network']} {rule}{setting}: K@0.99 {evaluate_lib.capacity(out, 0.99)}, "
        f"K@0.95 {evaluate_lib.capacity(out, 0.95)} ({time.perf_counter() - t0:.0f} s)"
      )
      return out

    cache_key = {**common, "K": [int(k) for k in k_values]}
    if learned is not None:
      cache_key["meta_steps"] = learned[1]
    if digest:  # a saved rule: its theta and its rule config
      cache_key.update(theta=digest, rule_config=config_lib.as_dict(cfg)["rule"])
    if rule in RECURRENT_BASELINES:
      cache_key[rule] = dataclasses.asdict(self.plan.recurrent)
    elif rule in TUNED_BASELINES:
      cache_key[rule] = dataclasses.asdict(getattr(self.plan, rule))
    if rule in RANDOM_FEATURES:
      cache_key["hidden"] = list(capacity_baselines.random_features_hidden(cfg))
    if rule == "random_hebbian":
      cache_key["with_inputs"] = capacity_baselines.random_features_read_inputs(cfg)
    # The same memory on the same episodes under another label (each difficulty axis passes through
    # the base setting) is evaluated once per invocation.
    same = {k: v for k, v in cache_key.items() if k not in ("study", "axis", "value")}
    plain = config_lib.as_dict(cfg)
    same.update(net=plain["net"], task=plain["task"], seed=plain["seed"])
    same = json.dumps(same, sort_keys=True, default=str)
    if same not in self.memo:
      self.memo[same] = self.cache.get(cache_key, compute)
    else:
      self.cache.get(cache_key, lambda: self.memo[same])
    return [{**common, **r} for r in self.memo[same]]

  def rule_and_baselines(self, meta: dict, protocol: str, baseline_names, k_values, num_episodes: int):
    """Records of the learned rule of network `meta["network"]` on `protocol`, and of `baseline_names`,
    on the rule's network moved to the setting `meta["axis"] = meta["value"]` (none if the axis is)."""
    axis, value = meta["axis"], meta["value"]

    def moved(run: str):
      cfg, theta, steps = self.rule(run)
      return (cfg if axis is None else with_setting(cfg, axis, value)), (theta, steps)

    cfg, learned = moved(run_name(meta["network"], protocol))
    out = self.records(meta, cfg, k_values, num_episodes, "learned", learned)
    for baseline in baseline_names:
      if baseline == "hopfield" and protocol != "auto":
        continue  # on `hetero` it is the Hebbian memory itself (no diagonal to drop)
      if baseline in CONTROLS:
        off_cfg, off = moved(run_name(meta["network"], protocol, baseline))
        out += self.records(meta, off_cfg, k_values, num_episodes, baseline, off)
      else:
        out += self.records(meta, cfg, k_values, num_episodes, baseline, learned)
    return out

  def size_records(self, n: int) -> list[dict]:
    """The size study at N = `n`: every rule of `size.rules` and every size baseline, on the same
    episodes, enough of them for `size.min_scored_bits` scored bits at the smallest K."""
    plan, meta = self.plan, _meta("size", "full", "size", n)
    cfg = size_rule_config(plan.size_base, None, n)
    topo = config_lib.make_topology(cfg)
    ks = sorted({max(1, round(m * topo.n_in)) for m in plan.size_k_multiples})
    one = evaluate_lib.scored_bits(config_lib.problem(cfg, topo, num_snippets=ks[0]).task, 1)
    episodes = -(-plan.size_min_scored_bits // one)
    out = []
    for name, saved in plan.size_rules.items():
      if saved is None:  # the study's own rule, trained here
        _, theta, steps = self.rule(run_name("full"))
        out += self.records(meta, cfg, ks, episodes, LEARNED, (theta, steps))
      else:  # on its own kind of network at this size, and the same episodes as every memory here
        rule_cfg = size_rule_config(plan.size_base, saved, n)
        learned = (saved.theta, saved.meta_steps)
        out += self.records(meta, rule_cfg, ks, episodes, name, learned, pretrained.theta_digest(saved.theta))
    for baseline in plan.size_baselines:
      if baseline in CONTROLS:
        off_cfg, off_theta, off_steps = self.rule(run_name("full", "hetero", baseline))
        out += self.records(
          meta, with_setting(off_cfg, "size", n), ks, episodes, baseline, (off_theta, off_steps)
        )
      else:
        out += self.records(meta, cfg, ks, episodes, baseline)
    return out


def _shape(cfg, topo: network.Topology) -> dict:
  """What a record says of the network and task it was evaluated on."""
  shape = {
    "N": topo.num_neurons,
    "synapses": topo.num_synapses,
    "key_bits": topo.n_in,
    "value_bits": topo.n_out,
    "protocol": config_lib.problem(cfg, topo).task.protocol,
  }
  if topo.random_input_synapses > 0:  # fixed random input -> hidden synapses: another network
    shape["random_input_synapses"] = topo.random_input_synapses
  return shape


def _meta(study: str, network_name: str = "full", axis: str | None = None, value=None) -> dict:
  return {"study": study, "network": network_name, "axis": axis, "value": value}


def _units(plan: Plan, s: Study) -> list[tuple[str, str, Callable[[], list[dict]]]]:
  """`(study, setting, records)` of every unit `run` does, in order: a network, the auto setting, a
  size, a difficulty setting; `records()` runs the unit and returns its records."""
  units = []
  if "networks" in plan.studies:
    for i, name in enumerate(plan.networks):
      # Baselines are evaluated once, on the first network; those of `PER_NETWORK` on every network.
      names = plan.baselines if i == 0 else [b for b in plan.baselines if b in PER_NETWORK]
      meta = _meta("networks", name)
      run_network = functools.partial(
        s.rule_and_baselines, meta, "hetero", names, plan.k_values, plan.num_episodes
      )
      units.append(("networks", name, run_network))
  if "auto" in plan.studies:
    run_auto = functools.partial(
      s.rule_and_baselines, _meta("auto"), "auto", plan.baselines, plan.k_values, plan.num_episodes
    )
    units.append(("auto", "full", run_auto))
  units += [("size", f"N={n}", functools.partial(s.size_records, n)) for n in plan.sizes]
  for axis, value in plan.difficulty:
    run_setting = functools.partial(
      s.rule_and_baselines,
      _meta("difficulty", "full", axis, value),
      "hetero",
      plan.difficulty_baselines,
      plan.difficulty_k_values,
      plan.num_episodes,
    )
    units.append(("difficulty", f"{axis}={value}", run_setting))
  return units


def run(plan: Plan, workdir: str) -> list[dict]:
  """Runs the studies of `plan` in `workdir`; returns all their records, those of `networks` first, then
  `auto`, `size` and `difficulty`. Logs a progress line with the time left after each network, size and
  setting (`metrics.StudyProgress`)."""
  files.makedirs(workdir)
  units = _units(plan, Study(plan, workdir))
  progress = metrics_lib.StudyProgress("capacity", len(units), kinds=[study for study, _, _ in units])
  records = []
  for study, setting, unit_records in units:
    records.extend(unit_records())
    progress.done(f"{study} {setting}")
  return records


def groups(records: list[dict], study: str) -> dict[tuple, list[dict]]:
  """Records of `study` grouped by (network, rule, axis, value), in order of appearance."""
  out: dict[tuple, list[dict]] = {}
  for r in records:
    if r["study"] == study:
      out.setdefault((r["network"], r["rule"], r["axis"], r["value"]), []).append(r)
  return out


# A memory "beats the key-blind floor" at a K where its bit accuracy is higher than the floor's on the
# same episodes by more than this; one within it uses the key not measurably.
FLOOR_MARGIN = 0.01


def floor_of(records: list[dict], row: dict) -> float | None:
  """The key-blind floor's bit accuracy on `row`'s episodes (same study, network, setting and K), or
  None if the records hold none."""
  same = ("study", "network", "axis", "value", "K", "N")
  return next(
    (r["bit_accuracy"] for r in records if r["rule"] == "key_blind" and all(r[k] == row[k] for k in same)),
    None,
  )


def above_floor(records: list[dict], rows: list[dict]) -> list[int]:
  """The K of `rows` at which they beat the key-blind floor by more than `FLOOR_MARGIN`."""
  out = []
  for row in rows:
    floor = floor_of(records, row)
    if floor is not None and row["bit_accuracy"] > floor + FLOOR_MARGIN:
      out.append(row["K"])
  return out


def _k_list(ks: list[int], all_ks: list[int]) -> str:
  if not ks:
    return "none"
  return "all" if ks == all_ks else ",".join(str(k) for k in ks)


def format_table(records: list[dict]) -> str:
  """Capacities of every memory, and the K at which each beats the key-blind floor on its episodes."""
  head = f"{'study':<11}{'network':<18}{'rule':<16}{'setting':<16}{'N':>5}{'K@0.99':>8}{'K@0.95':>8}"
  lines = [head + "  above key-blind floor at K"]
  for study in dict.fromkeys(r["study"] for r in records):
    for (network_name, rule, axis, value), rows in groups(records, study).items():
      setting = f"{axis}={value}" if axis else ""
      beats = "" if rule == "key_blind" else _k_list(above_floor(records, rows), [r["K"] for r in rows])
      lines.append(
        f"{study:<11}{network_name:<18}{rule:<16}{setting:<16}{rows[0]['N']:>5}"
        f"{evaluate_lib.capacity(rows, 0.99):>8}{evaluate_lib.capacity(rows, 0.95):>8}  {beats}"
      )
  return "\n".join(lines)
