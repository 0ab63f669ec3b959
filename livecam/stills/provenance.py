"""AI-generated disclosure for exported stills: IPTC/XMP metadata, PNG text chunks and an optional C2PA manifest.

A headshot livecam renders is not a photograph, and a studio-engine still is a photograph edited with AI. Every
exported still says so where other tools look: the IPTC `DigitalSourceType` (trainedAlgorithmicMedia, or
compositeWithTrainedAlgorithmicMedia for an edited photo) in an XMP packet (JPEG APP1, PNG iTXt), plain PNG text
chunks for tools that read only those, and the model, its licence, the style, seed and likeness score in a livecam
XMP namespace. The metadata is spliced into the bytes OpenCV encodes, so the pixels are exactly OpenCV's and no
imaging library beyond OpenCV is needed.

When the user configures a signing certificate, `sign_c2pa` adds a C2PA manifest (c2pa-python, the `provenance`
extra) saying the same thing in a form that can be verified.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import numbers
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import livecam
from livecam.errors import LivecamError

GENERATED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
SOURCE_TYPES = (GENERATED, COMPOSITE)
ENGINES = ("diffusion", "studio")

NS_X = "adobe:ns:meta/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_DC = "http://purl.org/dc/elements/1.1/"
NS_XMP = "http://ns.adobe.com/xap/1.0/"
NS_IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
NS_LIVECAM = "https://livecam.dev/ns/1.0/"
NS_XML = "http://www.w3.org/XML/1998/namespace"

# The livecam:* properties, in the order they are written.
LIVECAM_PROPERTIES = ("engine", "model", "licence", "style", "seed", "likeness", "identity", "platform")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_XMP_KEYWORD = "XML:com.adobe.xmp"
JPEG_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
# An APP1 segment's length field counts itself (2 bytes) and the payload; the payload is the header + the packet.
JPEG_MAX_XMP_PACKET = 0xFFFF - 2 - len(JPEG_XMP_HEADER)
SIGNING_ALGORITHMS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")
C2PA_MISSING = 'C2PA signing needs the provenance extra: pip install -c constraints.txt -e ".[provenance]"'
C2PA_CERT_HINT = ("c2pa wants an X.509 v3 end-entity certificate (not a CA) with an authority key identifier, key "
                  "usage digitalSignature and extended key usage emailProtection, followed in the chain file by the "
                  "certificate of the CA that issued it")

# Characters XML 1.0 cannot carry even escaped (and NUL, which no PNG text chunk may hold).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class ProvenanceError(LivecamError):
    """Signing or reading provenance failed for a reason the user can fix (certificate, key, missing extra)."""


@dataclass(frozen=True)
class Disclosure:
    """What an exported still must say about how it was made."""

    source_type: str  # GENERATED or COMPOSITE
    engine: str  # "diffusion" or "studio"
    model: str  # model id(s); "" for the studio engine
    licence: str  # the model's licence; "" when none
    style: str
    seed: int | None
    likeness: float | None  # cosine similarity to the enrolled identity
    identity: str = ""
    platform: str = ""  # e.g. "linkedin"; "" for the master image
    created: str = ""  # ISO 8601; "" means now (UTC), filled in when encoding
    software: str = ""  # "" means "livecam <version>"

    def __post_init__(self) -> None:
        if self.source_type not in SOURCE_TYPES:
            raise ValueError(f"source_type must be GENERATED ({GENERATED}) or COMPOSITE ({COMPOSITE}), "
                             f"got {self.source_type!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
                raise ValueError(f"seed must be an int or None, got {self.seed!r}")
            object.__setattr__(self, "seed", int(self.seed))  # a numpy integer becomes a plain int
        if self.likeness is not None:
            if (isinstance(self.likeness, bool) or not isinstance(self.likeness, numbers.Real)
                    or not math.isfinite(self.likeness)):
                raise ValueError(f"likeness must be a finite number or None, got {self.likeness!r}")
            object.__setattr__(self, "likeness", float(self.likeness))
        if self.created:
            try:
                datetime.fromisoformat(self.created)
            except ValueError:
                raise ValueError(f"created must be an ISO 8601 date and time, got {self.created!r}") from None

    def resolved(self) -> Disclosure:
        """This disclosure with `created` (now, UTC) and `software` (this livecam) filled in where empty."""
        created = self.created or datetime.now(UTC).replace(microsecond=0).isoformat()
        return replace(self, created=created, software=self.software or f"livecam {livecam.__version__}")

    def description(self) -> str:
        """A plain-English sentence for people: what this image is and how it was made."""
        d = self.resolved()
        whom = f" of {d.identity}" if d.identity else ""
        where = f" for {d.platform}" if d.platform else ""
        style = f' in the "{d.style}" style' if d.style else ""
        if d.source_type == GENERATED:
            model = f" ({d.model})" if d.model else ""
            seed = f", seed {d.seed}" if d.seed is not None else ""
            return (f"AI-generated headshot{whom}{where}, not a photograph: rendered by {d.software}'s {d.engine} "
                    f"engine{model}{style}{seed}.")
        return (f"Photo edited with AI{whom}{where}: {d.software}'s {d.engine} engine reframed it, replaced the "
                f"background and retouched the face{style}.")

    def fields(self) -> dict[str, str]:
        """Everything as a flat str -> str map: the keys `read_disclosure` returns and the PNG text chunks.

        Empty values (no seed, no identity...) are left out."""
        d = self.resolved()
        values = {
            "DigitalSourceType": d.source_type,
            "Description": d.description(),
            "Software": d.software,
            "Creation Time": d.created,
            "livecam:engine": d.engine,
            "livecam:model": d.model,
            "livecam:licence": d.licence,
            "livecam:style": d.style,
            "livecam:seed": "" if d.seed is None else str(d.seed),
            "livecam:likeness": "" if d.likeness is None else f"{d.likeness:.4f}",
            "livecam:identity": d.identity,
            "livecam:platform": d.platform,
        }
        return {key: _clean(value) for key, value in values.items() if value}


def _clean(value: str) -> str:
    """`value` with the characters XML and PNG text cannot hold replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", value)


