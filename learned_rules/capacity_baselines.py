"""The capacity study's baselines, each evaluated at every K of a sweep on the learned rule's episodes.

The linear memories (`baselines.py`) need no fitting. The recurrent nets (`trained_baselines.py`) are
sized next to the learned network (`recurrent_size`), trained on the mixture of the sweep's K with the
learning rate tuned and several seeds, each training run kept in the workdir (`fit_recurrent`). Online
backprop and the random-feature delta rule (on the hidden layers of the network evaluated,
`random_features_hidden`) have their step size tuned per K; the random-feature projection, on the same
layers, has nothing to tune. Every fitting key is folded from the rule's
training key with a tag of its own: neither training batches nor evaluation episodes.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable

import jax
import jax.numpy as jnp

from learned_rules import baselines, files, meta_train, network, result_cache, trained_baselines
from learned_rules import config as config_lib
from learned_rules.capacity_plan import OnlineBackpropSpec, RandomDeltaSpec, RecurrentSpec

# Tags of the trained baselines' keys, folded into the run's training key.
_RECURRENT_TAG, _TUNE_TAG, _RECURRENT_TUNE_TAG = 2, 3, 4  # training, online step size tuning, rate tuning


def recurrent_keys(seed: int) -> tuple[jax.Array, jax.Array]:
  """`(training key, tuning key)` of the recurrent baselines of the rule of seed `seed`."""
  base = meta_train.train_key(seed)
  return jax.random.fold_in(base, _RECURRENT_TAG), jax.random.fold_in(base, _RECURRENT_TUNE_TAG)


def recurrent_size(rule: str, spec: RecurrentSpec, cfg, topo: network.Topology, theta_size: int):
  """`(hidden units, state size)` of recurrent baseline `rule` next to the learned network `(cfg, topo)`
  whose rule has `theta_size` meta-parameters. The state size is the numbers the network carries from
  step to step (`trained_baselines.state_size`: bodies and synapses). `recurrent` has as many parameters
  as the rule (`hidden_for_params`); `recurrent_state` as many hidden units as the network has state
  numbers, at most `spec.state_hidden_cap` (a GRU's training step costs about hidden^2)."""
  state = trained_baselines.state_size(topo, config_lib.rule_spec(cfg, topo))
  if rule == "recurrent":
    return trained_baselines.hidden_for_params(theta_size, topo.n_in, topo.n_out, spec.cell), state
  return min(state, int(spec.state_hidden_cap)), state


def fit_recurrent(
  specs: tuple, seed: int, hidden: int, spec: RecurrentSpec, folder: str, name: str, log: Callable
) -> trained_baselines.RecurrentFit:
  """The recurrent baseline of `hidden` units on the sweep `specs` (task specs, one per K), for the rule
  of seed `seed`: one training run on the mixture of its K per learning rate of `spec.learning_rates`,
  the rate that recalls best on tuning episodes kept, `spec.num_seeds` seeds. Every training run is kept
  in `folder` under a name made of everything that shapes it, so a study that is stopped resumes without
  training it again. `name` heads the lines given to `log`."""
  train_key, tune_key = recurrent_keys(seed)
  num_steps, batch_size, clip_norm = int(spec.num_steps), int(spec.batch_size), 1.0
  k_text = ",".join(str(s.num_snippets) for s in specs)

  def train(learning_rate: float, run_seed: int) -> dict:
    fields = (specs, spec.cell, hidden, learning_rate, run_seed, num_steps, batch_size, clip_norm, seed)
    digest = hashlib.sha1(repr((fields, _RECURRENT_TAG)).encode()).hexdigest()[:12]

    def make():
      log(
        f"{name} ({spec.cell}, {hidden} units): learning rate {learning_rate:g}, seed {run_seed}, "
        f"training {num_steps} steps over K = {k_text}"
      )
      return trained_baselines.train_recurrent(
        specs,
        trained_baselines.seed_key(train_key, run_seed),
        hidden=hidden,
        cell=spec.cell,
        num_steps=num_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        clip_norm=clip_norm,
        log_every=max(1, num_steps // 10),
        label=f"{name} {hidden} lr {learning_rate:g} seed {run_seed}: ",
      )[0]

    path = files.join(folder, f"{specs[0].protocol}-{hidden}-{digest}.msgpack")
    return result_cache.load_or_make_params(path, make)

  fit = trained_baselines.fit_recurrent(
    specs,
    train_key,
    tune_key,
    hidden=hidden,
    cell=spec.cell,
    learning_rates=tuple(float(lr) for lr in spec.learning_rates),
    num_seeds=int(spec.num_seeds),
    num_steps=num_steps,
    batch_size=batch_size,
    clip_norm=clip_norm,
    tune_episodes=int(spec.tune_episodes),
    train=train,
  )
  table = ", ".join(f"{lr:g}: {acc:.3f}" for lr, acc in fit.tuning.items())
  log(f"{name} ({hidden} units): learning rate {fit.learning_rate:g} of {{{table}}}")
  return fit


def recurrent_records(
  fit: trained_baselines.RecurrentFit,
  specs: tuple,
  key,
  num_episodes: int,
  hidden: int,
  state: int,
  cell: str,
) -> list[dict]:
  """Metrics of the fitted recurrent baseline `fit` (`hidden` units, next to a network of `state` state
  numbers) at every K of `specs` on the held-out episodes of `key`, one dict per K: `bit_accuracy` and
  `perfect_recall` averaged over the seeds, each seed's (`*_seeds`), and the fit (hidden units,
  parameters, the state size it matches or would match, the chosen learning rate and the tuning table
  `{rate: mean bit accuracy}`)."""
  per_seed = [
    trained_baselines.recall_over_k(params, specs, key, num_episodes, hidden, cell) for params in fit.params
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
    out.append({**means, **{f"{m}_seeds": v for m, v in seeds.items()}, "bit_accuracy_std": spread, **common})
  return out


def _tuned_records(tune, readout, step_sizes, tune_episodes: int, specs: tuple, seed: int, key, num_episodes):
  """Metrics of `readout` at every K of `specs` on the held-out episodes of `key`, its step size the best
  of `step_sizes` for each K by `tune(specs, tune_key, step_sizes, tune_episodes)` on tuning episodes of
  its own (for the rule of seed `seed`), one dict per K with its `step_size`."""
  tune_key = jax.random.fold_in(meta_train.train_key(seed), _TUNE_TAG)
  lrs, _ = tune(specs, tune_key, tuple(step_sizes), tune_episodes)
  out = baselines.evaluate_over_k(readout, jnp.asarray(lrs), specs, key, num_episodes, per_k_args=True)
  return [{**r, "step_size": lr} for r, lr in zip(out, lrs, strict=True)]


def online_backprop_records(spec: OnlineBackpropSpec, specs: tuple, seed: int, key, num_episodes: int):
  """Metrics of online backprop at every K of `specs` on the held-out episodes of `key`, its step size
  tuned per K on episodes of its own (for the rule of seed `seed`), one dict per K with its `step_size`."""
  tune = functools.partial(trained_baselines.tune_online_backprop_over_k, hidden=spec.hidden)
  readout = trained_baselines.online_backprop_readout_fn(spec.hidden)
  return _tuned_records(tune, readout, spec.step_sizes, spec.tune_episodes, specs, seed, key, num_episodes)


def random_features_hidden(cfg) -> tuple[int, ...]:
  """The hidden layers `random_delta` and `random_projection` get next to the network of config `cfg`:
  the layers of a layered topology (`net.hidden_layers`), else one layer of its `net.num_hidden` hidden
  neurons."""
  if cfg.net.topology in ("layered", "layered_feedback"):
    return tuple(int(h) for h in cfg.net.hidden_layers)
  return (int(cfg.net.num_hidden),)


def random_delta_records(
  spec: RandomDeltaSpec, specs: tuple, seed: int, key, num_episodes: int, hidden: tuple[int, ...]
) -> list[dict]:
  """Metrics of fixed random layers of sizes `hidden` with a delta-rule readout at every K of `specs` on
  the held-out episodes of `key`, its step size tuned per K on the tuning episodes of online backprop
  (for the rule of seed `seed`), one dict per K with its `step_size` and `hidden`."""
  hidden = tuple(int(h) for h in hidden)
  tune = functools.partial(trained_baselines.tune_random_delta_over_k, hidden=hidden)
  readout = trained_baselines.random_delta_readout_fn(hidden)
  out = _tuned_records(tune, readout, spec.step_sizes, spec.tune_episodes, specs, seed, key, num_episodes)
  return [{**r, "hidden": list(hidden)} for r in out]


def random_projection_records(specs: tuple, key, num_episodes: int, hidden: tuple[int, ...]) -> list[dict]:
  """Metrics of fixed random layers of sizes `hidden` with a readout written by sequential projection
  (`trained_baselines.random_projection`, nothing to tune) at every K of `specs` on the held-out
  episodes of `key`, one dict per K with its `hidden`."""
  hidden = tuple(int(h) for h in hidden)
  readout = trained_baselines.random_projection_readout_fn(hidden)
  out = baselines.evaluate_over_k(readout, None, specs, key, num_episodes)
  return [{**r, "hidden": list(hidden)} for r in out]


def random_features_read_inputs(cfg) -> bool:
  """Whether the output neurons of config `cfg`'s network receive synapses from its inputs (not a
  layered network): `random_hebbian` then stores on the key bits too."""
  return cfg.net.topology not in ("layered", "layered_feedback")


def random_hebbian_records(
  specs: tuple, key, num_episodes: int, hidden: tuple[int, ...], with_inputs: bool
) -> list[dict]:
  """Metrics of the outer-product memory on fixed random layers of sizes `hidden`, and on the key bits
  too when `with_inputs` (`trained_baselines.random_hebbian`, nothing to tune), at every K of `specs`
  on the held-out episodes of `key`, one dict per K with its `hidden` and `with_inputs`."""
  hidden = tuple(int(h) for h in hidden)
  readout = trained_baselines.random_hebbian_readout_fn(hidden, bool(with_inputs))
  out = baselines.evaluate_over_k(readout, None, specs, key, num_episodes)
  return [{**r, "hidden": list(hidden), "with_inputs": bool(with_inputs)} for r in out]


def linear_records(rule: str, specs: tuple, key, num_episodes: int) -> list[dict]:
  """Metrics of linear memory `rule` (one of `capacity_plan.LINEAR_BASELINES`) at every K of `specs`."""
  return baselines.evaluate_over_k(baselines.READOUT_FNS[rule], None, specs, key, num_episodes)
