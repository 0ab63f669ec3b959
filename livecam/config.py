"""One config: config.toml read once into frozen dataclasses, with `--set section.key=value` overrides.

The studio engine's sections ([framing], [background], [relight], [skin]) are the engine's own settings
dataclasses, so each setting is defined and validated in one place. Every dataclass validates itself
in `__post_init__` and raises ValueError starting with the field name; the loader adds the section
and the file, so an error reads `config.toml: framing.face_height = 2.0: must be between 0.05 and 0.9`.

The module is long because it is the whole schema of config.toml in one place, one frozen dataclass per
section, each validating its own keys: split, the one reference a user and a developer read would scatter.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.background import BackgroundSettings
from engine.crops import DEFAULT_PLATFORMS, PlatformSpec
from engine.diffusion_settings import DiffusionSettings
from engine.framing import FramingSettings
from engine.gate import GateSettings
from engine.relight import RelightSettings
from engine.skin import SkinSettings
from engine.styles import DEFAULT_STYLES, StylePreset
from engine.validation import check_choice, check_range
from livecam.errors import LivecamError
from models.training_settings import TrainingSettings

ENGINE_KINDS = ("auto", "studio", "diffusion")


@dataclass(frozen=True)
class InputSettings:
    source: str = "0"
    """Camera index ("0"), a video file, or a folder of images."""
    pace: bool = True
    """Play files at their own frame rate, like a camera (False: every frame, as fast as possible)."""
    loop: bool = False
    """Start a file or folder again at its end."""
    width: int = 1280
    height: int = 720
    fps: float = 30.0
    """Requested camera mode (the output's 16:9 at 1:1, so nothing is upscaled; a camera that does not offer it
    sends what it has); a folder of images plays at this rate."""
    reconnect_s: float = 10.0
    """How long to keep reopening a lost camera before giving up."""

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ValueError("source = '': must be a camera index, a video file or a folder of images")
        check_range("width", self.width, 16, 7680)
        check_range("height", self.height, 16, 4320)
        check_range("fps", self.fps, 1, 240)
        check_range("reconnect_s", self.reconnect_s, 0, 3600)


@dataclass(frozen=True)
class OutputSettings:
    target: str = "virtualcam"
    """"virtualcam", "preview", or a video file path (.mp4, .avi, .mkv)."""
    width: int = 1280
    height: int = 720
    fps: float = 30.0
    device: str = ""
    """Virtual camera device (e.g. /dev/video10 on Linux); empty: the first one found."""
    backend: str = ""
    """pyvirtualcam backend (v4l2loopback, obs, unitycapture); empty: the platform default."""

    def __post_init__(self) -> None:
        if not self.target.strip():
            raise ValueError("target = '': must be virtualcam, preview or a video file path")
        check_range("width", self.width, 64, 7680)
        check_range("height", self.height, 64, 4320)
        if self.width % 2 or self.height % 2:
            raise ValueError(f"width x height = {self.width}x{self.height}: both must be even "
                             "(video encoders and virtual cameras need it)")
        check_range("fps", self.fps, 1, 240)


DEFAULT_SUBJECT = "a person"
"""The prompt's subject when engine.subject is not set (an enrolled identity then supplies its own)."""


