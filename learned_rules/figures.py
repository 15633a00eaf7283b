"""Writing the committed figures: small PNGs."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
from PIL import Image


def save_small_png(fig, path: str, colours: int = 64) -> None:
  """Writes `fig` to `path` as a PNG quantised to `colours` colours (a fraction of the bytes of
  matplotlib's own PNG, for figures committed under docs/), and closes it."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  plt.close(fig)
  buffer.seek(0)
  Image.open(buffer).convert("RGB").quantize(colours).save(path, optimize=True)
