"""Training curves as a small PNG, drawn with numpy alone (no matplotlib).

A figure is a row of panels, each an axes box with a title, a few numbered ticks on both axes, an x-axis
label, light grid lines, one connected line per named series, dashed horizontal reference lines (e.g.
chance 0.5, a key-blind floor), and a legend under the axis. Text uses the 5x7 pixel font embedded
below, drawn at twice its size. The PNG is encoded with zlib and written through `etils.epath`, so the
path may be local or remote (`gs://...`).

  panels = [
    Panel("loss", {"meta loss": [(0, 0.9), (100, 0.4), (200, 0.3)]}),
    Panel("recall", {"bit accuracy": recall_points}, references={"chance": 0.5, "key-blind": 0.62}),
  ]
  write_curves(workdir / "curves.png", panels, title="remember:tiny")

`event_file.read_scalars(logdir)` returns tag -> [(step, value)], which is a series as taken here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from etils import epath

# Printable ASCII (32..126), 9 rows of 5 pixels each: rows 0-6 hold capitals and digits (the baseline
# is row 6), rows 7-8 the descenders. One byte per row, two hex digits, the leftmost pixel in bit 4.
_FONT_HEX = (
  "0000000000000000000404040404000400000a0a000000000000000a0a1f0a1f0a0a0000040f140e051e040000181902040813030000"
  "0c12140815120d00000404080000000000000204080808040200000804020202040800000004150e15040000000004041f0404000000"
  "00000000000c0c04080000000e000000000000000000000c0c00000001020408100000000e11131519110e0000040c040404040e0000"
  "0e11010204081f00001f02040201110e000002060a121f020200001f101e0101110e00000608101e11110e00001f0102040808080000"
  "0e11110e11110e00000e11110f01020c0000000c0c000c0c000000000c0c000c0c04080002040810080402000000001f001f00000000"
  "0804020102040800000e11010204000400000e11010d15150e00000e11111f11111100001e11111e11111e00000e11101010110e0000"
  "1c12111111121c00001f10101e10101f00001f10101e10101000000e11101711110f00001111111f11111100000e04040404040e0000"
  "0702020202120c00001112141814121100001010101010101f0000111b151511111100001111191513111100000e11111111110e0000"
  "1e11111e10101000000e11111115120d00001e11111e14121100000f10100e01011e00001f04040404040400001111111111110e0000"
  "11111111110a0400001111111515150a000011110a040a1111000011110a0404040400001f01020408101f00000e08080808080e0000"
  "0010080402010000000e02020202020e0000040a11000000000000000000000000001f0008040200000000000000000e010f110f0000"
  "1010161911111e000000000e1010110e000001010d1311110f000000000e111f100e00000609081c080808000000000f1111110f010e"
  "10101619111111000004000c0404040e000002000602020202120c1010121418141200000c04040404040e000000001a151515150000"
  "00001619111111000000000e1111110e000000001e1111111e101000000f1111110f010100001619101010000000000f100e011e0000"
  "08081c0808090600000000111111130d000000001111110a0400000000111115150a00000000110a040a1100000000111111110f010e"
  "00001f0204081f0000020404080404020000040404040404040000080404020404080000000008150200000000"
)
_GLYPHS = np.unpackbits(np.frombuffer(bytes.fromhex(_FONT_HEX), np.uint8).reshape(95, 9, 1), axis=2)[:, :, 3:]
_SCALE = 2  # font pixels per glyph pixel
_ADVANCE = 6 * _SCALE  # a glyph and one column of space
_LINE = 9 * _SCALE + 4  # a line of text, descenders and a gap included

# Series colours (matplotlib's tab10, less the grey, olive, brown and pink kept for references).
SERIES_COLORS = (
  (31, 119, 180),
  (255, 127, 14),
  (44, 160, 44),
  (214, 39, 40),
  (148, 103, 189),
  (23, 190, 207),
)
REFERENCE_COLORS = ((90, 90, 90), (140, 86, 75), (227, 119, 194), (188, 189, 34))
_INK, _TICK_INK, _GRID, _WHITE = (25, 25, 25), (70, 70, 70), (228, 228, 228), (255, 255, 255)


@dataclasses.dataclass(frozen=True)
class Panel:
  """One axes box. `series`: name -> points, a sequence of (x, y) pairs or an `[T, 2]` array;
  non-finite points are skipped. `references`: name -> y of a dashed horizontal line, labelled in the
  legend with its value. `ylim`: fixed (low, high) y range, else fitted to the data and references."""

  title: str
  series: Mapping[str, Sequence[tuple[float, float]] | np.ndarray]
  references: Mapping[str, float] = dataclasses.field(default_factory=dict)
  xlabel: str = "meta step"
  ylim: tuple[float, float] | None = None


# ------------------------------------------------------------------------------------------------
# Pixels: text, rectangles and lines, each clipped to the image.


def _text_width(text: str) -> int:
  return max(0, len(text) * _ADVANCE - _SCALE)


def _draw_text(img: np.ndarray, x: int, y: int, text: str, color, align: str = "left") -> None:
  """`text` with its top at row `y`; `align` says whether `x` is its left end, centre or right end.
  Characters outside printable ASCII are drawn as `?`."""
  x -= {"left": 0, "center": _text_width(text) // 2, "right": _text_width(text)}[align]
  for i, char in enumerate(text):
    code = ord(char) - 32 if 32 <= ord(char) < 127 else ord("?") - 32
    mask = np.kron(_GLYPHS[code], np.ones((_SCALE, _SCALE), np.uint8)).astype(bool)
    left = x + i * _ADVANCE
    rows, cols = np.nonzero(mask)
    rows, cols = rows + y, cols + left
    keep = (rows >= 0) & (rows < img.shape[0]) & (cols >= 0) & (cols < img.shape[1])
    img[rows[keep], cols[keep]] = color


def _fill(img: np.ndarray, y0: int, y1: int, x0: int, x1: int, color) -> None:
  """Fills rows [y0, y1) and columns [x0, x1)."""
  img[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = color


def _clip_segments(x0, y0, x1, y1, box) -> tuple[np.ndarray, ...]:
  """Liang-Barsky: the segments (x0, y0) -> (x1, y1) cut to `box` = (top, bottom, left, right), and
  which of them meet it at all. Points far outside (a fixed `ylim`) then cost nothing to draw."""
  top, bottom, left, right = box
  dx, dy = x1 - x0, y1 - y0
  t0, t1, keep = np.zeros_like(dx), np.ones_like(dx), np.ones(dx.shape, bool)
  for p, q in ((-dx, x0 - left), (dx, right - x0), (-dy, y0 - top), (dy, bottom - y0)):
    with np.errstate(divide="ignore", invalid="ignore"):
      r = q / p
    t0 = np.where(p < 0, np.maximum(t0, r), t0)
    t1 = np.where(p > 0, np.minimum(t1, r), t1)
    keep &= (p != 0) | (q >= 0)
  keep &= t0 <= t1
  return x0 + t0 * dx, y0 + t0 * dy, x0 + t1 * dx, y0 + t1 * dy, keep


def _draw_polyline(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, color, box, dash: int = 0) -> None:
  """Connects the points (pixel coordinates) with a line two pixels wide, clipped to `box` = (top,
  bottom, left, right) inclusive; `dash` > 0 draws `dash` pixels on, `dash // 2 + 1` off. A single
  point is drawn as a 6x6 square."""
  box = (max(box[0], 0), min(box[1], img.shape[0] - 2), max(box[2], 0), min(box[3], img.shape[1] - 2))
  if len(xs) == 1:
    # A zigzag over five rows: a filled square once thickened.
    xs, ys = np.tile([-2.0, 2.0, 2.0, -2.0], 3)[:10] + xs[0], np.repeat(np.arange(-2.0, 3.0), 2) + ys[0]
  x0, y0, x1, y1, keep = _clip_segments(xs[:-1], ys[:-1], xs[1:], ys[1:], box)
  x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
  counts = np.ceil(np.maximum(np.abs(x1 - x0), np.abs(y1 - y0))).astype(int) + 1  # samples per segment
  segment = np.repeat(np.arange(len(counts)), counts)
  t = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)) / np.maximum(counts - 1, 1)[
    segment
  ]
  px = np.rint(x0[segment] + t * (x1 - x0)[segment]).astype(int)
  py = np.rint(y0[segment] + t * (y1 - y0)[segment]).astype(int)
  if dash:
    on = np.arange(len(px)) % (dash + dash // 2 + 1) < dash
    px, py = px[on], py[on]
  img[np.concatenate([py, py, py + 1, py + 1]), np.concatenate([px, px + 1, px, px + 1])] = color


# ------------------------------------------------------------------------------------------------
# Axes: ranges, ticks and their labels.


def _view(values: np.ndarray) -> tuple[float, float]:
  """A range holding `values` with a 4% margin each side; a single value gets +-10% (+-1 at zero)."""
  if values.size == 0:
    values = np.array([0.0, 1.0])
  lo, hi = float(values.min()), float(values.max())
  if hi - lo <= 1e-12 * max(abs(lo), abs(hi), 1e-300):
    pad = abs(lo) * 0.1 or 1.0
    return lo - pad, hi + pad
  margin = 0.04 * (hi - lo)
  return lo - margin, hi + margin


def _ticks(lo: float, hi: float, max_count: int) -> np.ndarray:
  """The multiples in [lo, hi] of the smallest round step (1, 2, 2.5 or 5 times a power of ten) that
  has at most `max_count` of them (so at least about `max_count` / 2)."""
  magnitude = 10.0 ** math.floor(math.log10((hi - lo) / max_count))
  for step in (m * magnitude for m in (1, 2, 2.5, 5, 10)):
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    if last - first + 1 <= max_count:
      break
  return np.arange(first, last + 1) * step


def _tick_labels(ticks: np.ndarray) -> list[str]:
  """Labels with as many decimals as the step needs; thousands and millions as `50k`, `1.5M` (step
  counts are often large); %g for very large or very small numbers."""
  step = float(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
  biggest = float(np.abs(ticks).max()) if len(ticks) else 0.0
  if 1e4 <= biggest < 1e9 and step >= 1:
    unit, suffix = (1e6, "M") if biggest >= 1e6 else (1e3, "k")
    return [f"{t / unit:g}{suffix}" if t else "0" for t in ticks]
  if biggest >= 1e9 or step < 1e-4:
    return [f"{t:.3g}" for t in ticks]
  decimals = next(d for d in range(8) if abs(step * 10**d - round(step * 10**d)) < 1e-6 * step * 10**d)
  return [f"{0.0 if abs(t) < step * 1e-9 else t:.{decimals}f}" for t in ticks]


def _points(points) -> np.ndarray:
  """`[T, 2]` finite (x, y) points."""
  xy = np.asarray(points, np.float64).reshape(-1, 2)
  return xy[np.isfinite(xy).all(axis=1)]


def _legend(panel: Panel) -> list[tuple[str, tuple[int, int, int], bool]]:
  """(label, colour, dashed) for each series, then each reference line."""
  entries = [(name, SERIES_COLORS[i % len(SERIES_COLORS)], False) for i, name in enumerate(panel.series)]
  for i, (name, y) in enumerate(panel.references.items()):
    entries.append((f"{name} {y:.3g}", REFERENCE_COLORS[i % len(REFERENCE_COLORS)], True))
  return entries


def _legend_layout(entries, left: int, right: int) -> list[tuple[int, int]]:
  """(x, row) of each legend entry, flowing left to right and wrapping at `right`."""
  x, row, places = left, 0, []
  for label, _, _ in entries:
    width = 24 + _text_width(label)
    if x > left and x + width > right:
      x, row = left, row + 1
    places.append((x, row))
    x += width + 24
  return places


# ------------------------------------------------------------------------------------------------
# Figure.


class _Axes(NamedTuple):
  """A panel's finite points, ranges and ticks, and its box's left and right edges."""

  series: dict[str, np.ndarray]  # name -> [T, 2]
  xlim: tuple[float, float]
  ylim: tuple[float, float]
  xticks: np.ndarray
  yticks: np.ndarray
  left: int  # the box's left edge, past the y tick labels
  right: int


def _fit_axes(panel: Panel, x0: int, x1: int) -> _Axes:
  """Ranges and ticks for `panel` drawn in columns [x0, x1): up to 6 y ticks, and as many x ticks (up
  to 7) as leave room between their labels."""
  series = {name: _points(points) for name, points in panel.series.items()}
  xs = np.concatenate([p[:, 0] for p in series.values()] + [np.zeros(0)])
  references = np.asarray(list(panel.references.values()), float)
  ys = np.concatenate([p[:, 1] for p in series.values()] + [references[np.isfinite(references)]])
  xlim = _view(xs)
  ylim = panel.ylim if panel.ylim is not None else _view(ys)
  if not ylim[0] < ylim[1]:
    raise ValueError(f"panel {panel.title!r}: ylim {ylim} is not an increasing range")
  yticks = _ticks(*ylim, max_count=6)
  left, right = x0 + 18 + max(_text_width(label) for label in _tick_labels(yticks)), x1 - 16
  for max_count in range(7, 1, -1):
    xticks = _ticks(*xlim, max_count=max_count)
    room = (right - left) * (xticks[1] - xticks[0]) / (xlim[1] - xlim[0]) if len(xticks) > 1 else right - left
    if room >= 16 + max(_text_width(label) for label in _tick_labels(xticks)):
      break
  return _Axes(series, xlim, ylim, xticks, yticks, left, right)


def _draw_panel(img: np.ndarray, panel: Panel, axes: _Axes, top: int, bottom: int) -> None:
  """Draws `panel`, its box spanning rows [top, bottom] and columns [axes.left, axes.right], its text
  around it."""
  (xlo, xhi), (ylo, yhi), left, right = axes.xlim, axes.ylim, axes.left, axes.right

  def to_px(x, y):
    return left + (x - xlo) / (xhi - xlo) * (right - left), bottom - (y - ylo) / (yhi - ylo) * (bottom - top)

  _draw_text(img, (left + right) // 2, top - _LINE, panel.title, _INK, "center")
  for tick, label in zip(axes.yticks, _tick_labels(axes.yticks), strict=True):
    py = round(to_px(xlo, tick)[1])
    _fill(img, py, py + 1, left, right, _GRID)
    _fill(img, py, py + 1, left - 5, left, _INK)
    _draw_text(img, left - 8, py - 7, label, _TICK_INK, "right")
  for tick, label in zip(axes.xticks, _tick_labels(axes.xticks), strict=True):
    px = round(to_px(tick, ylo)[0])
    _fill(img, top, bottom, px, px + 1, _GRID)
    _fill(img, bottom + 1, bottom + 6, px, px + 1, _INK)
    _draw_text(img, px, bottom + 9, label, _TICK_INK, "center")
  _draw_text(img, (left + right) // 2, bottom + 9 + _LINE, panel.xlabel, _INK, "center")

  box = (top + 1, bottom - 1, left + 1, right - 1)
  legend = _legend(panel)
  n = len(axes.series)
  for (_, color, _), y in zip(legend[n:], panel.references.values(), strict=True):
    if math.isfinite(y):
      _draw_polyline(img, np.array([left, right], float), np.full(2, to_px(xlo, y)[1]), color, box, dash=8)
  for (_, color, _), xy in zip(legend[:n], axes.series.values(), strict=True):
    if len(xy):
      xy = xy[:1] if (xy == xy[0]).all() else xy  # points that coincide draw a dot
      _draw_polyline(img, *to_px(xy[:, 0], xy[:, 1]), color, box)
  _fill(img, top, bottom + 1, left, left + 1, _INK)
  _fill(img, top, bottom + 1, right, right + 1, _INK)
  _fill(img, top, top + 1, left, right + 1, _INK)
  _fill(img, bottom, bottom + 1, left, right + 1, _INK)


def _draw_legend(img: np.ndarray, entries, places, top: int) -> None:
  for (label, color, dashed), (x, row) in zip(entries, places, strict=True):
    y = top + row * _LINE
    _draw_polyline(img, np.array([x, x + 17.0]), np.full(2, y + 6.0), color, (0, 1e9, 0, 1e9), 5 * dashed)
    _draw_text(img, x + 24, y, label, _INK)


def render_curves(
  panels: Sequence[Panel], title: str = "", width: int = 900, height: int = 360
) -> np.ndarray:
  """The figure as a `[height, width, 3]` uint8 RGB image: `panels` side by side, `title` above."""
  if not panels:
    raise ValueError("render_curves needs at least one panel")
  img = np.full((height, width, 3), _WHITE, np.uint8)
  top = 6
  if title:
    _draw_text(img, width // 2, top, title, _INK, "center")
    top += _LINE + 4
  top += _LINE  # the panel titles
  edges = [round(i * width / len(panels)) for i in range(len(panels) + 1)]
  fitted = [_fit_axes(panel, x0, x1) for panel, x0, x1 in zip(panels, edges[:-1], edges[1:], strict=True)]
  legends = [_legend(panel) for panel in panels]
  places = [
    _legend_layout(entries, axes.left, x1 - 4)
    for entries, axes, x1 in zip(legends, fitted, edges[1:], strict=True)
  ]
  legend_rows = max(1 + max((row for _, row in place), default=-1) for place in places)
  bottom = height - 6 - legend_rows * _LINE - 2 * _LINE - 11  # the axes line up across panels
  for panel, axes, entries, place in zip(panels, fitted, legends, places, strict=True):
    _draw_panel(img, panel, axes, top, bottom)
    _draw_legend(img, entries, place, bottom + 9 + 2 * _LINE + 2)
  return img


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of a `[H, W, 3]` (RGB), `[H, W, 4]` (RGBA) or `[H, W]` (grey) uint8 image: 8 bits per
  channel, rows unfiltered, one IDAT chunk."""
  image = np.asarray(image, np.uint8)
  height, width = image.shape[:2]
  channels = 1 if image.ndim == 2 else image.shape[2]
  color_type = {1: 0, 3: 2, 4: 6}[channels]
  rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, width * channels)], axis=1)

  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
  return (
    b"\x89PNG\r\n\x1a\n"
    + chunk(b"IHDR", header)
    + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
    + chunk(b"IEND", b"")
  )


def write_curves(
  path: str | os.PathLike, panels: Sequence[Panel], title: str = "", width: int = 900, height: int = 360
) -> epath.Path:
  """Renders `panels` (see `render_curves`) and writes the PNG to `path` (any epath); returns the path."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(encode_png(render_curves(panels, title, width, height)))
  return path
