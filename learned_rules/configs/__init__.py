"""The experiment configs, shipped inside the package so that a command finds them from any folder.

One file per experiment (`remember.py`, `capacity.py`, ...): `get_config(variant)` builds its
`ConfigDict`, and `VARIANTS` maps each variant name (`path.py:tiny`, combinable as `:tiny,auto`) to the
function that applies it. `learned_rules.config` turns a config into the specs the library takes.
"""

from __future__ import annotations

import os

from learned_rules import config as config_lib

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


def path(name: str) -> str:
  """The file of config `name` (e.g. "remember"), wherever the package is installed."""
  return os.path.join(CONFIG_DIR, f"{name}.py")


def apply_variants(cfg, variant: str, variants: dict) -> None:
  """Applies each comma-separated name of `variant` from `variants` to `cfg` in place; an unknown name
  is a `ConfigError` naming the ones there are."""
  for name in filter(None, (part.strip() for part in variant.split(","))):
    if name not in variants:
      raise config_lib.ConfigError(
        "config", f"unknown variant {name!r}; one of {', '.join(sorted(variants)) or '(none)'}"
      )
    variants[name](cfg)