@dataclass(frozen=True)
class EngineSettings(DiffusionSettings):
    """Which engine runs, and the diffusion engine's own settings (inherited, defined once in the engine)."""

    kind: str = "auto"
    """studio (CPU, runs anywhere), diffusion (GPU), or auto (diffusion when it can run, else studio)."""
    style: str = "corporate"
    """The style preset the live camera wears (its backdrop; with diffusion, its prompt)."""
    subject: str = DEFAULT_SUBJECT
    """Who the diffusion prompt pictures; an enrolled identity's trigger words replace the default."""

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, ENGINE_KINDS)
        if not self.style.strip():
            raise ValueError("style = '': must name a style preset")
        super().__post_init__()

    @property
    def diffusion(self) -> DiffusionSettings:
        """The diffusion settings alone, as the engine takes them."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(DiffusionSettings)}
        return DiffusionSettings(**fields)


@dataclass(frozen=True)
class TrackingSettings:
    min_detection_confidence: float = 0.5
    min_presence_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    smoothing: bool = True
    """One-Euro filter on the landmarks, so the framing does not jitter."""
    predict: bool = True
    """Render each frame with landmarks predicted from the frames before it, so rendering runs beside
    tracking instead of after it (lower latency; ~2 px off on a moving 180 px face)."""
    min_cutoff: float = 1.0
    """One-Euro cutoff (Hz) at rest: lower is steadier, with more lag on slow moves."""
    beta: float = 20.0
    """One-Euro speed coefficient: higher follows fast moves with less lag."""

    def __post_init__(self) -> None:
        for name in ("min_detection_confidence", "min_presence_confidence", "min_tracking_confidence"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        check_range("min_cutoff", self.min_cutoff, 0.01, 100.0)
        check_range("beta", self.beta, 0.0, 10_000.0)


@dataclass(frozen=True)
class ModelSettings:
    dir: str = ""
    """Where model files are looked up and downloaded; empty: $LIVECAM_MODEL_DIR, else the user cache."""
    download: bool = True
    """Download a missing model from its official URL (checked against its pinned sha256)."""
    face_landmarker: str = ""
    """Path to face_landmarker.task; empty: look in the model directory."""
    segmenter: str = ""
    """Path to the selfie segmentation .tflite; empty: look in the model directory."""
    base: str = "sdxl-turbo"
    """Diffusion base model: a registry name (`livecam models`), a hub id, a diffusers folder or a single
    .safetensors file."""
    controlnet: str = "openpose-sdxl"
    """Pose ControlNet (registry name, hub id or folder); empty: none."""
    tiny_vae: str = "taesdxl"
    """Autoencoder for live frames (TAESD-XL); empty: the base model's own VAE (slower)."""
    vae: str = "sdxl-vae-fp16-fix"
    """Full autoencoder for stills."""
    speed_lora: str = ""
    """A few-step LoRA fused into the base (sdxl-lightning-2step, hyper-sdxl-1step, lcm-lora-sdxl, or a
    file); empty: none (SDXL-Turbo needs none)."""
    base_config: str = ""
    """For a single-file base: a diffusers folder or hub id giving its component configs; empty: inferred."""
    identity: str = ""
    """The user's identity: an enrolled name (`livecam identities`) or a LoRA .safetensors file (diffusers or
    kohya format); empty: none."""
    face_encoder: str = "reid"
    """Face-embedding model for enrolment checks and likeness: reid (Intel, Apache-2.0) or arcface
    (insightface, non-commercial weights)."""
    face_reid_xml: str = ""
    """Path to face-reidentification-retail-0095.xml; empty: look in the model directory."""
    face_reid_bin: str = ""
    """Path to face-reidentification-retail-0095.bin; empty: look in the model directory."""
    face_detector: str = ""
    """Path to face_detection_yunet_2023mar.onnx; empty: look in the model directory."""
    arcface: str = ""
    """Path to insightface's w600k_r50.onnx (buffalo_l); empty: insightface's own cache."""
    device: str = "auto"
    """auto (CUDA when there is one), cuda, cuda:N or cpu."""
    dtype: str = "auto"
    """auto (fp16 on CUDA, fp32 on CPU), fp16, bf16 or fp32."""

    def __post_init__(self) -> None:
        check_choice("dtype", self.dtype, ("auto", "fp16", "bf16", "fp32"))
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device = {self.device!r}: must be auto, cpu, cuda or cuda:N")
        if not self.base.strip():
            raise ValueError("base = '': must name the diffusion base model")
        check_choice("face_encoder", self.face_encoder, ("reid", "arcface"))


