"""Draws the Crystal Designer icon: a cubic cell with corner and body-centre atoms.

Writes crystal-designer.svg (scalable), crystal-designer.png (512 px), crystal-designer.ico
(Windows, 16-256 px) and crystal-designer.icns (macOS) next to this script. Needs Pillow only.

    python packaging/icons/make_icons.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
NAME = "crystal-designer"
SIZE = 512
BACKGROUND = (28, 55, 92)        # deep blue rounded square
EDGE = (200, 220, 240)           # cell edges
CORNER = (235, 120, 45)          # corner atoms (orange)
CENTRE = (90, 200, 120)          # body-centre atom (green)

# Cell corners in an oblique projection (512 px canvas): front square + shifted back square.
FRONT = [(120, 190), (330, 190), (330, 400), (120, 400)]
BACK = [(x + 70, y - 80) for x, y in FRONT]
CENTRE_XY = (260, 255)
EDGES = [(FRONT[i], FRONT[(i + 1) % 4]) for i in range(4)] + [(BACK[i], BACK[(i + 1) % 4]) for i in range(4)] + \
        [(FRONT[i], BACK[i]) for i in range(4)]


def _shade(colour, factor):
    return tuple(min(255, int(c * factor)) for c in colour)


def svg() -> str:
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{SIZE}" height="{SIZE}" viewBox="0 0 {SIZE} {SIZE}">',
             "<defs>"]
    for key, colour in (("corner", CORNER), ("centre", CENTRE)):
        parts.append(f'<radialGradient id="{key}" cx="35%" cy="35%" r="65%">'
                     f'<stop offset="0" stop-color="rgb{_shade(colour, 1.35)}"/>'
                     f'<stop offset="1" stop-color="rgb{_shade(colour, 0.7)}"/></radialGradient>')
    parts.append("</defs>")
    parts.append(f'<rect x="16" y="16" width="480" height="480" rx="96" fill="rgb{BACKGROUND}"/>')
    for (x1, y1), (x2, y2) in EDGES:
        parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="rgb{EDGE}" stroke-width="10" '
                     'stroke-linecap="round"/>')
    for x, y in BACK:
        parts.append(f'<circle cx="{x}" cy="{y}" r="34" fill="url(#corner)"/>')
    parts.append(f'<circle cx="{CENTRE_XY[0]}" cy="{CENTRE_XY[1]}" r="52" fill="url(#centre)"/>')
    for x, y in FRONT:
        parts.append(f'<circle cx="{x}" cy="{y}" r="40" fill="url(#corner)"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _ball(draw, x, y, r, colour, scale):
    # Concentric discs from dark rim to a light spot up-left: a cheap radial gradient.
    steps = 24
    for i in range(steps):
        t = i / (steps - 1)
        rr = r * (1 - 0.75 * t)
        cx, cy = x - 0.3 * r * t, y - 0.3 * r * t
        c = _shade(colour, 0.7 + 0.65 * t)
        draw.ellipse([(cx - rr) * scale, (cy - rr) * scale, (cx + rr) * scale, (cy + rr) * scale], fill=c)


def png(size: int = SIZE) -> Image.Image:
    scale = 4  # draw large, then downsample for smooth edges
    image = Image.new("RGBA", (SIZE * scale, SIZE * scale), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle([16 * scale, 16 * scale, 496 * scale, 496 * scale], radius=96 * scale, fill=BACKGROUND)
    for (x1, y1), (x2, y2) in EDGES:
        draw.line([x1 * scale, y1 * scale, x2 * scale, y2 * scale], fill=EDGE, width=10 * scale)
    for x, y in BACK:
        _ball(draw, x, y, 34, CORNER, scale)
    _ball(draw, *CENTRE_XY, 52, CENTRE, scale)
    for x, y in FRONT:
        _ball(draw, x, y, 40, CORNER, scale)
    return image.resize((size, size), Image.LANCZOS)


def main() -> None:
    (HERE / f"{NAME}.svg").write_text(svg())
    image = png()
    image.save(HERE / f"{NAME}.png")
    image.save(HERE / f"{NAME}.ico", sizes=[(s, s) for s in (16, 24, 32, 48, 64, 128, 256)])
    image.save(HERE / f"{NAME}.icns")
    for path in sorted(HERE.glob(f"{NAME}.*")):
        print(path, path.stat().st_size)


if __name__ == "__main__":
    main()
