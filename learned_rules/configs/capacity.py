r"""Capacity studies: what a learned rule remembers, on which network, against which baselines.

  python -m experiments.capacity                                  # every study, full length
  python -m experiments.capacity --quick                          # every figure, at most 30 min on 2 cores
  python -m experiments.capacity --config=learned_rules/configs/capacity.py:tiny --workdir=/tmp/cap
  python -m experiments.capacity --config.studies=networks,size   # a subset

Every study evaluates on held-out episodes, and every baseline of a study sees the very same episodes
as the learned rule. The studies (`studies`, comma-separated):

- `networks`: the learned rule meta-trained on each network type of `networks` (the `remember`
  config `base` plus the network's overrides of NETWORKS), recall against K, with the baselines.
- `auto`: the `full` network meta-trained on the `auto` protocol (completion from a cue with
  `auto_cue_corruption` of its bits zeroed), recall against K, with the baselines.
- `size`: rules evaluated without retraining on `full` networks of N = `size.sizes` neurons (a quarter
  input, a quarter output, half hidden), up to N = 1024: the saved rules of `size.rules` (shipped names
  or paths; `learned` is the study's own rule meta-trained on `full`, N = 64), every one on the study's
  task; K in multiples of the key width, and at every N enough episodes for `size.min_scored_bits`
  scored bits at the smallest K. Capacity against N, log-log, and recall at K = 3N/16.
- `difficulty`: the same rule evaluated without retraining along each axis of `difficulty.axes`
  (pattern width, delay D, presentation length P, cue corruption), at the K of `difficulty.k_values`.

Baselines (`baselines`): `key_blind` (the best answer that ignores the cue), `hebbian` (with every
synapse the network has), `hopfield` (`hebbian` without the diagonal; `auto` only), `pseudo_inverse`
(learned_rules/baselines.py), `synapses_off` (the `full` network meta-trained with synapse updates off),
`routing` (the same, every synapse's fixed weight state meta-trained as its own parameter),
`recurrent` and `recurrent_state` (GRUs matched to the rule in parameter count and in state size,
trained by back-propagation through time over the study's K, learning rate tuned, several seeds),
`online_backprop` (an ordinary network trained during the episode, step size tuned) and `random_delta`
(fixed random tanh layers of the evaluated network's hidden sizes, drawn per episode, with a readout
learned during the episode by the normalised delta rule, step size tuned; evaluated on every network
of `networks`, whose hidden layers it takes) and `random_projection` (the same random layers, the
readout written by sequential projection: the pseudo-inverse on the random features, reached online;
nothing to tune) and `random_hebbian` (the same random layers and, where the outputs read them, the
key bits, the readout written by the outer product: a Hebbian store on every feature the outputs can
read; nothing to tune) (learned_rules/trained_baselines.py). Layered networks
run with keys held for their latency and with extra, unscored query steps, so that their scored steps
can see the key (`_reachable`). Variants: `tiny` (seconds, for tests), `quick`.
"""

from learned_rules import config as config_lib
from learned_rules import configs
from learned_rules.configs import remember

STUDIES = ("networks", "auto", "size", "difficulty")


def _reachable(hidden_layers: int) -> dict:
  """Task overrides for a network whose key needs L = `hidden_layers` steps to reach the outputs
  (learned_rules/tasks.py, "Latency"): each key shown L steps before its value, and L more query
  steps, unscored, so that R = 2 scored query steps can see the key, as in `full`."""
  return {"task.query_steps": 2 + hidden_layers, "task.hold_for_latency": True}


# Overrides of the `remember` config that make each network type; every one has 16 input and 16
# output neurons, as the base `full` network (64 neurons). Layered networks get the task settings
# under which their scored query steps can see the key.
NETWORKS = {
  "full": {"net.topology": "full"},
  "layered-1": {"net.topology": "layered", "net.hidden_layers": (32,), **_reachable(1)},
  "layered-2": {"net.topology": "layered", "net.hidden_layers": (16, 16), **_reachable(2)},
  "layered_feedback": {"net.topology": "layered_feedback", "net.hidden_layers": (32,), **_reachable(1)},
  "sparse-0.5": {"net.topology": "sparse", "net.density": 0.5},
  "sparse-0.25": {"net.topology": "sparse", "net.density": 0.25},
}

# Difficulty axes: name -> the config field it moves (`width` sets both the key and the value width;
# the hidden neurons make up the rest of the network). Their values are `difficulty.<name>`.
AXES = {
  "width": "net.num_inputs",
  "delay": "task.delay_steps",
  "present": "task.present_steps",
  "corruption": "task.cue_corruption",
}