@dataclass(frozen=True)
class EnrollSettings(TrainingSettings):
    """`livecam enroll`: the photo checks, and the LoRA training settings (inherited from models/)."""

    min_photos: int = 8
    """Usable photos needed; fewer than 8 is allowed with a warning."""
    min_image_px: int = 256
    """Shortest side a photo must have."""
    min_face_px: int = 120
    """Face height (forehead to chin) a photo must show, in its pixels."""
    min_sharpness: float = 20.0
    """Variance of the Laplacian on a 128 px face crop; the shared test selfies measure 33-1500, the same
    blurred (sigma 2.5 px) 3-220."""
    min_brightness: float = 0.12
    max_brightness: float = 0.88
    """Mean face brightness (0-1) a photo may have."""
    duplicate_bits: int = 5
    """Face crops whose 64-bit difference hashes differ in at most this many bits are near duplicates."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("min_photos", self.min_photos, 1, 100)
        check_range("min_image_px", self.min_image_px, 32, 10_000)
        check_range("min_face_px", self.min_face_px, 16, 5_000)
        check_range("min_sharpness", self.min_sharpness, 0.0, 10_000.0)
        check_range("min_brightness", self.min_brightness, 0.0, 1.0)
        check_range("max_brightness", self.max_brightness, 0.0, 1.0)
        check_range("duplicate_bits", self.duplicate_bits, 0, 32)


@dataclass(frozen=True)
class StillSettings(GateSettings):
    """`livecam still`: generation, the quality gate (inherited from engine/gate.py), files and signing."""

    variants: int = 4
    """Kept images wanted per style (--variants)."""
    max_retries: int = 2
    """A rejected candidate is generated again with a new seed up to this many times per variant."""
    seed: int = 0
    """First seed; a style's candidates take seed, seed+1, ... in order, each recorded in the report."""
    size: int = 0
    """Side of the generated square (multiple of 32); 0: the base model's native size (SDXL 1024, SDXL-Turbo
    512)."""
    steps: int = 4
    """Denoising steps (live uses 1-2)."""
    strength: float = 0.6
    """img2img strength on the framed photo."""
    keep_face: bool = False
    """Diffusion stills: blend the person's own face from the studio square back into each generated one
    (`engine.keep_face`, as live video does with `engine.keep_face`). Off by default: a still is judged by the
    gate's likeness check instead, and the generated face is re-made until it passes."""
    face_height: float = 0.25
    """Face height as a fraction of the kept square (room around it for every platform's crop)."""
    eye_line: float = 0.42
    max_size: int = 2048
    """Largest side of a studio-engine still (it is cut from the photo at the photo's own resolution)."""
    max_upscale: float = 1.5
    """A platform crop is never enlarged more than this; beyond it the file is written smaller and the run
    says so."""
    platforms: str = "linkedin,resume,website,avatar,x,print"
    """Crops made when --platforms is not given (names from [platforms.*]); empty: none."""
    format: str = "jpeg"
    """jpeg or png, for every file written."""
    jpeg_quality: int = 95
    contact_sheet: bool = True
    c2pa_cert: str = ""
    """PEM certificate chain (signer first) to sign a C2PA manifest into every file; empty: no C2PA."""
    c2pa_key: str = ""
    """The signer's PEM private key."""
    c2pa_tsa_url: str = ""
    """Time-stamp authority for the C2PA signature; empty: none (signing stays offline)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("variants", self.variants, 1, 64)
        check_range("max_retries", self.max_retries, 0, 20)
        check_range("seed", self.seed, 0, 2**31 - 1)
        if self.size and (self.size % 32 or not 64 <= self.size <= 2048):
            raise ValueError(f"size = {self.size}: must be 0 (native) or a multiple of 32 from 64 to 2048")
        check_range("steps", self.steps, 1, 100)
        check_range("strength", self.strength, 0.05, 1.0)
        check_range("face_height", self.face_height, 0.05, 0.9)
        check_range("eye_line", self.eye_line, 0.1, 0.9)
        check_range("max_size", self.max_size, 256, 8192)
        check_range("max_upscale", self.max_upscale, 1.0, 8.0)
        check_choice("format", self.format, ("jpeg", "png"))
        check_range("jpeg_quality", self.jpeg_quality, 50, 100)
        if bool(self.c2pa_cert) != bool(self.c2pa_key):
            raise ValueError("c2pa_cert and c2pa_key: set both (to sign C2PA manifests) or neither")

    @property
    def platform_names(self) -> list[str]:
        return [p.strip() for p in self.platforms.split(",") if p.strip()]


_ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


@dataclass(frozen=True)
class ServeSettings:
    """`livecam serve`: the web server with the studio page and the WebRTC stream for viewers."""

    host: str = "127.0.0.1"
    """Address to listen on (--host); 127.0.0.1 = this computer only, 0.0.0.0 = every network interface."""
    port: int = 8000
    """TCP port (--port); 0 = any free port."""
    token: str = ""
    """Access token every request must carry (--token); empty: none on a loopback address, else a random one
    made at start and printed in the URLs."""
    max_body_kb: int = 64
    """Largest request body accepted, in KiB (an SDP offer is 2-10 KiB)."""
    ice_servers: str = ""
    """STUN/TURN URLs for viewers outside the LAN, comma-separated (stun:HOST:PORT, turn:HOST:PORT); empty:
    none (host candidates only)."""
    ice_username: str = ""
    ice_credential: str = ""
    """TURN username and credential, for the turn:/turns: URLs in ice_servers."""
    export_dir: str = ""
    """Where the page's exports go; empty: <data dir>/exports ($LIVECAM_DATA_DIR, else the user data dir)."""
    export_variants: int = 2
    """Kept images per style when the page's export asks for no number (1..8)."""
    request_timeout_s: float = 10.0
    """A request's headers and body must arrive within this many seconds of the connection (or of the previous
    request on it), or the connection is closed: idle or half-sent connections cannot hold the server's open
    files (1..300)."""
    offer_timeout_s: float = 15.0
    """A viewer's peer connection that is not connected this many seconds after its offer is closed (2..300)."""
    max_pending_offers: int = 32
    """Viewers' peer connections still connecting, at once, from everyone (1..200): more get 503."""
    max_pending_offers_per_client: int = 8
    """The same, from one address (an IPv6 /64) (1..200): more get 429."""

    def __post_init__(self) -> None:
        if not self.host.strip() or any(c.isspace() for c in self.host):
            raise ValueError(f"host = {self.host!r}: must be an address or host name, e.g. 127.0.0.1 or 0.0.0.0")
        check_range("port", self.port, 0, 65535)
        if self.token and (len(self.token) < 16 or not set(self.token) <= _TOKEN_CHARS):
            raise ValueError("token: must be at least 16 characters of A-Z a-z 0-9 - _ . ~ (or empty: generated "
                             "when needed)")
        check_range("max_body_kb", self.max_body_kb, 1, 10_240)
        for url in self.ice_server_urls:
            if not url.startswith(_ICE_SCHEMES) or any(c.isspace() for c in url):
                raise ValueError(f"ice_servers: {url!r} is not a STUN/TURN URL ({', '.join(_ICE_SCHEMES)}...)")
        if bool(self.ice_username) != bool(self.ice_credential):
            raise ValueError("ice_username and ice_credential: set both (for a TURN server) or neither")
        check_range("export_variants", self.export_variants, 1, 8)
        check_range("request_timeout_s", self.request_timeout_s, 1, 300)
        check_range("offer_timeout_s", self.offer_timeout_s, 2, 300)
        check_range("max_pending_offers", self.max_pending_offers, 1, 200)
        check_range("max_pending_offers_per_client", self.max_pending_offers_per_client, 1, 200)

    @property
    def ice_server_urls(self) -> list[str]:
        return [u.strip() for u in self.ice_servers.split(",") if u.strip()]


