"""The contact sheet of a still run: every candidate as a thumbnail, one row per style, each captioned in plain
words (which style and look it is, and kept, or why not and what to do), in type large enough to read on the
sheet itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from engine.types import RGBImage

THUMB = 300
"""Thumbnail side (pixels)."""
PAD = 14
_COLUMNS = 4
_TITLE_PX, _TEXT_PX = 22, 18
_LINE_PX = _TEXT_PX + 5
_CAPTION_LINES = 6
"""Caption lines under a thumbnail: the title, up to two for the look, and the verdict on the rest."""
CAPTION_PX = _TITLE_PX + 8 + (_CAPTION_LINES - 1) * _LINE_PX
"""Height of the caption under each thumbnail (pixels)."""
_INK, _KEPT, _REJECTED, _PAPER = (25, 25, 25), (22, 120, 50), (180, 30, 30), (255, 255, 255)


@dataclass(frozen=True)
class SheetEntry:
    """One candidate on the sheet."""

    thumb: RGBImage
    """The candidate, already shrunk to fit `THUMB` (`thumbnail`)."""
    style: str
    title: str
    """"Corporate - v1"."""
    look: str
    """"short light, warm grey backdrop" (studio) or "seed 7" (diffusion)."""
    verdict: str
    """"kept", or "rejected: " and what to do."""
    kept: bool


def thumbnail(image: RGBImage, side: int = THUMB) -> RGBImage:
    """`image` shrunk so that its long side is `side` (never enlarged)."""
    height, width = image.shape[:2]
    scale = min(1.0, side / max(height, width))
    if scale == 1.0:
        return image.copy()
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))


def style_title(name: str) -> str:
    """A style's name as a caption: "real_estate" -> "Real estate"."""
    return name.replace("_", " ").capitalize()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int,
          lines: int) -> list[str]:
    """`text` broken into at most `lines` lines no wider than `width` pixels (the last one ends in "..." when
    the text does not fit)."""
    out: list[str] = []
    words = text.split()
    while words and len(out) < lines:
        line = words.pop(0)
        while words and draw.textlength(f"{line} {words[0]}", font=font) <= width:
            line = f"{line} {words.pop(0)}"
        out.append(line)
    if words:
        last = out[-1]
        while last and draw.textlength(last + "...", font=font) > width:
            last = last[:-1]
        out[-1] = last.rstrip() + "..."
    return out


def contact_sheet(entries: Sequence[SheetEntry], heading: str = "", columns: int = _COLUMNS) -> RGBImage:
    """The sheet: `heading` on top, then the entries, a new row for each style, at most `columns` a row."""
    rows: list[list[SheetEntry]] = []
    for entry in entries:
        if not rows or rows[-1][0].style != entry.style or len(rows[-1]) == columns:
            rows.append([])
        rows[-1].append(entry)
    columns = max([len(r) for r in rows] + [1])
    title_font, text_font = _font(_TITLE_PX), _font(_TEXT_PX)
    line_px, caption = _LINE_PX, CAPTION_PX
    head = _TITLE_PX + 2 * PAD if heading else 0
    width = PAD + columns * (THUMB + PAD)
    height = head + PAD + max(1, len(rows)) * (THUMB + caption + PAD)
    sheet = Image.new("RGB", (max(width, 480), height), _PAPER)
    draw = ImageDraw.Draw(sheet)
    if heading:
        draw.text((PAD, PAD), heading, font=title_font, fill=_INK)
    if not entries:
        draw.text((PAD, head + PAD), "no candidate was made", font=text_font, fill=_INK)
    for r, row in enumerate(rows):
        y = head + PAD + r * (THUMB + caption + PAD)
        for c, entry in enumerate(row):
            x = PAD + c * (THUMB + PAD)
            tile = Image.fromarray(entry.thumb)
            sheet.paste(tile, (x + (THUMB - tile.width) // 2, y + (THUMB - tile.height) // 2))
            colour = _KEPT if entry.kept else _REJECTED
            draw.rectangle((x - 3, y - 3, x + THUMB + 2, y + THUMB + 2), outline=colour, width=3)
            ty = y + THUMB + 6
            draw.text((x, ty), entry.title, font=title_font, fill=_INK)
            ty += _TITLE_PX + 4
            look = _wrap(draw, entry.look, text_font, THUMB, 2) if entry.look else []
            for line in look:
                draw.text((x, ty), line, font=text_font, fill=_INK)
                ty += line_px
            for line in _wrap(draw, entry.verdict, text_font, THUMB, _CAPTION_LINES - 1 - len(look)):
                draw.text((x, ty), line, font=text_font, fill=colour)
                ty += line_px
    return np.asarray(sheet, dtype=np.uint8).copy()