def get_config(variant: str = "") -> config_lib.ConfigDict:
  cfg = config_lib.ConfigDict()
  cfg.studies = ",".join(STUDIES)
  cfg.base = remember.get_config("")
  cfg.base.baseline_synapses_off = False  # the study trains its own synapses-off rule
  cfg.networks = ",".join(NETWORKS)  # names from NETWORKS, comma-separated
  cfg.baselines = (
    "key_blind,hebbian,hopfield,pseudo_inverse,synapses_off,routing,recurrent,recurrent_state,online_backprop,"
    "random_delta,random_projection,random_hebbian"
  )
  cfg.k_values = (1, 2, 4, 6, 8, 10, 12, 16, 20, 24, 32)
  cfg.num_episodes = 256
  cfg.auto_cue_corruption = 0.25  # as `remember.py:auto`

  cfg.size = config_lib.ConfigDict()
  cfg.size.sizes = (64, 128, 256, 512, 1024)
  # K = multiple x key width (at least 1); 0.75 is K = 3N/16. The largest sets the cost: at N = 1024 a
  # rule runs about 4 x 1.25 x 256 steps of a million synapses per episode.
  cfg.size.k_multiples = (0.25, 0.5, 0.75, 1.0, 1.25)
  cfg.size.min_scored_bits = 30000  # per point; episodes at N: enough for this at the smallest K
  cfg.size.rules = "general,hetero"  # saved rules (names or paths) and/or `learned`, comma-separated
  cfg.size.baselines = "key_blind,hebbian,pseudo_inverse"

  cfg.difficulty = config_lib.ConfigDict()
  cfg.difficulty.axes = ",".join(AXES)
  cfg.difficulty.k_values = (2, 4, 8, 12, 16)
  cfg.difficulty.width = (8, 16, 24)
  cfg.difficulty.delay = (2, 8, 32)
  cfg.difficulty.present = (1, 2, 4)
  cfg.difficulty.corruption = (0.0, 0.125, 0.25, 0.5)
  cfg.difficulty.baselines = "key_blind,hebbian,pseudo_inverse,online_backprop"

  # Trained baselines.
  # `recurrent` and `recurrent_state`: one training run on the mixture of the study's K (step s on K =
  # k_values[s % len(k_values)]), for every learning rate of the grid; the rate whose run recalls best on
  # `tune_episodes` tuning episodes (mean bit accuracy over K) is kept, with `num_seeds` seeds in all.
  cfg.recurrent = config_lib.ConfigDict()
  cfg.recurrent.cell = "gru"  # gru | lstm
  cfg.recurrent.num_steps = 5000  # per run, over all K
  cfg.recurrent.batch_size = 16
  cfg.recurrent.learning_rates = (1e-3, 3e-3, 1e-2)  # Adam
  cfg.recurrent.num_seeds = 3
  cfg.recurrent.tune_episodes = 128
  # `recurrent_state` has as many hidden units as the learned network has state numbers (bodies N x Db
  # plus synapses x Ds: 16,640 for `full`), at most this many. A training step costs about hidden^2: on 2
  # CPU cores, 16,640 units would take ~7 minutes a step (and ~17 GB for parameters, gradients and Adam);
  # 160 keeps the full study's recurrent training (2 tasks x 2 sizes x 5 runs) within about 25 minutes.
  cfg.recurrent.state_hidden_cap = 160
  cfg.online_backprop = config_lib.ConfigDict()
  cfg.online_backprop.hidden = 32  # as the base network's hidden neurons
  cfg.online_backprop.step_sizes = (0.003, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.07, 0.1, 0.2, 0.5, 1.0)
  cfg.online_backprop.tune_episodes = 128
  # `random_delta`: step size of the normalised delta rule, tuned per K on `tune_episodes` episodes of its
  # own (1 stores the current pair exactly; smaller steps average a snippet's presentations). Its hidden
  # layers are those of the network evaluated: `net.hidden_layers` if layered, else `(net.num_hidden,)`.
  cfg.random_delta = config_lib.ConfigDict()
  cfg.random_delta.step_sizes = (0.03, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
  cfg.random_delta.tune_episodes = 128

  configs.apply_variants(cfg, variant, VARIANTS)
  return cfg


def _tiny(cfg):
  cfg.base = remember.get_config("tiny")
  cfg.base.baseline_synapses_off = False
  cfg.networks = "full,layered-1"
  cfg.k_values = (1, 2, 3)
  cfg.num_episodes = 4
  cfg.size.sizes = (12, 16)
  cfg.size.k_multiples = (0.5,)
  cfg.size.min_scored_bits = 16
  cfg.size.rules = "learned"
  cfg.difficulty.axes = "delay"
  cfg.difficulty.delay = (2, 6)
  cfg.difficulty.k_values = (2,)
  cfg.recurrent.num_steps = 4
  cfg.recurrent.tune_episodes = 4
  cfg.recurrent.state_hidden_cap = 8
  cfg.online_backprop.hidden = 4
  cfg.online_backprop.step_sizes = (0.1, 1.0)
  cfg.online_backprop.tune_episodes = 4
  cfg.random_delta.step_sizes = (0.3, 1.0)
  cfg.random_delta.tune_episodes = 4


def _quick(cfg):
  cfg.base.train.num_steps = 100
  cfg.k_values = (1, 2, 4, 8, 16, 32)
  cfg.num_episodes = 64
  cfg.size.sizes = (64, 128, 256, 512)
  cfg.difficulty.k_values = (8,)  # the figure's K; the full study also gives capacities
  cfg.difficulty.corruption = (0.0, 0.25, 0.5)
  cfg.recurrent.num_steps = 2000
  cfg.recurrent.tune_episodes = 64
  cfg.recurrent.state_hidden_cap = 128  # the quick study's recurrent training: about 6 minutes
  cfg.online_backprop.step_sizes = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1)  # where the full study's optimum lay
  cfg.online_backprop.tune_episodes = 64
  cfg.random_delta.tune_episodes = 64


VARIANTS = {"tiny": _tiny, "quick": _quick}