_PUBLISH_SCHEMES = {"janus": "http", "janus+http": "http", "janus+https": "https"}
PUBLISH_VIEWERS = ("janus", "livecam")


@dataclass(frozen=True)
class PublishSettings:
    """`livecam serve --publish`: the rendered stream sent once to a media server that fans it out to the
    audience (Janus's VideoRoom), so livecam encodes once whatever the number of viewers."""

    url: str = ""
    """janus://HOST:PORT/ROOM: Janus's HTTP API at http://HOST:PORT/janus, VideoRoom room ROOM (janus+https://
    for HTTPS; a path before the room, janus://HOST:PORT/PATH/ROOM, replaces /janus); empty: publish nowhere."""
    api_secret: str = field(default="", repr=False)
    """Janus's api_secret (janus.jcfg), sent with every request of livecam's; never sent to viewers' browsers."""
    token: str = field(default="", repr=False)
    """A Janus token (token_auth in janus.jcfg) for livecam's requests."""
    pin: str = field(default="", repr=False)
    """The room's PIN (janus.plugin.videoroom.jcfg `pin`); the viewer page gets it to join the room."""
    viewer_token: str = field(default="", repr=False)
    """A Janus token for the viewers' browsers (with token_auth); empty: none."""
    display: str = "livecam"
    """The publisher's display name in the room."""
    viewers: str = "janus"
    """Where the viewer page (/view) takes the stream from while publishing: janus (through the room) or
    livecam (its own peer connection, as without publishing)."""
    viewer_url: str = ""
    """Janus's HTTP API as the viewers' browsers reach it, e.g. https://janus.example.com/janus; empty: the one
    livecam publishes to."""
    janus_js: str = "/usr/share/javascript/janus-gateway/janus.js"
    """Janus's JavaScript library for the viewer page (Debian: libjs-janus-gateway), served by livecam."""
    retry_max_s: float = 30.0
    """Reconnecting after Janus went away or refused: waits 1, 2, 4 ... seconds, at most this long (1..600)."""
    connect_timeout_s: float = 15.0
    """A publication not up (ICE and DTLS done) this long after Janus answered is given up and retried (2..120)."""

    def __post_init__(self) -> None:
        if self.url:
            self.janus_api  # noqa: B018 - parses the URL, ValueError naming it
        check_choice("viewers", self.viewers, PUBLISH_VIEWERS)
        if self.viewer_url and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", self.viewer_url):
            raise ValueError(f"viewer_url = {self.viewer_url!r}: must be an http:// or https:// URL of Janus's API, "
                             "e.g. https://janus.example.com/janus")
        for name in ("api_secret", "token", "pin", "viewer_token", "display"):
            if any(c.isspace() and c != " " for c in getattr(self, name)):
                raise ValueError(f"{name}: must not hold line breaks or tabs")
        check_range("retry_max_s", self.retry_max_s, 1, 600)
        check_range("connect_timeout_s", self.connect_timeout_s, 2, 120)

    @property
    def janus_api(self) -> tuple[str, int | str]:
        """(Janus's HTTP API URL, the room) from `url`: janus://h:8088/1234 -> ("http://h:8088/janus", 1234)."""
        scheme, sep, rest = self.url.partition("://")
        if not sep or scheme.lower() not in _PUBLISH_SCHEMES:
            raise ValueError(f"url = {self.url!r}: must be janus://HOST:PORT/ROOM (or janus+https://...)")
        host, _, path = rest.partition("/")
        parts = [p for p in path.split("/") if p]
        if not host or not parts or any(c in self.url for c in " ?#@") or any(c.isspace() for c in self.url):
            raise ValueError(f"url = {self.url!r}: must be janus://HOST:PORT/ROOM, e.g. janus://127.0.0.1:8088/1234")
        room: int | str = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
        base = "/" + "/".join(parts[:-1]) if len(parts) > 1 else "/janus"
        return f"{_PUBLISH_SCHEMES[scheme.lower()]}://{host}{base}", room


