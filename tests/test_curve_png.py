"""learned_rules/curve_png.py: the PNG decodes (with zlib alone), shows the series, survives odd data."""

from __future__ import annotations

import struct
import time
import zlib

import numpy as np
import pytest

from learned_rules import curve_png
from learned_rules.curve_png import Panel

NAN, INF = float("nan"), float("inf")


def decode_png(data: bytes) -> np.ndarray:
  """`[H, W, 3]` pixels of an 8-bit RGB PNG whose rows are unfiltered (what `encode_png` writes),
  checking the signature, every chunk's crc, and the decompressed size."""
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  pos, chunks = 8, []
  while pos < len(data):
    (length,) = struct.unpack_from(">I", data, pos)
    kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
    assert struct.unpack_from(">I", data, pos + 8 + length)[0] == zlib.crc32(kind + body)
    chunks.append((kind, body))
    pos += 12 + length
  assert [kind for kind, _ in chunks][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
  width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
  assert (depth, color_type, interlace) == (8, 2, 0)
  raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
  assert len(raw) == height * (1 + width * 3)
  rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * 3)
  assert (rows[:, 0] == 0).all()  # filter type None on every row
  return rows[:, 1:].reshape(height, width, 3)


def color_mask(img: np.ndarray, color) -> np.ndarray:
  return (img == np.asarray(color, np.uint8)).all(axis=-1)


def training_panels() -> list[Panel]:
  steps = np.arange(0, 1001, 10.0)
  loss = 0.8 * np.exp(-steps / 300) + 0.1
  accuracy = 0.5 + 0.4 * (1 - np.exp(-steps / 250))
  return [
    Panel(
      "loss",
      {"train": np.stack([steps, loss], 1), "eval": list(zip(steps[::20], loss[::20] + 0.05, strict=True))},
    ),
    Panel(
      "recall", {"bit accuracy": np.stack([steps, accuracy], 1)}, references={"chance": 0.5, "key-blind": 0.6}
    ),
  ]


def test_write_curves_writes_a_valid_png(tmp_path):
  start = time.perf_counter()
  path = curve_png.write_curves(tmp_path / "plots" / "curves.png", training_panels(), title="remember:tiny")
  assert time.perf_counter() - start < 2.0
  data = path.read_bytes()
  assert len(data) < 40_000
  img = decode_png(data)
  assert img.shape == (360, 900, 3)
  np.testing.assert_array_equal(img, curve_png.render_curves(training_panels(), title="remember:tiny"))
  assert (img != 255).any(axis=-1).mean() > 0.02  # not blank: axes, text, lines
  series = [curve_png.SERIES_COLORS[0], curve_png.SERIES_COLORS[1]]
  references = [curve_png.REFERENCE_COLORS[0], curve_png.REFERENCE_COLORS[1]]
  for color in series + references:
    assert color_mask(img, color).sum() > 50, color


def test_lines_are_connected_and_upright():
  """A rising diagonal: the series' pixels in the plot form one band from bottom left to top right,
  with no column of the plot between the ends left out."""
  img = curve_png.render_curves([Panel("rise", {"up": [(0, 0), (10, 1)]})], width=400, height=300)
  mask = color_mask(img, curve_png.SERIES_COLORS[0])
  mask[int(0.8 * img.shape[0]) :] = False  # the legend's swatch
  rows, cols = np.nonzero(mask)
  assert rows[cols.argmin()] > rows[cols.argmax()] + 100  # starts low, ends high (rows count down)
  assert set(range(cols.min(), cols.max() + 1)) == set(cols)


def test_panels_side_by_side_share_the_width():
  img = curve_png.render_curves(training_panels(), width=900, height=360)
  cols = np.nonzero(color_mask(img[:280], curve_png.REFERENCE_COLORS[0]))[1]
  assert cols.min() > 450  # the reference lines belong to the second panel only
  cols = np.nonzero(color_mask(img[:280], curve_png.SERIES_COLORS[1]))[1]
  assert cols.max() < 450


