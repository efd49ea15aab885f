"""Draw resources/icon.png, the 1024×1024 source of the app icon (needs Pillow).

A macOS-style rounded square with a dusk gradient and a white waveform of rounded bars.
Run again only to change the artwork; then run make_icon.py to rebuild Khala.icns.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter

SIZE = 1024
SCALE = 2  # draw at 2× and downsample for smooth edges
TOP, BOTTOM = (38, 24, 92), (232, 72, 118)  # indigo → rose


def _lerp(a: tuple[int, ...], b: tuple[int, ...], t: float) -> tuple[int, ...]:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def _gradient(size: int) -> Image.Image:
    column = Image.new("RGB", (1, size))
    for y in range(size):
        column.putpixel((0, y), _lerp(TOP, BOTTOM, y / (size - 1)))
    return column.resize((size, size))


def _bar_heights(n: int) -> list[float]:
    """Bar heights (0..1) of a stylised sung phrase: a swell with a little flutter."""
    return [0.18 + 0.78 * math.sin(math.pi * (i + 0.5) / n) ** 1.6 * (0.72 + 0.28 * math.cos(i * 1.9))
            for i in range(n)]


def draw(size: int = SIZE) -> Image.Image:
    s = size * SCALE
    margin, radius = round(s * 0.098), round(s * 0.18)  # Apple's grid: 824 px body, ~185 px corners
    body = (margin, margin, s - margin, s - margin)

    mask = Image.new("L", (s, s), 0)
    ImageDraw.Draw(mask).rounded_rectangle(body, radius, fill=255)

    shadow = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    shadow_mask = mask.filter(ImageFilter.GaussianBlur(s * 0.012)).point(lambda v: v * 90 // 255)
    shadow.paste((0, 0, 0, 255), (0, round(s * 0.01)), shadow_mask)

    art = _gradient(s).convert("RGBA")
    glow = Image.new("L", (s, s), 0)
    ImageDraw.Draw(glow).ellipse((s * 0.15, s * 0.05, s * 0.85, s * 0.55), fill=38)
    art.paste((255, 255, 255, 255), (0, 0), glow.filter(ImageFilter.GaussianBlur(s * 0.08)))

    bars = Image.new("L", (s, s), 0)
    pen = ImageDraw.Draw(bars)
    heights = _bar_heights(11)
    width = (body[2] - body[0]) * 0.62
    step = width / len(heights)
    x0, mid = s / 2 - width / 2, s * 0.5
    for i, h in enumerate(heights):
        half = h * (body[3] - body[1]) * 0.3
        cx = x0 + step * (i + 0.5)
        w = step * 0.56
        pen.rounded_rectangle((cx - w / 2, mid - half, cx + w / 2, mid + half), w / 2, fill=240)
    art.paste((255, 255, 255, 255), (0, 0), bars)

    art.putalpha(ImageChops.multiply(mask, art.getchannel("A")))
    icon = Image.alpha_composite(shadow, art)
    return icon.resize((size, size), Image.LANCZOS)


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "resources" / "icon.png"
    draw().save(out, optimize=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
