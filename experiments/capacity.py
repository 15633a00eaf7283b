r"""Capacity studies: recall against K, network type, size and difficulty, against baselines and theory.

  python -m experiments.capacity                  # every study of learned_rules/configs/capacity.py
  python -m experiments.capacity --quick          # every figure at reduced resolution (<= 30 min, 2 cores)
  python -m experiments.capacity --config=learned_rules/configs/capacity.py:tiny --workdir=/tmp/cap

It meta-trains each learned rule a study needs in `<workdir>/<rule>/` (resuming a run that was
interrupted, skipping one that is done), trains the recurrent baseline and tunes the online-backprop
baseline, evaluates everything on the same held-out episodes, and writes:

- `<workdir>/capacity.json`: one record per study, network, rule, N, K and difficulty setting, with the
  bit accuracy and the perfect-recall fraction;
- figures: `recall_vs_k.png` (networks), `auto_recall_vs_k.png`, `capacity_vs_n.png`, `difficulty.png`.

Every evaluated group of records is also kept in `<workdir>/cache.json` as soon as it is done, so a
study that is stopped resumes where it was and a finished one re-plots in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import serialization  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import flagutil  # noqa: E402
from learned_rules import baselines, checkpointing, meta_train, network, trained_baselines  # noqa: E402
from learned_rules import config as config_lib  # noqa: E402
from learned_rules import evaluation as evaluate_lib  # noqa: E402
from learned_rules import metrics as metrics_lib  # noqa: E402
from learned_rules.configs import capacity as capacity_configs  # noqa: E402

_CONFIG = flagutil.define(
  config_flags.DEFINE_config_file, "config", "learned_rules/configs/capacity.py", "Study config."
)
_WORKDIR = flagutil.define(
  flags.DEFINE_string, "workdir", "", "Study folder (default runs/capacity, or runs/capacity-quick)."
)
_QUICK = flagutil.define(
  flags.DEFINE_bool, "quick", False, "Reduced resolution: the config's `quick` variant on top."
)

LINEAR_BASELINES = baselines.BASELINES  # key_blind, hebbian, hopfield, pseudo_inverse
RECURRENT_BASELINES = ("recurrent", "recurrent_state")  # parameter-matched and state-matched GRUs
BASELINES = (*LINEAR_BASELINES, "synapses_off", "routing", *RECURRENT_BASELINES, "online_backprop")
# Keys of the trained baselines, folded into the run's training key: disjoint from evaluation keys.
_RECURRENT_TAG, _TUNE_TAG = 2, 3


def _names(text: str) -> list[str]:
  return [n for n in (s.strip() for s in text.split(",")) if n]


def network_config(study, name: str) -> ml_collections.ConfigDict:
  """The `remember` config of one network of the study: `study.base` with the network's overrides."""
  if name not in capacity_configs.NETWORKS:
    raise config_lib.ConfigError(
      "networks", f"unknown network {name!r}; one of {list(capacity_configs.NETWORKS)}"
    )
  cfg = config_lib.with_overrides(study.base, capacity_configs.NETWORKS[name])
  cfg.eval.k_values = tuple(study.k_values)
  cfg.eval.num_episodes = study.num_episodes
  return cfg


# Rules meta-trained as controls: the same network with synapse updates off, its synapses at the learned
# per-type-pair state plus fresh noise (`synapses_off`) or each at a meta-trained weight state of its own
# (`routing`: a trained recurrent network of the same wiring).
CONTROLS = ("synapses_off", "routing")


def rule_config(study, name: str, protocol: str = "hetero", control: str | None = None):
  """`(run name, config)` of a learned rule: network `name` on `protocol`, or a control of `CONTROLS`."""
  cfg = network_config(study, name)
  if protocol == "auto":
    cfg.task.protocol = "auto"
    cfg.task.cue_corruption = float(study.auto_cue_corruption)
  if control is not None:
    cfg.net.synapse_updates = False
    cfg.net.trained_synapses = control == "routing"
  run = name + ("-auto" if protocol == "auto" else "") + (f"-{control}" if control else "")
  return run, cfg