@pytest.mark.parametrize(
  "panel",
  [
    Panel("one point", {"loss": [(3, 0.25)]}),
    Panel("nan and inf", {"acc": [(0, 0.5), (1, NAN), (2, 0.7), (3, INF), (4, -INF), (5, 0.6)]}),
    Panel("constant", {"flat": [(0, 0.6), (5, 0.6)], "same point": [(2, 0.0), (2, 0.0)]}),
    Panel("constant zero", {"zero": [(0, 0.0), (9, 0.0)]}),
    Panel("only nan", {"gone": [(NAN, NAN), (1, NAN)]}, references={"nan line": NAN}),
    Panel("empty", {}),
    Panel("big numbers", {"a": [(0, -3e-5), (2.5e5, 1e-5), (1.2e6, 2e-5)]}, xlabel="samples"),
    Panel("far outside ylim", {"diverged": [(0, 0.5), (1, 1e30), (2, -1e300)]}, ylim=(0.0, 1.0)),
    Panel("array input", {"a": np.array([[0.0, 1.0], [1.0, 2.0]])}),
  ],
  ids=lambda panel: panel.title,
)
def test_edge_cases_draw(panel):
  start = time.perf_counter()
  img = decode_png(curve_png.encode_png(curve_png.render_curves([panel], width=450, height=300)))
  assert time.perf_counter() - start < 1.0
  assert (img != 255).any()
  finite = [xy for xy in map(curve_png._points, panel.series.values()) if len(xy)]
  if finite:
    assert color_mask(img[:220], curve_png.SERIES_COLORS[0]).sum() >= 16  # at least a dot


def test_one_point_draws_a_dot():
  img = curve_png.render_curves([Panel("dot", {"x": [(1.0, 2.0)]})], width=300, height=240)
  rows, cols = np.nonzero(color_mask(img[:170], curve_png.SERIES_COLORS[0]))
  assert (np.ptp(rows), np.ptp(cols), len(rows)) == (5, 5, 36)


def test_font_covers_printable_ascii():
  glyphs = curve_png._GLYPHS
  assert glyphs.shape == (95, 9, 5)
  assert not glyphs[0].any() and all(glyphs[i].any() for i in range(1, 95))
  assert len({glyph.tobytes() for glyph in glyphs}) == 95  # no two characters look alike


@pytest.mark.parametrize(
  "lo, hi, max_count, labels",
  [
    (-80.0, 2080.0, 7, ["0", "500", "1000", "1500", "2000"]),
    (0.48, 0.95, 6, ["0.5", "0.6", "0.7", "0.8", "0.9"]),
    (0.45, 0.55, 6, ["0.46", "0.48", "0.50", "0.52", "0.54"]),
    (-1.0, 1.0, 6, ["-1.0", "-0.5", "0.0", "0.5", "1.0"]),
    (-5e4, 1.25e6, 4, ["0", "0.5M", "1M"]),
    (-6e3, 1.56e5, 4, ["0", "50k", "100k", "150k"]),
    (0.0, 3e9, 4, ["0", "1e+09", "2e+09", "3e+09"]),
    (-4e-5, 2.2e-5, 6, ["-4e-05", "-2e-05", "0", "2e-05"]),
  ],
)
def test_tick_labels(lo, hi, max_count, labels):
  assert curve_png._tick_labels(curve_png._ticks(lo, hi, max_count)) == labels


def test_encode_png_round_trip_and_no_panels():
  img = decode_png(curve_png.encode_png(np.full((2, 3, 3), 7, np.uint8)))
  assert img.shape == (2, 3, 3) and (img == 7).all()
  with pytest.raises(ValueError, match="at least one panel"):
    curve_png.render_curves([])
  with pytest.raises(ValueError, match="increasing"):
    curve_png.render_curves([Panel("flat", {"a": [(0, 1)]}, ylim=(1.0, 1.0))])
