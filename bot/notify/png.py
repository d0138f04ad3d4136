"""A small line-chart renderer that writes PNG with nothing but the standard library.

Why not a plotting library: the chart is always one kind (a few series over an hour,
a threshold line, labelled axes). matplotlib with numpy is tens of megabytes installed
and slow to import even with Agg; Pillow would still leave the plotting to us and adds a
native wheel. This module has no dependency, draws an 800x320 chart in tens of
milliseconds, and writes real PNG (filtered scanlines, zlib, CRC-checked chunks).
"""

from __future__ import annotations

import math
import struct
import time
import zlib
from collections.abc import Sequence

Color = tuple[int, int, int]
Point = tuple[float, float]

WHITE: Color = (255, 255, 255)
AXIS: Color = (90, 90, 90)
GRID: Color = (228, 228, 228)
TEXT: Color = (60, 60, 60)
THRESHOLD: Color = (214, 39, 40)
PALETTE: tuple[Color, ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (23, 190, 207),
)
PALETTE_NAMES = ("blue", "orange", "green", "purple", "brown", "pink", "grey", "cyan")

# 5x7 glyphs for what axis labels need: digits, units, time.
_GLYPHS: dict[str, tuple[str, ...]] = {
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    "-": (".....", ".....", ".....", ".###.", ".....", ".....", "....."),
    "+": (".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."),
    ":": (".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."),
    "%": ("##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"),
    "e": (".....", ".....", ".###.", "#...#", "#####", "#....", ".###."),
    "k": ("#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."),
    "m": (".....", ".....", "##.#.", "#.#.#", "#.#.#", "#...#", "#...#"),
    "u": (".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    " ": (".....",) * 7,
}


class Canvas:
    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def set(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i : i + 3] = bytes(color)

    def get(self, x: int, y: int) -> Color:
        i = (y * self.width + x) * 3
        return self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]

    def hline(
        self, x0: int, x1: int, y: int, color: Color, dash: tuple[int, int] | None = None
    ) -> None:
        for x in range(min(x0, x1), max(x0, x1) + 1):
            if dash is None or (x - x0) % (dash[0] + dash[1]) < dash[0]:
                self.set(x, y, color)

    def vline(self, x: int, y0: int, y1: int, color: Color) -> None:
        for y in range(min(y0, y1), max(y0, y1) + 1):
            self.set(x, y, color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: Color, width: int = 2) -> None:
        """Bresenham, thickened by drawing ``width`` pixels across the main direction."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        steep = -dy > dx
        err = dx + dy
        while True:
            for k in range(width):
                self.set(x0 + k if steep else x0, y0 if steep else y0 + k, color)
            if x0 == x1 and y0 == y1:
                break
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x: int, y: int, value: str, color: Color = TEXT, scale: int = 2) -> None:
        for ch in value:
            glyph = _GLYPHS.get(ch, _GLYPHS[" "])
            for row, bits in enumerate(glyph):
                for col, bit in enumerate(bits):
                    if bit == "#":
                        for a in range(scale):
                            for b in range(scale):
                                self.set(x + col * scale + a, y + row * scale + b, color)
            x += 6 * scale

    @staticmethod
    def text_width(value: str, scale: int = 2) -> int:
        return len(value) * 6 * scale - scale

    def png(self) -> bytes:
        stride = self.width * 3
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * stride : (y + 1) * stride]) for y in range(self.height)
        )
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw, 6))
            + _chunk(b"IEND", b"")
        )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def nice_step(span: float, count: int = 5) -> float:
    """A 1/2/5 x 10^k step that cuts ``span`` into about ``count`` parts."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / count
    power: float = 10.0 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= mult * power:
            return mult * power
    return 10 * power


def format_value(value: float) -> str:
    if value == 0:
        return "0"
    size = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if size >= limit:
            return f"{value / limit:.3g}{suffix}"
    if size < 0.001:
        return f"{value:.1e}".replace("e-0", "e-")
    return f"{value:.3g}"


class ChartLayout:
    def __init__(self, width: int, height: int) -> None:
        self.left, self.right, self.top, self.bottom = 92, width - 16, 14, height - 34


def line_chart(
    series: Sequence[Sequence[Point]],
    *,
    start: float,
    end: float,
    threshold: float | None = None,
    width: int = 800,
    height: int = 320,
) -> bytes:
    """Series of (unix time, value) points from ``start`` to ``end``, as a PNG."""
    canvas = Canvas(width, height)
    box = ChartLayout(width, height)
    values = [v for points in series for _, v in points if math.isfinite(v)]
    if threshold is not None and math.isfinite(threshold):
        values.append(threshold)
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-12:
        pad = abs(high) * 0.1 or 1.0
        low, high = low - pad, high + pad
    step = nice_step(high - low)
    low, high = math.floor(low / step) * step, math.ceil(high / step) * step
    span_t = max(end - start, 1e-9)

    def px(t: float) -> int:
        return box.left + round((t - start) / span_t * (box.right - box.left))

    def py(v: float) -> int:
        return box.bottom - round((v - low) / (high - low) * (box.bottom - box.top))

    tick = low
    while tick <= high + step / 2:
        y = py(tick)
        canvas.hline(box.left, box.right, y, GRID)
        label = format_value(round(tick, 12))
        canvas.text(box.left - 8 - Canvas.text_width(label), y - 7, label)
        tick += step
    minutes = nice_step(span_t / 60, 6) * 60
    mark = math.ceil(start / minutes) * minutes
    while mark <= end:
        x = px(mark)
        canvas.vline(x, box.top, box.bottom, GRID)
        label = time.strftime("%H:%M", time.gmtime(mark))
        canvas.text(x - Canvas.text_width(label) // 2, box.bottom + 8, label)
        mark += minutes
    canvas.text(box.right - Canvas.text_width("UTC"), height - 14, "UTC", AXIS, 1)
    canvas.vline(box.left, box.top, box.bottom, AXIS)
    canvas.hline(box.left, box.right, box.bottom, AXIS)
    for index, points in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        previous: tuple[int, int] | None = None
        for t, v in points:
            if not math.isfinite(v):
                previous = None
                continue
            here = (px(t), py(v))
            if previous is not None:
                canvas.line(*previous, *here, color)
            else:
                canvas.set(*here, color)
            previous = here
    if threshold is not None and math.isfinite(threshold):
        y = py(threshold)
        for k in (0, 1):
            canvas.hline(box.left, box.right, y + k, THRESHOLD, dash=(8, 5))
    return canvas.png()