def _xml(value: str) -> str:
    return escape(_clean(value), {'"': "&quot;"})


def xmp_packet(d: Disclosure) -> bytes:
    """A complete UTF-8 XMP packet with the IPTC DigitalSourceType, a description, the creator tool and date, and the
    livecam:* generation details."""
    f = d.fields()
    livecam_lines = "".join(f"   <livecam:{name}>{_xml(f[f'livecam:{name}'])}</livecam:{name}>\n"
                            for name in LIVECAM_PROPERTIES if f"livecam:{name}" in f)
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        f'<x:xmpmeta xmlns:x="{NS_X}" x:xmptk="{_xml(f["Software"])}">\n'
        f' <rdf:RDF xmlns:rdf="{NS_RDF}">\n'
        '  <rdf:Description rdf:about=""\n'
        f'    xmlns:Iptc4xmpExt="{NS_IPTC_EXT}"\n'
        f'    xmlns:dc="{NS_DC}"\n'
        f'    xmlns:xmp="{NS_XMP}"\n'
        f'    xmlns:livecam="{NS_LIVECAM}">\n'
        f'   <Iptc4xmpExt:DigitalSourceType>{_xml(f["DigitalSourceType"])}</Iptc4xmpExt:DigitalSourceType>\n'
        '   <dc:description>\n'
        '    <rdf:Alt>\n'
        f'     <rdf:li xml:lang="x-default">{_xml(f["Description"])}</rdf:li>\n'
        '    </rdf:Alt>\n'
        '   </dc:description>\n'
        f'   <xmp:CreatorTool>{_xml(f["Software"])}</xmp:CreatorTool>\n'
        f'   <xmp:CreateDate>{_xml(f["Creation Time"])}</xmp:CreateDate>\n'
        f'{livecam_lines}'
        '  </rdf:Description>\n'
        ' </rdf:RDF>\n'
        '</x:xmpmeta>\n'
        '<?xpacket end="w"?>'
    )
    return packet.encode("utf-8")


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an RGB uint8 image (numpy array HxWx3), got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"expected an RGB uint8 image of shape HxWx3, got a {image.dtype} array of shape "
                         f"{image.shape}")


