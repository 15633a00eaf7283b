r"""The network `experiments.sharding_report` splits over every device mesh: the remember config's
`mesh2d` network (256 neurons, 65,280 synapses; `learned_rules/configs/remember.py`).

  python -m experiments.sharding_report                                   # every mesh of the devices
  python -m experiments.sharding_report --config=learned_rules/configs/sharding_report.py:tiny --steps=1

Its `mesh` block is ignored: the command tries every mesh. Variants: those of remember.py, applied
after `mesh2d` (`:tiny` is seconds).
"""

from learned_rules import config as config_lib
from learned_rules.configs import remember

VARIANTS = remember.VARIANTS


def get_config(variant: str = "") -> config_lib.ConfigDict:
  return remember.get_config(",".join(filter(None, ("mesh2d", variant))))
