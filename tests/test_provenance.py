"""The AI-generated disclosure of exported stills, read back by livecam and independently by Pillow and c2pa."""

from __future__ import annotations

import datetime as dt
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import livecam
from livecam.errors import LivecamError
from livecam.stills import provenance
from livecam.stills.provenance import (
    COMPOSITE,
    GENERATED,
    Disclosure,
    ProvenanceError,
    c2pa_available,
    encode_image,
    read_c2pa,
    read_disclosure,
    sign_c2pa,
    write_image,
    xmp_packet,
)
from tests.conftest import load_rgb

IPTC = "{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}"
LIVECAM = "{https://livecam.dev/ns/1.0/}"
CREATED = "2025-06-01T09:30:00+00:00"


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The official portrait, scaled to a still's working size (odd sizes on purpose)."""
    rgb = load_rgb("images/faces/obama_official_2012.jpg")
    return np.ascontiguousarray(cv2.resize(rgb, (321, 401), interpolation=cv2.INTER_AREA))


def generated(**changes: object) -> Disclosure:
    values: dict[str, object] = {
        "source_type": GENERATED, "engine": "diffusion",
        "model": "stabilityai/sdxl-turbo + xinsir/controlnet-openpose-sdxl-1.0",
        "licence": "stabilityai-ai-community", "style": "corporate", "seed": 1234, "likeness": 0.81234,
        "identity": "zoë", "platform": "linkedin", "created": CREATED}
    values.update(changes)
    return Disclosure(**values)  # type: ignore[arg-type]


def studio(**changes: object) -> Disclosure:
    values: dict[str, object] = {
        "source_type": COMPOSITE, "engine": "studio", "model": "", "licence": "", "style": "studio grey",
        "seed": None, "likeness": None, "created": CREATED}
    values.update(changes)
    return Disclosure(**values)  # type: ignore[arg-type]


def xmp_values(packet: bytes | str) -> dict[str, str]:
    """DigitalSourceType and the livecam:* values of an XMP packet, parsed with plain ElementTree."""
    root = ET.fromstring(packet)
    values = {}
    for element in root.iter():
        if element.tag.startswith(LIVECAM):
            values[element.tag[len(LIVECAM):]] = element.text or ""
        elif element.tag == IPTC + "DigitalSourceType":
            values["DigitalSourceType"] = element.text or ""
    return values


def test_png_round_trip_read_by_livecam_and_pillow(tmp_path: Path, face: np.ndarray) -> None:
    d = generated()
    path = tmp_path / "headshot.png"
    write_image(path, face, d, dpi=300)

    assert read_disclosure(path) == d.fields()
    assert read_disclosure(path.read_bytes()) == d.fields()
    with Image.open(path) as im:
        im.load()
        assert im.size == (321, 401)
        assert np.array_equal(np.asarray(im.convert("RGB")), face)
        assert im.info["dpi"] == pytest.approx((300, 300), abs=0.01)
        assert isinstance(im, PngImagePlugin.PngImageFile)
        text = dict(im.text)
    assert text["DigitalSourceType"] == GENERATED
    assert text["Software"] == f"livecam {livecam.__version__}"
    assert text["Description"].startswith("AI-generated headshot of zoë")
    assert text["livecam:seed"] == "1234"
    values = xmp_values(text["XML:com.adobe.xmp"])
    assert values["DigitalSourceType"] == GENERATED
    assert values["model"] == "stabilityai/sdxl-turbo + xinsir/controlnet-openpose-sdxl-1.0"
    assert values["seed"] == "1234"
    assert values["likeness"] == "0.8123"
    assert not list(tmp_path.glob("*.part"))


