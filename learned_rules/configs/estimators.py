r"""Meta-training estimators compared on one task (learned_rules/gradient_estimators.py):

  python -m experiments.estimators                 # the default network, 3 seeds
  python -m experiments.estimators --quick         # a smaller network, 2 seeds (the committed figure)
  python -m experiments.estimators --config=learned_rules/configs/estimators.py:tiny --workdir=/tmp/est

The task is the `streaming` protocol of `remember.py:streaming` (snippets of P = 2 steps, queries of
R = 2 steps, recall the snippet shown d <= Dmax = 4 slots ago); an episode is a stream of `horizon`
steps from a fresh network state. Every estimator meta-trains the same network from the same initial
theta (per seed) and is evaluated on the same held-out streams.

Estimators (`estimators`, comma-separated names of `estimator.<name>`):
- `truncated_8`, `truncated_24`: truncated back-propagation, windows of W = 8 and 24 steps;
- `full`: back-propagation through the whole episode (W = horizon);
- `open_es`: OpenAI-ES on the whole-episode loss, antithetic pairs, forward passes only;
- `pes_24`: persistent ES (Vicol et al. 2021), windows of 24 steps, unbiased under truncation.

Budget: the back-propagation estimators simulate the same number of network steps (`num_steps` x B x W
is the same for each). The two ES estimators are given about the same training CPU time as `full`
instead: counted in simulated steps they would get a handful of generations (every population member
runs its own streams), and evolution's case is that its steps are cheap forward passes.
"""

from learned_rules import config as config_lib
from learned_rules import configs
from learned_rules.configs import remember


def _estimator(kind, window, num_steps, learning_rate=3e-3, batch=16, population=0, std=0.0):
  cfg = config_lib.ConfigDict()
  cfg.kind = kind  # truncated | open_es | pes
  cfg.window = window  # W (truncated, pes); open_es runs whole episodes
  cfg.num_steps = num_steps  # meta steps (generations for ES)
  cfg.learning_rate = learning_rate  # Adam, after clipping the (estimated) gradient at clip_norm
  cfg.batch = batch  # streams per meta step (per population member for ES)
  cfg.population = population
  cfg.std = std  # ES perturbation std
  return cfg


def get_config(variant: str = "") -> config_lib.ConfigDict:
  cfg = config_lib.ConfigDict()
  cfg.seeds = (0, 1, 2)
  cfg.base = remember.get_config("streaming")  # network, rule and task; its train block is unused
  cfg.base.baseline_synapses_off = False
  cfg.horizon = 96  # T: steps of an episode (4 default windows, 24 snippet slots)
  cfg.eval_streams = 128  # held-out streams of `horizon` steps, the same for every estimator
  cfg.eval_points = 10  # evaluations per run, evenly spaced in meta steps (plus one before training)
  cfg.clip_norm = 1.0
  cfg.estimators = "truncated_8,truncated_24,full,open_es,pes_24"
  cfg.estimator = config_lib.ConfigDict()
  # Equal simulated steps for back-propagation: 200 x 16 x 96 = 800 x 16 x 24 = 2400 x 16 x 8.
  cfg.estimator["truncated_8"] = _estimator("truncated", 8, 2400)
  cfg.estimator["truncated_24"] = _estimator("truncated", 24, 800)
  cfg.estimator["full"] = _estimator("truncated", 96, 200)
  cfg.estimator["open_es"] = _estimator("open_es", 96, 300, 1e-2, batch=4, population=16, std=0.01)
  cfg.estimator["pes_24"] = _estimator("pes", 24, 1200, 1e-2, batch=4, population=16, std=0.01)
  configs.apply_variants(cfg, variant, VARIANTS)
  return cfg


def _quick(cfg):
  """A network of 32 neurons (8 in, 8 out, 16 hidden), 2 seeds: about 10 minutes on 2 quiet cores."""
  cfg.seeds = (0, 1)
  cfg.base.net.num_inputs = cfg.base.net.num_outputs = 8
  cfg.base.net.num_hidden = 16
  cfg.eval_streams = 64
  cfg.eval_points = 8
  # 30 x 16 x 96 = 120 x 16 x 24 = 360 x 16 x 8 simulated steps.
  steps = {"truncated_8": 360, "truncated_24": 120, "full": 30, "open_es": 24, "pes_24": 96}
  for name, num_steps in steps.items():
    if name in cfg.estimator:
      cfg.estimator[name].num_steps = num_steps


def _tiny(cfg):
  """Seconds, for tests: the tiny network, episodes of 16 steps, a few meta steps of each estimator."""
  cfg.seeds = (0,)
  cfg.base = remember.get_config("tiny,streaming")
  cfg.base.baseline_synapses_off = False
  cfg.horizon = 16
  cfg.eval_streams = 4
  cfg.eval_points = 2
  cfg.estimators = "truncated_8,full,open_es,pes_8"
  cfg.estimator = config_lib.ConfigDict()
  cfg.estimator["truncated_8"] = _estimator("truncated", 8, 4, batch=2)
  cfg.estimator["full"] = _estimator("truncated", 16, 2, batch=2)
  cfg.estimator["open_es"] = _estimator("open_es", 16, 2, 1e-2, batch=2, population=4, std=0.01)
  cfg.estimator["pes_8"] = _estimator("pes", 8, 4, 1e-2, batch=2, population=4, std=0.01)


VARIANTS = {"quick": _quick, "tiny": _tiny}