def with_setting(cfg, axis: str, value) -> ml_collections.ConfigDict:
  """`cfg` moved along a difficulty axis (`size` for the network size N, or one of `AXES`)."""
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  if axis == "size":  # a quarter input, a quarter output, half hidden, like the 16/16/32 base
    cfg.net.num_inputs = cfg.net.num_outputs = value // 4
    cfg.net.num_hidden = value - 2 * (value // 4)
  elif axis == "width":
    total = cfg.net.num_inputs + cfg.net.num_outputs + cfg.net.num_hidden
    cfg.net.num_inputs = cfg.net.num_outputs = value
    cfg.net.num_hidden = total - 2 * value
  else:
    cfg = config_lib.with_overrides(cfg, {capacity_configs.AXES[axis]: value})
  return cfg


def validate(study) -> dict[str, ml_collections.ConfigDict]:
  """Every learned rule's config, and every evaluated setting's, checked before anything runs."""
  studies = _names(study.studies)
  for name in studies:
    if name not in capacity_configs.STUDIES:
      raise config_lib.ConfigError("studies", f"unknown study {name!r}; one of {capacity_configs.STUDIES}")
  baseline_lists = {
    "baselines": _names(study.baselines),
    "size.baselines": _names(study.size.baselines),
    "difficulty.baselines": _names(study.difficulty.baselines),
  }
  for field, names in baseline_lists.items():
    for name in names:
      if name not in BASELINES:
        raise config_lib.ConfigError(field, f"unknown baseline {name!r}; one of {BASELINES}")
  for field, ks in (("k_values", study.k_values), ("difficulty.k_values", study.difficulty.k_values)):
    if not ks or any(int(k) < 1 for k in ks):
      raise config_lib.ConfigError(field, "needs at least one K, each >= 1")
  if not study.size.sizes or any(int(n) < 8 for n in study.size.sizes):
    raise config_lib.ConfigError("size.sizes", "needs at least one N, each >= 8")
  if not study.size.k_multiples or any(m <= 0 for m in study.size.k_multiples):
    raise config_lib.ConfigError("size.k_multiples", "needs at least one multiple, each > 0")
  for axis in _names(study.difficulty.axes):
    if axis not in capacity_configs.AXES:
      raise config_lib.ConfigError(
        "difficulty.axes", f"unknown axis {axis!r}; one of {list(capacity_configs.AXES)}"
      )
  if study.recurrent.cell not in trained_baselines.CELLS:
    raise config_lib.ConfigError("recurrent.cell", f"one of {trained_baselines.CELLS}")
  for field in ("num_steps", "batch_size", "num_seeds", "tune_episodes", "state_hidden_cap"):
    config_lib.positive_int(study, f"recurrent.{field}")
  rates = study.recurrent.learning_rates
  if not rates or any(not isinstance(r, (int, float)) or not r > 0 for r in rates):
    raise config_lib.ConfigError(
      "recurrent.learning_rates", f"needs at least one rate, each > 0; got {rates}"
    )
  if not study.online_backprop.step_sizes or any(s < 0 for s in study.online_backprop.step_sizes):
    raise config_lib.ConfigError("online_backprop.step_sizes", "needs at least one step size, each >= 0")

  cfgs = {}
  networks = _names(study.networks) if "networks" in studies else []
  if {"size", "difficulty"} & set(studies) and "full" not in networks:
    networks.append("full")  # their rule
  for name in networks:
    run, cfgs[run] = rule_config(study, name)
  if "auto" in studies:
    run, cfgs[run] = rule_config(study, "full", "auto")
  # The synapses-off rule of each protocol whose studies compare with it.
  uses = {"networks": ("baselines", "hetero"), "auto": ("baselines", "auto")}
  uses.update({"size": ("size.baselines", "hetero"), "difficulty": ("difficulty.baselines", "hetero")})
  for name in studies:
    field, protocol = uses[name]
    for control in CONTROLS:
      if control in baseline_lists[field]:
        run, cfgs[run] = rule_config(study, "full", protocol, control)
  for cfg in cfgs.values():
    config_lib.validate(cfg)
  for axis, value in _settings(study, studies):
    config_lib.validate(with_setting(rule_config(study, "full")[1], axis, value))
  return cfgs


def _settings(study, studies) -> list[tuple[str, object]]:
  out = [("size", int(n)) for n in study.size.sizes] if "size" in studies else []
  if "difficulty" in studies:
    out += [(a, v) for a in _names(study.difficulty.axes) for v in study.difficulty[a]]
  return out


class Cache:
  """Evaluated groups of records, kept in `<workdir>/cache.json` (written atomically after each)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "cache.json")
    self.entries = {}
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.entries = json.load(f)

  def get(self, key: dict, compute) -> list[dict]:
    text = json.dumps(key, sort_keys=True)
    if text not in self.entries:
      self.entries[text] = compute()
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        json.dump(self.entries, f)
      os.replace(tmp, self.path)
    return self.entries[text]


class _Study:
  """What one invocation shares across studies: trained rules and baselines, the cache, progress."""

  def __init__(self, study, workdir: str, cfgs: dict):
    self.study, self.workdir, self.cfgs = study, workdir, cfgs
    self.cache = Cache(workdir)
    self.start = time.perf_counter()
    self.rules = {}
    self.recurrent = {}
    self.memo = {}
    self.episode_specs = None  # the tasks of the last evaluation's episodes

  def log(self, text: str) -> None:
    print(f"[{time.perf_counter() - self.start:6.0f} s] {text}", flush=True)

  def rule(self, run: str):
    """`(cfg, topo, theta, meta_steps)` of learned rule `run`, meta-trained first where needed."""
    if run not in self.rules:
      cfg = self.cfgs[run]
      run_dir = os.path.join(self.workdir, run)
      meta_train.train_and_evaluate(cfg, run_dir, label=f"{run}: ", evaluate=False)
      _, topo, state = meta_train.load_run(run_dir)
      self.rules[run] = (cfg, topo, state.theta, int(state.step))
      self.log(f"rule {run}: {int(state.step)} meta steps")
    return self.rules[run]

  # Key of the recurrent baselines' learning-rate tuning episodes, folded into the run's training key
  # like `_RECURRENT_TAG` and `_TUNE_TAG`: neither training batches nor evaluation episodes.
  _RECURRENT_TUNE_TAG = 4

  @staticmethod
  def recurrent_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """`(training key, tuning key)` of the recurrent baselines of the rule of seed `seed`."""
    base = meta_train.train_key(seed)
    return jax.random.fold_in(base, _RECURRENT_TAG), jax.random.fold_in(base, _Study._RECURRENT_TUNE_TAG)

  def recurrent_size(self, rule: str, cfg, topo, theta_size: int) -> tuple[int, int]:
    """`(hidden units, state size)` of recurrent baseline `rule` next to the learned network `(cfg, topo)`
    whose rule has `theta_size` meta-parameters. The state size is the numbers the network carries from
    step to step (`trained_baselines.state_size`: bodies and synapses). `recurrent` has as many parameters
    as the rule (`hidden_for_params`); `recurrent_state` as many hidden units as the network has state
    numbers, at most `recurrent.state_hidden_cap` (a GRU's training step costs about hidden^2)."""
    rc = self.study.recurrent
    state = trained_baselines.state_size(topo, config_lib.rule_spec(cfg, topo))
    if rule == "recurrent":
      return trained_baselines.hidden_for_params(theta_size, topo.n_in, topo.n_out, rc.cell), state
    return min(state, int(rc.state_hidden_cap)), state

  def recurrent_params(self, specs: tuple, seed: int, hidden: int, name: str = "recurrent"):
    """`trained_baselines.RecurrentFit` of the recurrent baseline of `hidden` units on the sweep `specs`
    (one training run on the mixture of its K, the learning rate of `recurrent.learning_rates` that
    recalls best on tuning episodes, `recurrent.num_seeds` seeds), for the rule of seed `seed`. Every
    training run is kept in the workdir under a name made of everything that shapes it, so a study that
    is stopped resumes without training it again. `name` heads the log lines."""
    memo = (specs, seed, hidden)
    if memo not in self.recurrent:
      rc = self.study.recurrent
      train_key, tune_key = self.recurrent_keys(seed)
      num_steps, batch_size, clip_norm = int(rc.num_steps), int(rc.batch_size), 1.0
      k_text = ",".join(str(s.num_snippets) for s in specs)

      def train(learning_rate: float, run_seed: int) -> dict:
        fields = (specs, rc.cell, hidden, learning_rate, run_seed, num_steps, batch_size, clip_norm, seed)
        digest = hashlib.sha1(repr((fields, _RECURRENT_TAG)).encode()).hexdigest()[:12]
        path = os.path.join(self.workdir, "recurrent", f"{specs[0].protocol}-{hidden}-{digest}.msgpack")
        if os.path.exists(path):
          with open(path, "rb") as f:
            return serialization.msgpack_restore(f.read())
        self.log(
          f"{name} ({rc.cell}, {hidden} units): learning rate {learning_rate:g}, seed {run_seed}, "
          f"training {num_steps} steps over K = {k_text}"
        )
        params, _ = trained_baselines.train_recurrent(
          specs,
          trained_baselines.seed_key(train_key, run_seed),
          hidden=hidden,
          cell=rc.cell,
          num_steps=num_steps,
          batch_size=batch_size,
          learning_rate=learning_rate,
          clip_norm=clip_norm,
          log_every=max(1, num_steps // 10),
          label=f"{name} {hidden} lr {learning_rate:g} seed {run_seed}: ",
        )
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "wb") as f:
          f.write(serialization.to_bytes(params))
        os.replace(path + ".tmp", path)
        return params

      self.recurrent[memo] = trained_baselines.fit_recurrent(
        specs,
        train_key,
        tune_key,
        hidden=hidden,
        cell=rc.cell,
        learning_rates=tuple(float(lr) for lr in rc.learning_rates),
        num_seeds=int(rc.num_seeds),
        num_steps=num_steps,
        batch_size=batch_size,
        clip_norm=clip_norm,
        tune_episodes=int(rc.tune_episodes),
        train=train,
      )
      fit = self.recurrent[memo]
      table = ", ".join(f"{lr:g}: {acc:.3f}" for lr, acc in fit.tuning.items())
      self.log(f"{name} ({hidden} units): learning rate {fit.learning_rate:g} of {{{table}}}")
    return self.recurrent[memo]

  def recurrent_records(
    self, rule: str, cfg, topo, specs: tuple, key, num_episodes: int, theta
  ) -> list[dict]:
    """Metrics of recurrent baseline `rule` (`recurrent` or `recurrent_state`) at every K of `specs` on
    the held-out episodes of `key`, one dict per K: `bit_accuracy` and `perfect_recall` averaged over the
    seeds, each seed's (`*_seeds`), and the fit (hidden units, parameters, the state size it matches or
    would match, the chosen learning rate and the tuning table `{rate: mean bit accuracy}`)."""
    rc = self.study.recurrent
    hidden, state = self.recurrent_size(rule, cfg, topo, trained_baselines.param_count(theta))
    fit = self.recurrent_params(specs, cfg.seed, hidden, rule)
    per_seed = [
      trained_baselines.recall_over_k(params, specs, key, num_episodes, hidden, rc.cell)
      for params in fit.params
    ]
    common = {
      "hidden": hidden,
      "params": trained_baselines.param_count(fit.params[0]),
      "state_size": state,
      "learning_rate": fit.learning_rate,
      "tuning": {f"{lr:g}": acc for lr, acc in fit.tuning.items()},
      "train_k": [s.num_snippets for s in specs],
    }
    out = []
    for i in range(len(specs)):
      seeds = {m: [float(r[i][m]) for r in per_seed] for m in ("bit_accuracy", "perfect_recall")}
      means = {m: sum(v) / len(v) for m, v in seeds.items()}
      spread = float(jnp.std(jnp.asarray(seeds["bit_accuracy"])))
      out.append(
        {**means, **{f"{m}_seeds": v for m, v in seeds.items()}, "bit_accuracy_std": spread, **common}
      )
    return out

  def records(self, meta: dict, cfg, topo, k_values, num_episodes: int, rule: str, learned=None):
    """Records of `rule` at every K of `k_values` on `cfg`'s task, cached. `learned` is
    `(theta, meta_steps)` for a learned rule (or the synapses-off one), and for the recurrent
    baseline the rule whose parameter count it matches."""
    key = evaluate_lib.eval_key(cfg.seed)
    common = {
      **meta,
      "rule": rule,
      "N": topo.num_neurons,
      "synapses": topo.num_synapses,
      "key_bits": topo.n_in,
      "value_bits": topo.n_out,
      "protocol": cfg.task.protocol,
      "num_episodes": num_episodes,
    }

    specs = tuple(evaluate_lib.problem_from_config(cfg, topo, num_snippets=int(k)).task for k in k_values)

    def baseline_records() -> list[dict]:
      if rule in LINEAR_BASELINES:
        return baselines.evaluate_over_k(baselines.READOUT_FNS[rule], None, specs, key, num_episodes)
      if rule in RECURRENT_BASELINES:
        return self.recurrent_records(rule, cfg, topo, specs, key, num_episodes, learned[0])
      ob = self.study.online_backprop
      tune_key = jax.random.fold_in(meta_train.train_key(cfg.seed), _TUNE_TAG)
      lrs, _ = trained_baselines.tune_online_backprop_over_k(
        specs, tune_key, tuple(ob.step_sizes), ob.tune_episodes, ob.hidden
      )
      readout = trained_baselines.online_backprop_readout_fn(ob.hidden)
      out = baselines.evaluate_over_k(readout, jnp.asarray(lrs), specs, key, num_episodes, per_k_args=True)
      return [{**r, "step_size": lr} for r, lr in zip(out, lrs, strict=True)]

    def compute() -> list[dict]:
      t0 = time.perf_counter()
      # Drop the compiled programs when the episodes change: a study compiles hundreds, and XLA:CPU
      # keeps each mapped until the process ends, which exhausts the memory maps of a long study. The
      # memories of one setting share their episodes (`evaluate.held_out_episodes`), compiled once.
      if specs != self.episode_specs:
        jax.clear_caches()
        self.episode_specs = specs
      if rule in ("learned", *CONTROLS):
        out = evaluate_lib.recall_vs_k(learned[0], topo, cfg, k_values, num_episodes, key)
      else:
        out = [{"K": int(k), **r} for k, r in zip(k_values, baseline_records(), strict=True)]
      setting = f" {meta['axis']}={meta['value']}" if meta["axis"] else ""
      self.log(
        f"{meta['study']}: {meta['network']} {rule}{setting}: K@0.99 {evaluate_lib.capacity(out, 0.99)}, "
        f"K@0.95 {evaluate_lib.capacity(out, 0.95)} ({time.perf_counter() - t0:.0f} s)"
      )
      return out

    cache_key = {**common, "K": [int(k) for k in k_values]}
    if learned is not None:
      cache_key["meta_steps"] = learned[1]
    if rule in (*RECURRENT_BASELINES, "online_backprop"):
      cache_key[rule] = self.study["recurrent" if rule in RECURRENT_BASELINES else rule].to_dict()
    # The same memory on the same episodes under another label (each difficulty axis passes through
    # the base setting) is evaluated once per invocation.
    same = {k: v for k, v in cache_key.items() if k not in ("study", "axis", "value")}
    same.update(net=cfg.net.to_dict(), task=cfg.task.to_dict(), seed=cfg.seed)
    same = json.dumps(same, sort_keys=True, default=str)
    if same not in self.memo:
      self.memo[same] = self.cache.get(cache_key, compute)
    else:
      self.cache.get(cache_key, lambda: self.memo[same])
    return [{**common, **r} for r in self.memo[same]]


def _rule_and_baselines(
  s: _Study,
  study_name: str,
  network_name: str,
  protocol: str,
  baseline_names,
  k_values,
  num_episodes,
  setting=None,
) -> list[dict]:
  """Records of the learned rule of `network_name` on `protocol`, and of `baseline_names`, on the
  rule's network moved to `setting` (`(axis, value)`, or None)."""
  axis, value = setting or (None, None)
  meta = {"study": study_name, "network": network_name, "axis": axis, "value": value}

  def moved(run: str):
    cfg, topo, theta, steps = s.rule(run)
    if setting is not None:
      cfg = with_setting(cfg, axis, value)
      topo = network.make_topology(cfg.net)
    return cfg, topo, (theta, steps)

  cfg, topo, learned = moved(rule_config(s.study, network_name, protocol)[0])
  out = s.records(meta, cfg, topo, k_values, num_episodes, "learned", learned)
  for baseline in baseline_names:
    if baseline == "hopfield" and protocol != "auto":
      continue  # on `hetero` it is the Hebbian memory itself (no diagonal to drop)
    if baseline in CONTROLS:
      off_cfg, off_topo, off = moved(rule_config(s.study, network_name, protocol, baseline)[0])
      out += s.records(meta, off_cfg, off_topo, k_values, num_episodes, baseline, off)
    else:
      out += s.records(meta, cfg, topo, k_values, num_episodes, baseline, learned)
  return out


def run(study, workdir: str) -> list[dict]:
  """Runs every study of `study.studies`; returns all records (also in `<workdir>/capacity.json`)."""
  cfgs = validate(study)
  os.makedirs(workdir, exist_ok=True)
  s = _Study(study, workdir, cfgs)
  studies = _names(study.studies)
  baseline_names = _names(study.baselines)
  records = []
  if "networks" in studies:
    for i, name in enumerate(_names(study.networks)):
      # Baselines are evaluated once, on the first network; the key-blind floor on every network, whose
      # task may differ (the layered networks' longer queries and held keys).
      names = baseline_names if i == 0 else [b for b in baseline_names if b == "key_blind"]
      records += _rule_and_baselines(s, "networks", name, "hetero", names, study.k_values, study.num_episodes)
  if "auto" in studies:
    records += _rule_and_baselines(
      s, "auto", "full", "auto", baseline_names, study.k_values, study.num_episodes
    )
  if "size" in studies:
    for n in study.size.sizes:
      topo = network.make_topology(with_setting(s.cfgs["full"], "size", int(n)).net)
      ks = sorted({max(1, round(m * topo.n_in)) for m in study.size.k_multiples})
      episodes = min(study.num_episodes, max(8, study.size.episode_synapse_budget // topo.num_synapses))
      records += _rule_and_baselines(
        s, "size", "full", "hetero", _names(study.size.baselines), ks, episodes, ("size", int(n))
      )
  if "difficulty" in studies:
    for axis in _names(study.difficulty.axes):
      for value in study.difficulty[axis]:
        records += _rule_and_baselines(
          s,
          "difficulty",
          "full",
          "hetero",
          _names(study.difficulty.baselines),
          study.difficulty.k_values,
          study.num_episodes,
          (axis, value),
        )
  with open(os.path.join(workdir, "capacity.json"), "w") as f:
    json.dump({"studies": studies, "config": study.to_dict(), "records": records}, f, indent=2)
  figures = plot_all(records, workdir, study)
  print(format_table(records))
  s.log(f"done; records in {workdir}/capacity.json, figures {', '.join(figures)}")
  return records


def _groups(records: list[dict], study: str) -> dict[tuple, list[dict]]:
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
    for (network_name, rule, axis, value), rows in _groups(records, study).items():
      setting = f"{axis}={value}" if axis else ""
      beats = "" if rule == "key_blind" else _k_list(above_floor(records, rows), [r["K"] for r in rows])
      lines.append(
        f"{study:<11}{network_name:<18}{rule:<16}{setting:<16}{rows[0]['N']:>5}"
        f"{evaluate_lib.capacity(rows, 0.99):>8}{evaluate_lib.capacity(rows, 0.95):>8}  {beats}"
      )
  return "\n".join(lines)


def plot_all(records: list[dict], workdir: str, study) -> list[str]:
  """Writes every figure the records allow; returns their file names."""
  made = []
  for name, fn, path in (
    ("networks", plot_recall_vs_k, "recall_vs_k.png"),
    ("auto", plot_recall_vs_k, "auto_recall_vs_k.png"),
    ("size", plot_capacity_vs_n, "capacity_vs_n.png"),
    ("difficulty", plot_difficulty, "difficulty.png"),
  ):
    rows = [r for r in records if r["study"] == name]
    if rows:
      fn(rows, os.path.join(workdir, path), study)
      made.append(path)
  return made


def plot_recall_vs_k(records: list[dict], path: str, study=None) -> None:
  fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
  ax.set_prop_cycle(color=plt.cm.tab20.colors[::2] + plt.cm.tab20.colors[1::2])  # 20 distinct curves
  floor_drawn = False
  for (network_name, rule, _, _), rows in _groups(records, records[0]["study"]).items():
    ks, accuracy = [r["K"] for r in rows], [r["bit_accuracy"] for r in rows]
    if rule == "key_blind":  # one curve: the floor's expectation is the same on every network's task
      if not floor_drawn:
        ax.plot(ks, accuracy, color="black", lw=1.6, ls="-.", label="key-blind floor", zorder=5)
        floor_drawn = True
      continue
    label = network_name if rule == "learned" else rule.replace("_", " ")
    ax.plot(ks, accuracy, "o-" if rule == "learned" else "s--", label=label)
  ax.axhline(0.5, color="gray", lw=0.8, ls=":")
  ax.text(ax.get_xlim()[1], 0.5, "chance ", fontsize=7, color="gray", ha="right", va="bottom")
  # Theory for a memory of n-bit keys: Hebbian about 0.14 n (Hopfield, full cue), Cover/Gardner 2 n.
  n = records[0]["key_bits"]
  for k, text in ((0.14 * n, "0.14 n Hebbian"), (2 * n, "2 n Cover/Gardner")):
    if k <= max(r["K"] for r in records):
      ax.axvline(k, color="gray", lw=0.8, ls="--")
      ax.text(k, 0.52, f" {text}", fontsize=7, color="gray", rotation=90, va="bottom")
  ax.set_xlabel("K, snippets stored per episode")
  ax.set_ylabel("held-out recall bit accuracy")
  ax.set_title(f"{records[0]['protocol']}, N = {records[0]['N']}, {n}-bit keys", fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def plot_capacity_vs_n(records: list[dict], path: str, study=None) -> None:
  """Capacity (K at 0.99 and 0.95) against N, and stored bits per synapse at the 0.95 point."""
  fig, (ax_k, ax_s) = plt.subplots(1, 2, figsize=(9, 3.8), dpi=100)
  by_rule: dict[str, list] = {}
  for (_, rule, _, n), rows in _groups(records, "size").items():
    by_rule.setdefault(rule, []).append((n, rows))
  for i, (rule, points) in enumerate(by_rule.items()):
    ns = [n for n, _ in points]
    color = f"C{i}"
    for threshold, style in ((0.99, "o-"), (0.95, "s--")):
      ks = [evaluate_lib.capacity(rows, threshold) for _, rows in points]
      ax_k.plot(ns, ks, style, color=color, label=f"{rule.replace('_', ' ')}, {threshold}")
    bits = [
      evaluate_lib.capacity(rows, 0.95) * rows[0]["value_bits"] / rows[0]["synapses"] for _, rows in points
    ]
    ax_s.plot(ns, bits, "s--", color=color, label=rule.replace("_", " "))
  # What linear growth would give: the rule's 0.95 capacity at its training size, scaled by N.
  if "learned" in by_rule and study is not None:
    train_n = study.base.net.num_inputs + study.base.net.num_outputs + study.base.net.num_hidden
    anchor = [evaluate_lib.capacity(rows, 0.95) for n, rows in by_rule["learned"] if n == train_n]
    if anchor and anchor[0] > 0:
      ns = [n for n, _ in by_rule["learned"]]
      ax_k.plot(ns, [anchor[0] * n / train_n for n in ns], ":", color="gray", label="linear in N")
  for ax in (ax_k, ax_s):
    ax.set_xscale("log", base=2)
    sizes = sorted({n for points in by_rule.values() for n, _ in points})
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("N, neurons (a quarter of them input, a quarter output)")
  ax_k.set_yscale("symlog", linthresh=1, base=2)
  ax_k.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
  ax_k.set_ylim(bottom=-0.1)
  ax_k.set_ylabel("capacity K at bit accuracy 0.99 / 0.95")
  ax_s.set_ylabel("stored value bits per synapse at 0.95")
  ax_k.legend(fontsize=7)
  ax_s.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def plot_difficulty(records: list[dict], path: str, study=None) -> None:
  """Bit accuracy at the training K (or the nearest evaluated) along each difficulty axis."""
  axes_names = list(dict.fromkeys(r["axis"] for r in records))
  fig, axes = plt.subplots(1, len(axes_names), figsize=(3.2 * len(axes_names), 3.4), dpi=100, squeeze=False)
  train_k = study.base.task.num_snippets if study is not None else 8
  ks = sorted({r["K"] for r in records})
  k = min(ks, key=lambda x: abs(x - train_k))
  for ax, axis in zip(axes[0], axes_names, strict=True):
    rules = list(dict.fromkeys(r["rule"] for r in records if r["axis"] == axis))
    for rule in rules:
      rows = [r for r in records if r["axis"] == axis and r["rule"] == rule and r["K"] == k]
      ax.plot(
        [r["value"] for r in rows],
        [r["bit_accuracy"] for r in rows],
        "o-" if rule == "learned" else "s--",
        label=rule.replace("_", " "),
      )
    ax.set_xlabel(
      {
        "width": "key and value bits",
        "delay": "delay D",
        "present": "presentation steps P",
        "corruption": "cue bits zeroed",
      }.get(axis, axis)
    )
    ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax.set_ylim(0.45, 1.02)
  axes[0][0].set_ylabel(f"bit accuracy at K = {k}")
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  metrics_lib.quiet_library_logs()
  study = _CONFIG.value
  if _QUICK.value:
    study = flagutil.with_variant(study, capacity_configs.apply_variant, "quick")
  workdir = _WORKDIR.value or os.path.join("runs", "capacity-quick" if _QUICK.value else "capacity")
  try:
    run(study, workdir)
  except (config_lib.ConfigError, checkpointing.IncompatibleCheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