def encode_image(image: np.ndarray, fmt: str, d: Disclosure, *, quality: int = 92, dpi: int | None = None) -> bytes:
    """Encode an RGB uint8 HxWx3 image as PNG or JPEG ("png", "jpeg", "jpg") carrying the disclosure.

    JPEG: an XMP APP1 segment; PNG: an XMP iTXt chunk and one text chunk per field (tEXt, or iTXt where the value
    is not latin-1). `dpi` sets the JFIF density or a PNG pHYs chunk; `quality` (1-100) is the JPEG quality.
    Pillow writes the file; its JPEG decodes to exactly the pixels of OpenCV's at the same quality (the same
    libjpeg tables and sampling), which tests/test_provenance.py holds it to."""
    _check_image(image)
    kind = fmt.lower()
    if kind not in ("png", "jpeg", "jpg"):
        raise ValueError(f"unknown image format {fmt!r}: expected png, jpeg or jpg")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an int from 1 to 100, got {quality!r}")
    if dpi is not None and (isinstance(dpi, bool) or not isinstance(dpi, int) or not 1 <= dpi <= 0xFFFF):
        raise ValueError(f"dpi must be an int from 1 to 65535 or None, got {dpi!r}")
    d = d.resolved()  # one creation time for the XMP and the text chunks
    packet = xmp_packet(d)
    options: dict[str, Any] = {} if dpi is None else {"dpi": (dpi, dpi)}
    picture = Image.fromarray(np.ascontiguousarray(image), "RGB")
    out = io.BytesIO()
    if kind == "png":
        info = PngInfo()
        info.add_itxt(PNG_XMP_KEYWORD, packet.decode("utf-8"))
        for key, value in d.fields().items():
            info.add_text(key, value)  # tEXt, or an uncompressed iTXt when the value is not latin-1
        picture.save(out, "PNG", pnginfo=info, **options)
    else:
        if len(packet) > JPEG_MAX_XMP_PACKET:
            raise ValueError(f"the XMP packet is {len(packet)} bytes, more than the {JPEG_MAX_XMP_PACKET} a JPEG "
                             "APP1 segment holds (is the licence text very long?)")
        picture.save(out, "JPEG", quality=quality, xmp=packet, **options)
    return out.getvalue()


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".png":
        return "png"
    if suffix in (".jpg", ".jpeg"):
        return "jpeg"
    raise ValueError(f"cannot tell the image format of {path}: use a .png, .jpg or .jpeg name")


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(part_path)`, then move the part file over `path`; on any failure remove the part file."""
    part = path.with_name(path.name + ".part")
    try:
        write(part)
        os.replace(part, path)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise


def write_image(path: Path, image: np.ndarray, d: Disclosure, *, quality: int = 92, dpi: int | None = None) -> None:
    """Write `image` (RGB uint8 HxWx3) to `path` (.png, .jpg, .jpeg) with the disclosure, atomically.

    OSError (no such folder, no permission, disk full) propagates; no partial file is left behind."""
    path = Path(path)
    data = encode_image(image, _format_of(path), d, quality=quality, dpi=dpi)

    def write(part: Path) -> None:
        with open(part, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())

    _replace_atomically(path, write)


def _fields_from_xmp(packet: bytes) -> dict[str, str]:
    """The disclosure fields in an XMP packet, as property elements or as attributes of rdf:Description."""
    try:
        root = ET.fromstring(packet)
    except ET.ParseError as e:
        raise ValueError(f"the XMP packet is not well-formed XML: {e}") from None
    names = {f"{{{NS_IPTC_EXT}}}DigitalSourceType": "DigitalSourceType",
             f"{{{NS_XMP}}}CreatorTool": "Software",
             f"{{{NS_XMP}}}CreateDate": "Creation Time"}
    found: dict[str, str] = {}

    def key_for(tag: str) -> str | None:
        if tag in names:
            return names[tag]
        if tag.startswith(f"{{{NS_LIVECAM}}}"):
            return "livecam:" + tag[len(NS_LIVECAM) + 2:]
        return None

    for description in root.iter(f"{{{NS_RDF}}}Description"):
        for attribute, value in description.attrib.items():
            key = key_for(attribute)
            if key is not None:
                found[key] = value
        for prop in description:
            if prop.tag == f"{{{NS_DC}}}description":
                items = list(prop.iter(f"{{{NS_RDF}}}li"))
                default = [li for li in items if li.get(f"{{{NS_XML}}}lang") == "x-default"]
                chosen = (default or items)[:1]
                if chosen:
                    found["Description"] = (chosen[0].text or "").strip()
                continue
            key = key_for(prop.tag)
            if key is not None:
                text = prop.text or prop.get(f"{{{NS_RDF}}}resource") or ""
                found[key] = text.strip()
    return found


def read_disclosure(source: Path | bytes) -> dict[str, str]:
    """The disclosure fields of a PNG or JPEG (file or bytes): the XMP values and, for PNG, the text chunks.

    Keys as in `Disclosure.fields()`; an image with no disclosure gives {}. ValueError for anything else."""
    data = bytes(source) if isinstance(source, bytes | bytearray | memoryview) else Path(source).read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in ("PNG", "JPEG"):
                raise ValueError("not a PNG or JPEG image")
            im.load()  # text chunks after the image data are read with it
            texts = dict(getattr(im, "text", {})) if im.format == "PNG" else {}
            xmp = im.info.get("xmp")
    except (OSError, SyntaxError) as e:  # Pillow: not an image, or a malformed one
        raise ValueError(f"not a readable PNG or JPEG image ({e})") from None
    packet = texts.pop(PNG_XMP_KEYWORD, None) or xmp
    # the XMP is the standard place: where both hold a key, it wins
    fields = _fields_from_xmp(packet.encode("utf-8") if isinstance(packet, str) else packet) if packet else {}
    return {**texts, **fields}


def c2pa_available() -> bool:
    """Whether c2pa-python (the `provenance` extra) can be imported here."""
    try:
        import c2pa  # noqa: F401
    except (ImportError, OSError, RuntimeError):  # not installed, or its native library does not load
        return False
    return True


def _mime_type(path: Path) -> str:
    return "image/png" if _format_of(path) == "png" else "image/jpeg"


def _read_pem(path: Path, what: str, marker: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ProvenanceError(f"cannot read the C2PA {what} {path}: {e.strerror or e}") from None
    if marker.encode() not in data:
        raise ProvenanceError(f"the C2PA {what} {path} is not PEM (no '{marker}' line)")
    return data


def c2pa_manifest(d: Disclosure, title: str) -> dict[str, Any]:
    """The C2PA manifest definition for `sign_c2pa`: the actions with the digital source type and the livecam
    generation details."""
    d = d.resolved()
    agent = {"name": "livecam", "version": livecam.__version__}
    created: dict[str, Any] = {"action": "c2pa.created", "digitalSourceType": d.source_type, "softwareAgent": agent}
    actions = [created]
    if d.source_type == COMPOSITE:
        # c2pa requires the first action to be created or opened, and opened needs the source photo as an
        # ingredient, which a still export does not keep: the edit is recorded as a second action.
        actions.append({"action": "c2pa.edited", "digitalSourceType": d.source_type, "softwareAgent": agent,
                        "description": d.description()})
    else:
        created["description"] = d.description()
    generation = {"engine": d.engine, "model": d.model, "licence": d.licence, "style": d.style, "seed": d.seed,
                  "likeness": None if d.likeness is None else round(d.likeness, 4)}
    return {
        # claim_generator is for v1 claims; c2pa-rs writing v2 claims keeps only claim_generator_info
        "claim_generator": f"livecam/{livecam.__version__}",
        "claim_generator_info": [agent],
        "title": title,
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": actions}},
            {"label": "dev.livecam.generation", "data": generation},
        ],
    }


def sign_c2pa(path: Path, d: Disclosure, cert_chain: Path, private_key: Path, *, algorithm: str = "es256",
              tsa_url: str = "") -> None:
    """Embed a signed C2PA manifest in the image at `path`, in place and atomically.

    `cert_chain` is a PEM file with the signing certificate first, then its issuers; `private_key` the PEM key.
    No network is used unless `tsa_url` (an RFC 3161 timestamp authority) is given."""
    path = Path(path)
    mime = _mime_type(path)
    if not c2pa_available():
        raise ProvenanceError(C2PA_MISSING)
    import c2pa

    alg = algorithm.lower()
    if alg not in SIGNING_ALGORITHMS:
        raise ProvenanceError(f"unknown C2PA signing algorithm {algorithm!r}: "
                              f"use one of {', '.join(SIGNING_ALGORITHMS)}")
    certs = _read_pem(cert_chain, "certificate chain", "-----BEGIN CERTIFICATE-----")
    key = _read_pem(private_key, "private key", "PRIVATE KEY-----")
    manifest = c2pa_manifest(d, path.name)

    def write(part: Path) -> None:
        try:
            info = c2pa.C2paSignerInfo(alg, certs, key, tsa_url or None)
            with c2pa.Signer.from_info(info) as signer, c2pa.Builder(manifest) as builder, \
                    open(path, "rb") as source, open(part, "w+b") as dest:
                builder.sign(signer, mime, source, dest)
        except c2pa.C2paError as e:
            message = str(e).strip().replace("\n", " ")
            hint = f" ({C2PA_CERT_HINT})" if "certificate" in message or "EKU" in message else ""
            raise ProvenanceError(f"C2PA signing of {path} failed: {message}{hint}") from None

    _replace_atomically(path, write)


def read_c2pa(path: Path) -> dict[str, Any] | None:
    """The C2PA manifest store of the image at `path` as a dict (c2pa's JSON), or None if it has none."""
    if not c2pa_available():
        raise ProvenanceError(C2PA_MISSING)
    import c2pa

    with open(path, "rb") as source:
        head = source.read(8)
        source.seek(0)
        mime = "image/png" if head == PNG_SIGNATURE else "image/jpeg" if head[:2] == b"\xff\xd8" else None
        try:
            reader = c2pa.Reader.try_create(mime, source)
            if reader is None:
                return None
            with reader:
                store: dict[str, Any] = json.loads(reader.json())
        except c2pa.C2paError as e:
            raise ProvenanceError(f"cannot read the C2PA manifest of {path}: {e}") from None
    return store
