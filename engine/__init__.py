"""Rendering: arrays and ready-built components in, arrays out.

The engine never loads files, reads config or touches a camera, and imports neither `livecam` nor
`models`.
"""

from engine.types import Affine, Face, Landmarks, Mask, NoSections, Renderer, RGBImage, Sections, Segmenter

__all__ = ["Affine", "Face", "Landmarks", "Mask", "NoSections", "RGBImage", "Renderer", "Sections", "Segmenter"]
