"""Writing the committed figures: small PNGs."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
from PIL import Image

from learned_rules import files


def save_small_png(fig, path: str, colours: int = 64) -> None:
  """Writes `fig` to `path` as a PNG quantised to `colours` colours (a fraction of the bytes of
  matplotlib's own PNG, for figures committed under docs/), and closes it."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  plt.close(fig)
  buffer.seek(0)
  small = io.BytesIO()
  Image.open(buffer).convert("RGB").quantize(colours).save(small, format="png", optimize=True)
  files.write_bytes(path, small.getvalue())


def save_png(fig, path: str) -> None:
  """Writes `fig` to `path` (local or remote: `files`) as matplotlib's PNG, and closes it."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  plt.close(fig)
  files.write_bytes(path, buffer.getvalue())
