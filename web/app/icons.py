"""Draw the field app's icons (PNG) with Pillow: a map pin over a check mark on the brand
colour. Run from the repository root: ``python web/app/icons.py``; the output is committed,
and drawing is deterministic (no text, no fonts)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

BRAND = (31, 78, 121, 255)
WHITE = (255, 255, 255, 255)
OUT = Path(__file__).parent / "icons"


def draw(size: int, *, maskable: bool) -> Image.Image:
    scale = 4  # draw large, then shrink: smooth edges
    s = size * scale
    img = Image.new("RGBA", (s, s), BRAND if maskable else (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    if not maskable:
        d.rounded_rectangle((0, 0, s - 1, s - 1), radius=s // 5, fill=BRAND)
    inset = 0.2 if maskable else 0.12  # maskable icons keep their content in the safe zone
    box = s * (1 - 2 * inset)
    ox = oy = s * inset

    def p(x: float, y: float) -> tuple[float, float]:
        return (ox + x * box, oy + y * box)

    # the pin: a circle and a triangle down to its point
    d.ellipse((*p(0.22, 0.05), *p(0.78, 0.61)), fill=WHITE)
    d.polygon([p(0.26, 0.45), p(0.74, 0.45), p(0.5, 0.95)], fill=WHITE)
    # a check mark inside it
    d.line([p(0.36, 0.33), p(0.47, 0.44), p(0.66, 0.22)], fill=BRAND, width=int(box * 0.07))
    return img.resize((size, size), Image.Resampling.LANCZOS)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for size in (192, 512):
        draw(size, maskable=False).save(OUT / f"icon-{size}.png", optimize=True)
    draw(512, maskable=True).save(OUT / "icon-maskable-512.png", optimize=True)


if __name__ == "__main__":
    main()
