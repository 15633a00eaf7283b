"""Online neural update rules, meta-trained to remember snippets of recent experience.

The public API, for use inside other JAX models (shapes in each docstring; `N` neurons, `Db` body and
`Ds` synapse state sizes):

- the rules: `body_update` (one neuron) and `synapse_update` (one synapse), pure functions of the
  meta-parameters `theta` (`init_theta(key, RuleSpec(...))`);
- the network: `make_full`, `make_layered`, `make_sparse` (topologies; `make_topology` from a config's
  `net` block), `init_net_state`, and
  `network_step`, the one function that vmaps the rules over every neuron and synapse;
- `PlasticMemory`, a Flax module holding a network and its rule, with `write`, `read` and `step`, and
  `NNXPlasticMemory`, the same as a Flax NNX module (its state a `MemoryState` variable, a frozen
  rule's theta `FrozenTheta` variables);
- `load_rule` (a shipped rule by name, a run of `experiments.remember`, or a saved rule),
  `available_rules`, `save_rule`, and `Rule`.
"""

from learned_rules.config import make_topology
from learned_rules.memory import PlasticMemory
from learned_rules.network import (
  NetState,
  Topology,
  init_net_state,
  make_full,
  make_layered,
  make_sparse,
  network_step,
)
from learned_rules.nnx_memory import FrozenTheta, MemoryState, NNXPlasticMemory
from learned_rules.pretrained import Rule, RuleLoadError, available_rules, load_rule, save_rule
from learned_rules.rules import RuleSpec, Theta, body_update, init_theta, synapse_update

__version__ = "0.1.0"

__all__ = [
  "FrozenTheta",
  "MemoryState",
  "NNXPlasticMemory",
  "NetState",
  "PlasticMemory",
  "Rule",
  "RuleLoadError",
  "RuleSpec",
  "Theta",
  "Topology",
  "available_rules",
  "body_update",
  "init_net_state",
  "init_theta",
  "load_rule",
  "make_full",
  "make_layered",
  "make_sparse",
  "make_topology",
  "network_step",
  "save_rule",
  "synapse_update",
]
