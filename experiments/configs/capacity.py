r"""Capacity studies: what a learned rule remembers on each network type, against baselines.

  python -m experiments.capacity --config=experiments/configs/capacity.py
  python -m experiments.capacity --config=experiments/configs/capacity.py:quick
  python -m experiments.capacity --config=experiments/configs/capacity.py:tiny --workdir=/tmp/cap

Study `networks`: each network type of `networks` is meta-trained with the `remember` config `base`
(plus the network's overrides), then evaluated at every K of `k_values` on held-out episodes; the
baselines of `baselines` are evaluated on the very same episodes. Variants: `tiny` (seconds, for
tests), `quick` (fewer meta steps and episodes).
"""

import ml_collections

from experiments.configs import remember

NETWORKS = {
  "full": {"net.topology": "full"},
  "layered-1": {"net.topology": "layered", "net.hidden_layers": (32,)},
  "layered-2": {"net.topology": "layered", "net.hidden_layers": (16, 16)},
  "layered_feedback": {"net.topology": "layered_feedback", "net.hidden_layers": (32,)},
  "sparse-0.5": {"net.topology": "sparse", "net.density": 0.5},
  "sparse-0.25": {"net.topology": "sparse", "net.density": 0.25},
}


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.study = "networks"
  cfg.base = remember.get_config("")
  cfg.base.baseline_synapses_off = False
  cfg.networks = ",".join(NETWORKS)  # names from NETWORKS, comma-separated
  cfg.baselines = "hebbian,pseudo_inverse"
  cfg.k_values = (1, 2, 4, 6, 8, 10, 12, 16, 20, 24, 32)
  cfg.num_episodes = 512
  for name in filter(None, variant.split(",")):
    apply_variant(cfg, name)
  return cfg


def apply_variant(cfg: ml_collections.ConfigDict, name: str) -> None:
  """Applies variant `name` (`tiny`, `quick`) to a study config in place."""
  _VARIANTS[name](cfg)


def _tiny(cfg):
  cfg.base = remember.get_config("tiny")
  cfg.base.baseline_synapses_off = False
  cfg.networks = "full,layered-1"
  cfg.k_values = (1, 2, 3)
  cfg.num_episodes = 4


def _quick(cfg):
  cfg.base.train.num_steps = 100
  cfg.k_values = (1, 2, 4, 8, 12, 16, 24, 32)
  cfg.num_episodes = 128


_VARIANTS = {"tiny": _tiny, "quick": _quick}