def test_jpeg_round_trip_read_by_livecam_and_pillow(tmp_path: Path, face: np.ndarray) -> None:
    d = generated()
    path = tmp_path / "headshot.JPG"
    write_image(path, face, d, quality=90, dpi=600)

    assert read_disclosure(path) == d.fields()
    with Image.open(path) as im:
        im.load()
        assert im.size == (321, 401)
        assert im.info["dpi"] == pytest.approx((600, 600))
        packet = im.info["xmp"]
        decoded = np.asarray(im.convert("RGB")).astype(int)
    values = xmp_values(packet)
    assert values["DigitalSourceType"] == GENERATED
    assert values["model"].startswith("stabilityai/sdxl-turbo")
    assert values["seed"] == "1234"
    assert values["likeness"] == "0.8123"
    # the metadata does not touch the compressed image: it decodes exactly as OpenCV's own encoding does
    ok, plain = cv2.imencode(".jpg", face[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    ours, theirs = cv2.imread(str(path)), cv2.imdecode(plain, cv2.IMREAD_COLOR)
    assert ours is not None and theirs is not None
    assert np.array_equal(ours, theirs)
    assert np.abs(decoded - face.astype(int)).mean() < 3.0


def test_no_dpi_keeps_the_encoders_density(face: np.ndarray) -> None:
    with Image.open(io.BytesIO(encode_image(face, "png", studio()))) as im:
        assert "dpi" not in im.info
    assert b"pHYs" not in encode_image(face, "png", studio())


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_composite_and_generated_say_what_they_are(fmt: str, face: np.ndarray) -> None:
    made = read_disclosure(encode_image(face, fmt, generated()))
    edited = read_disclosure(encode_image(face, fmt, studio()))
    assert made["DigitalSourceType"] == GENERATED
    assert made["Description"].startswith("AI-generated headshot")
    assert "not a photograph" in made["Description"]
    assert edited["DigitalSourceType"] == COMPOSITE
    assert edited["Description"].startswith("Photo edited with AI")
    assert edited["livecam:engine"] == "studio"
    # nothing to say is left out rather than written empty
    assert "livecam:seed" not in edited and "livecam:model" not in edited and "livecam:likeness" not in edited


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
@pytest.mark.parametrize("identity", ["zoë", "李", "Ana María <Ops & \"Sales\">"])
def test_escaping_and_non_latin1_values_survive(fmt: str, identity: str, face: np.ndarray) -> None:
    d = generated(style='<&>" boardroom', identity=identity, licence="CreativeML Open RAIL++-M © 2023")
    data = encode_image(face, fmt, d)
    fields = read_disclosure(data)
    assert fields == d.fields()
    assert fields["livecam:style"] == '<&>" boardroom'
    assert fields["livecam:identity"] == identity
    packet = xmp_packet(d)
    assert b'<&>"' not in packet
    assert xmp_values(packet)["style"] == '<&>" boardroom'
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if isinstance(im, PngImagePlugin.PngImageFile):
            assert im.text["livecam:identity"] == identity
            assert im.text["livecam:style"] == '<&>" boardroom'


def test_png_uses_text_chunks_for_latin1_and_itxt_otherwise(face: np.ndarray) -> None:
    assert b"tEXtlivecam:identity\x00zo\xeb" in encode_image(face, "png", generated(identity="zoë"))
    itxt = b"iTXtlivecam:identity\x00\x00\x00\x00\x00" + "李".encode()
    assert itxt in encode_image(face, "png", generated(identity="李"))


def test_defaults_fill_creation_time_and_software() -> None:
    d = generated(created="")
    fields = d.fields()
    created = dt.datetime.fromisoformat(fields["Creation Time"])
    assert created.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 60
    assert fields["Software"] == f"livecam {livecam.__version__}"
    assert generated(software="livecam 9.9 (test)").fields()["Software"] == "livecam 9.9 (test)"


def test_control_characters_cannot_break_the_xml(face: np.ndarray) -> None:
    d = generated(style="bad\x00style\x1b")
    assert read_disclosure(encode_image(face, "png", d))["livecam:style"] == "bad\ufffdstyle\ufffd"
    ET.fromstring(xmp_packet(d))


@pytest.mark.parametrize("changes, message", [
    ({"source_type": "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"}, "source_type"),
    ({"engine": "midjourney"}, "engine"),
    ({"seed": 1.5}, "seed"),
    ({"likeness": float("nan")}, "likeness"),
    ({"created": "yesterday"}, "created"),
])
def test_disclosure_is_validated(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generated(**changes)


def test_numpy_numbers_are_accepted() -> None:
    d = generated(seed=np.int64(7), likeness=np.float32(0.5))
    assert d.seed == 7 and type(d.seed) is int
    assert d.fields()["livecam:likeness"] == "0.5000"


@pytest.mark.parametrize("image, shown", [
    (np.zeros((8, 8, 3), np.float32), "float32"),
    (np.zeros((8, 8), np.uint8), "(8, 8)"),
    (np.zeros((8, 8, 4), np.uint8), "(8, 8, 4)"),
    (np.zeros((0, 8, 3), np.uint8), "(0, 8, 3)"),
    ([[0, 0, 0]], "list"),
])
def test_bad_images_are_refused_naming_what_arrived(image: np.ndarray, shown: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=rf"RGB uint8.*{re.escape(shown)}"):
        write_image(tmp_path / "x.png", image, generated())
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_and_suffix(tmp_path: Path, face: np.ndarray) -> None:
    with pytest.raises(ValueError, match="gif"):
        encode_image(face, "gif", generated())
    target = tmp_path / "headshot.webp"
    with pytest.raises(ValueError, match=r"headshot\.webp"):
        write_image(target, face, generated())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="quality"):
        encode_image(face, "jpeg", generated(), quality=0)
    with pytest.raises(ValueError, match="dpi"):
        encode_image(face, "png", generated(), dpi=0)


def test_unwritable_folder_leaves_nothing_behind(tmp_path: Path, face: np.ndarray) -> None:
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("a regular file")
    with pytest.raises(OSError):
        write_image(not_a_folder / "headshot.png", face, generated())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_failed_replace_removes_the_part_file(tmp_path: Path, face: np.ndarray) -> None:
    occupied = tmp_path / "headshot.jpg"
    occupied.mkdir()  # a folder where the image should go: the final rename fails after the .part was written
    with pytest.raises(OSError):
        write_image(occupied, face, generated())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["headshot.jpg"]
    assert occupied.is_dir()


def test_rewriting_replaces_the_old_file(tmp_path: Path, face: np.ndarray) -> None:
    path = tmp_path / "headshot.png"
    write_image(path, face, studio())
    write_image(path, face, generated())
    assert read_disclosure(path)["DigitalSourceType"] == GENERATED


def test_read_disclosure_of_other_images(face: np.ndarray) -> None:
    for ext in (".png", ".jpg"):
        ok, plain = cv2.imencode(ext, face)
        assert ok
        assert read_disclosure(plain.tobytes()) == {}
    with pytest.raises(ValueError, match="PNG or JPEG"):
        read_disclosure(b"GIF89a\x01\x00\x01\x00")


def test_read_disclosure_accepts_the_attribute_form_other_tools_write(face: np.ndarray) -> None:
    packet = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        f'xmlns:xmp="http://ns.adobe.com/xap/1.0/" Iptc4xmpExt:DigitalSourceType="{GENERATED}" '
        'xmp:CreatorTool="Some Editor 2.0"/></rdf:RDF></x:xmpmeta>').encode()
    other = io.BytesIO()
    Image.fromarray(face).save(other, "JPEG", xmp=packet)  # another tool's JPEG with this packet
    fields = read_disclosure(other.getvalue())
    assert fields == {"DigitalSourceType": GENERATED, "Software": "Some Editor 2.0"}


def test_provenance_error_is_a_user_error() -> None:
    assert issubclass(ProvenanceError, LivecamError)


# C2PA -------------------------------------------------------------------------------------------------------------


def _certificates(folder: Path, *, usable: bool = True) -> tuple[Path, Path]:
    """A test CA and an end-entity certificate it issued (EC P-256 for ES256), as c2pa requires: the leaf is v3,
    not a CA, with an authority key identifier, key usage digitalSignature and extended key usage emailProtection
    (which c2pa 0.91 checks; it refuses id-kp-documentSigning and no EKU). `usable=False` leaves out the EKU."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "livecam tests")])

    def usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                             encipher_only=False, decipher_only=False)

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("livecam test CA")).issuer_name(name("livecam test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(usage(sign=False, ca=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(name("livecam test signer")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(sign=True, ca=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if usable:
        leaf = leaf.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    certificate = leaf.sign(ca_key, hashes.SHA256())
    chain = folder / "chain.pem"
    pem = serialization.Encoding.PEM
    chain.write_bytes(certificate.public_bytes(pem) + ca.public_bytes(pem))
    key_file = folder / "signer.key"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return chain, key_file


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import c2pa  # noqa: F401  (a missing package is a failure, not a skip)
    return _certificates(tmp_path_factory.mktemp("c2pa"))


def _active(store: dict[str, Any]) -> dict[str, Any]:
    active: dict[str, Any] = store["manifests"][store["active_manifest"]]
    return active


def _assertion(manifest: dict[str, Any], prefix: str) -> dict[str, Any]:
    found = [a["data"] for a in manifest["assertions"] if a["label"].startswith(prefix)]
    assert len(found) == 1, [a["label"] for a in manifest["assertions"]]
    data: dict[str, Any] = found[0]
    return data


@pytest.mark.parametrize("name", ["headshot.jpg", "headshot.png"])
def test_c2pa_manifest_signed_and_read_back(name: str, tmp_path: Path, face: np.ndarray,
                                            credentials: tuple[Path, Path]) -> None:
    assert c2pa_available()
    d = generated()
    path = tmp_path / name
    write_image(path, face, d, dpi=300)
    assert read_c2pa(path) is None

    sign_c2pa(path, d, *credentials)

    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    store = read_c2pa(path)
    assert store is not None
    manifest = _active(store)
    assert manifest["title"] == name
    assert manifest["claim_generator_info"][0]["name"] == "livecam"
    actions = _assertion(manifest, "c2pa.actions")["actions"]
    assert actions[0]["action"] == "c2pa.created"
    assert actions[0]["digitalSourceType"] == GENERATED
    generation = _assertion(manifest, "dev.livecam.generation")
    assert generation["seed"] == 1234
    assert generation["likeness"] == pytest.approx(0.8123)
    assert generation["model"] == d.model
    # the signature is valid (the test CA is just not in c2pa's trust list)
    codes = {status["code"] for status in store.get("validation_status", [])}
    assert codes <= {"signingCredential.untrusted"}, codes
    # the XMP and PNG text disclosure and the pixels are still there
    assert read_disclosure(path) == d.fields()
    with Image.open(path) as im:
        im.load()
        assert im.size == (321, 401)
        if name.endswith(".png"):
            assert np.array_equal(np.asarray(im.convert("RGB")), face)


def test_c2pa_composite_records_the_edit(tmp_path: Path, face: np.ndarray, credentials: tuple[Path, Path]) -> None:
    path = tmp_path / "studio.jpg"
    write_image(path, face, studio())
    sign_c2pa(path, studio(), *credentials)
    store = read_c2pa(path)
    assert store is not None
    actions = _assertion(_active(store), "c2pa.actions")["actions"]
    assert [(a["action"], a["digitalSourceType"]) for a in actions] == [
        ("c2pa.created", COMPOSITE), ("c2pa.edited", COMPOSITE)]
    generation = _assertion(_active(store), "dev.livecam.generation")
    assert generation["seed"] is None and generation["engine"] == "studio"


def test_c2pa_missing_or_bad_credentials(tmp_path: Path, face: np.ndarray, credentials: tuple[Path, Path]) -> None:
    chain, key = credentials
    path = tmp_path / "headshot.jpg"
    write_image(path, face, generated())
    before = path.read_bytes()
    missing = tmp_path / "nowhere" / "chain.pem"
    with pytest.raises(ProvenanceError, match=str(missing)):
        sign_c2pa(path, generated(), missing, key)
    with pytest.raises(ProvenanceError, match=r"signer\.key"):
        sign_c2pa(path, generated(), chain, key.with_name("signer.key.missing"))
    with pytest.raises(ProvenanceError, match="not PEM"):
        sign_c2pa(path, generated(), path, key)
    with pytest.raises(ProvenanceError, match="algorithm"):
        sign_c2pa(path, generated(), chain, key, algorithm="md5")
    assert path.read_bytes() == before


def test_c2pa_refuses_an_unusable_certificate_and_keeps_the_file(tmp_path: Path, face: np.ndarray,
                                                          credentials: tuple[Path, Path]) -> None:
    chain, key = _certificates(tmp_path, usable=False)
    path = tmp_path / "headshot.png"
    write_image(path, face, generated())
    before = path.read_bytes()
    with pytest.raises(ProvenanceError, match=r"C2PA signing of .*headshot\.png failed.*certificate"):
        sign_c2pa(path, generated(), chain, key)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.part"))


def test_c2pa_missing_extra_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provenance, "c2pa_available", lambda: False)
    with pytest.raises(ProvenanceError, match=r'pip install -c constraints.txt -e "\.\[provenance\]"'):
        sign_c2pa(tmp_path / "a.jpg", generated(), tmp_path / "c.pem", tmp_path / "k.pem")
