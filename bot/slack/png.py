"""Line charts as PNG, drawn with Pillow.

Why Pillow: the chart is always one kind (a few series over an hour, a dashed threshold
line, labelled axes), so a plotting library would be mostly unused weight: matplotlib with
numpy is tens of megabytes and slow to import. Pillow is a single well-kept wheel that
brings what is worth not writing by hand — line drawing, a scalable font and the PNG
encoder — and draws an 800x320 chart in a few milliseconds.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

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


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


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


def _dashed(
    draw: ImageDraw.ImageDraw, y: int, x0: int, x1: int, color: Color, dash: int = 8, gap: int = 5
) -> None:
    x = x0
    while x < x1:
        draw.line([(x, y), (min(x + dash, x1), y)], fill=color, width=2)
        x += dash + gap


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
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    font = _font(13)
    left, right, top, bottom = 92, width - 16, 14, height - 34

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
        return left + round((t - start) / span_t * (right - left))

    def py(v: float) -> int:
        return bottom - round((v - low) / (high - low) * (bottom - top))

    tick = low
    while tick <= high + step / 2:
        y = py(tick)
        draw.line([(left, y), (right, y)], fill=GRID)
        draw.text((left - 8, y), format_value(round(tick, 12)), fill=TEXT, font=font, anchor="rm")
        tick += step
    minutes = nice_step(span_t / 60, 6) * 60
    mark = math.ceil(start / minutes) * minutes
    while mark <= end:
        x = px(mark)
        draw.line([(x, top), (x, bottom)], fill=GRID)
        label = time.strftime("%H:%M", time.gmtime(mark))
        draw.text((x, bottom + 8), label, fill=TEXT, font=font, anchor="mt")
        mark += minutes
    draw.text((right, height - 4), "UTC", fill=AXIS, font=_font(10), anchor="rd")
    draw.line([(left, top), (left, bottom)], fill=AXIS)
    draw.line([(left, bottom), (right, bottom)], fill=AXIS)

    for index, points in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        run: list[tuple[int, int]] = []
        for t, v in [*points, (math.nan, math.nan)]:  # a NaN ends the run
            if math.isfinite(v):
                run.append((px(t), py(v)))
                continue
            if len(run) > 1:
                draw.line(run, fill=color, width=2, joint="curve")
            elif run:
                draw.point(run, fill=color)
            run = []
    if threshold is not None and math.isfinite(threshold):
        _dashed(draw, py(threshold), left, right, THRESHOLD)

    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()