@dataclass(frozen=True)
class Config:
    input: InputSettings = field(default_factory=InputSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    framing: FramingSettings = field(default_factory=FramingSettings)
    background: BackgroundSettings = field(default_factory=BackgroundSettings)
    relight: RelightSettings = field(default_factory=RelightSettings)
    skin: SkinSettings = field(default_factory=SkinSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    enroll: EnrollSettings = field(default_factory=EnrollSettings)
    still: StillSettings = field(default_factory=StillSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    publish: PublishSettings = field(default_factory=PublishSettings)
    styles: dict[str, StylePreset] = field(default_factory=lambda: dict(DEFAULT_STYLES))
    """Style presets by name ([styles.NAME] tables: attire, lighting, background); the built-in ones can be
    changed and new ones added."""
    platforms: dict[str, PlatformSpec] = field(default_factory=lambda: dict(DEFAULT_PLATFORMS))
    """Platform crops for stills by name ([platforms.NAME] tables: width, height, min_width, ...)."""

    def __post_init__(self) -> None:
        if self.engine.style not in self.styles:
            raise ValueError(f"engine.style = {self.engine.style!r}: no such style; styles: {', '.join(self.styles)}")
        unknown = [p for p in self.still.platform_names if p not in self.platforms]
        if unknown:
            raise ValueError(f"still.platforms: no platform {unknown[0]!r}; platforms: {', '.join(self.platforms)}")


def default_config_path() -> Path | None:
    """`./config.toml` when there is one; otherwise the built-in defaults apply."""
    here = Path("config.toml")
    return here if here.is_file() else None


def load_config(path: Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read `path` (None: defaults only), apply `section.key=value` overrides, validate everything.

    Raises LivecamError naming the file and key for any problem.
    """
    where = str(path) if path else "defaults"
    tables: dict[str, Any] = {}
    if path is not None:
        try:
            tables = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LivecamError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise LivecamError(f"cannot read config file {path}: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise LivecamError(f"{path} is not valid TOML: {e}") from None
    raw_overrides = {}
    for item in overrides:
        section, key, text = _parse_override(item)
        tables.setdefault(section, {})
        if not isinstance(tables[section], dict):
            raise LivecamError(f"{where}: [{section}] must be a table")
        name, dot, field = key.partition(".")
        if section in _NAMED_TABLES and dot:
            # --set styles.NAME.KEY=VALUE: one key of one named entry ([styles.NAME] KEY = VALUE).
            entry = tables[section].setdefault(name, {})
            if not isinstance(entry, dict):
                raise LivecamError(f"{where}: {section}.{name} must be a table")
            entry[field] = _parse_value(text)
            raw_overrides[(f"{section}.{name}", field)] = text
            continue
        tables[section][key] = _parse_value(text)
        raw_overrides[(section, key)] = text
    return _build(tables, raw_overrides, where)


_NAMED_TABLES = ("styles", "platforms")
"""Sections made of named tables ([styles.NAME]): an override names the entry and its key."""


def _parse_override(item: str) -> tuple[str, str, str]:
    name, sep, text = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise LivecamError(f"--set {item!r}: expected section.key=value, e.g. --set output.width=1920")
    return section, key.strip(), text.strip()


def _parse_value(text: str) -> Any:
    """A TOML value when the text is one (true, 3, 0.5, "x"), else the text itself (a bare path)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _build(tables: dict[str, Any], raw: dict[tuple[str, str], str], where: str) -> Config:
    sections = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(set(tables) - set(sections))
    if unknown:
        source = next((_set_label(s, k, raw) for s, k in raw if s == unknown[0]), where)
        raise LivecamError(f"{source}: unknown section [{unknown[0]}]; known sections: {', '.join(sections)}")
    built: dict[str, Any] = {}
    hints = typing.get_type_hints(Config)
    for name in sections:
        table = tables.get(name, {})
        if not isinstance(table, dict):
            raise LivecamError(f"{where}: {name} must be a table ([{name}])")
        if name == "styles":
            built[name] = _build_tables("styles", StylePreset, DEFAULT_STYLES, table, raw, where)
        elif name == "platforms":
            built[name] = _build_tables("platforms", PlatformSpec, DEFAULT_PLATFORMS, table, raw, where)
        else:
            built[name] = _build_section(name, hints[name], table, raw, where)
    try:
        return Config(**built)
    except ValueError as e:
        raise LivecamError(f"{_blame(str(e), None, raw, where)}: {e}") from None


def _build_tables(section: str, cls: type, defaults: dict[str, Any], table: dict[str, Any],
                  raw: dict[tuple[str, str], str], where: str) -> dict[str, Any]:
    """[SECTION.NAME] tables over the built-in entries (styles, platforms): a partial table changes only the
    keys it names; a new entry needs every key without a default."""
    entries = dict(defaults)
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for name, entry in table.items():
        source = next((_set_label(s, k, raw) for s, k in raw if s in (section, f"{section}.{name}")
                       and (s != section or k == name)), where)
        if not isinstance(entry, dict):
            raise LivecamError(f"{source}: {section}.{name} must be a table ([{section}.{name}] with "
                               f"{', '.join(required)})")
        merged = {**(dataclasses.asdict(entries[name]) if name in entries else {}), **entry}
        missing = [key for key in required if key not in merged]
        if missing:
            raise LivecamError(f"{source}: {section}.{name} is new and needs {' and '.join(missing)} as well")
        entries[name] = _build_section(f"{section}.{name}", cls, merged, raw, where)
    return entries


def _build_section(section: str, cls: type, table: dict[str, Any], raw: dict[tuple[str, str], str],
                   where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in table.items():
        source = _set_label(section, key, raw) if (section, key) in raw else where
        if key not in hints:
            raise LivecamError(f"{source}: unknown key {section}.{key}; keys in [{section}]: {', '.join(known)}")
        values[key] = _coerce(f"{section}.{key}", hints[key], value, raw.get((section, key)), source)
    try:
        return cls(**values)
    except ValueError as e:
        raise LivecamError(f"{_blame(str(e), section, raw, where)}: {section}.{e}") from None


def _set_label(section: str, key: str, raw: dict[tuple[str, str], str]) -> str:
    """How the user wrote an override: `--set section.key=value`."""
    return f"--set {section}.{key}={raw[(section, key)]}"


def _blame(message: str, section: str | None, raw: dict[tuple[str, str], str], where: str) -> str:
    """Where a value a dataclass refused came from: the --set of a key the message starts with (`key = ...`,
    or `section.key = ...` when `section` is None), else `where` (the file, or the defaults)."""
    head = message.split(":", 1)[0]
    named = set(re.findall(r"[A-Za-z_][\w.]*", head))
    for sec, key in raw:
        if (key in named and sec == section) or f"{sec}.{key}" in named:
            return _set_label(sec, key, raw)
    return where


def _coerce(name: str, kind: Any, value: Any, raw_text: str | None, where: str) -> Any:
    """Check `value` against the field's type; ints are accepted for floats, nothing else is converted
    (but a --set text is taken as is for a string field, so `--set input.source=0` works). `where` is
    whoever set the value (the file, or the --set), for the message."""
    if kind is str:
        if isinstance(value, str):
            return value
        if raw_text is not None:
            return raw_text.strip("\"'")
        raise LivecamError(f"{where}: {name} = {value!r}: must be a string (in quotes)")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise LivecamError(f"{where}: {name} = {value!r}: must be true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise LivecamError(f"{where}: {name} = {value!r}: must be a whole number")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise LivecamError(f"{where}: {name} = {value!r}: must be a number")
    raise TypeError(f"config field {name} has an unsupported type {kind!r}")
