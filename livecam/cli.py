"""The `livecam` command: run, serve, doctor, models, enroll, identities, still, cutout, styles."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from livecam import __version__
from livecam.errors import LivecamError

if TYPE_CHECKING:
    from livecam.config import Config

# OpenCV logs its camera probing (even "errors" for indices that do not exist); every failure livecam
# can hit is checked and reported as a LivecamError, so its console log is off unless the user sets it.
# (MediaPipe's start-up chatter is handled in models/native_log.py.)
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")

log = logging.getLogger("livecam")


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="PATH",
                        help="config file (default: ./config.toml if present, else built-in defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                        help="override one setting, e.g. --set background.mode=blur (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livecam", description="A real-time virtual headshot camera.")
    parser.add_argument("--version", action="version", version=f"livecam {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the live camera",
                         description="Run the live camera: capture, track, render, publish.")
    _config_args(run)
    run.add_argument("--input", metavar="SOURCE", help="camera index, video file or folder of images")
    run.add_argument("--output", metavar="TARGET", help="virtualcam, preview, or a video file (.mp4 .avi .mkv)")
    run.add_argument("--engine", choices=("studio", "diffusion", "auto"), help="renderer (default: auto)")
    run.add_argument("--frames", type=int, metavar="N", help="stop after N input frames")
    run.add_argument("--no-pace", action="store_true",
                     help="process every frame of a file as fast as possible instead of at its frame rate")
    run.add_argument("--stats-json", type=Path, metavar="PATH", help="write the run's statistics as JSON")

    doctor = sub.add_parser("doctor", help="check camera, virtual camera, GPU and model files")
    _config_args(doctor)

    models = sub.add_parser("models", help="list the model files livecam uses and whether they are here")
    _config_args(models)

    enroll = sub.add_parser("enroll", help="create your identity from 8-15 selfies",
                            description="Check the selfies, train your identity LoRA locally and save it under a "
                                        "name that `livecam run --set models.identity=NAME` uses.")
    _config_args(enroll)
    enroll.add_argument("photos", nargs="+", metavar="PHOTO", help="selfie files, or a folder of them")
    enroll.add_argument("--name", required=True, help="name of the identity (lower-case letters, digits, - and _)")
    enroll.add_argument("--resume", action="store_true", help="continue an interrupted enrolment of --name")

    identities = sub.add_parser("identities", help="list enrolled identities, or delete one")
    _config_args(identities)
    identities.add_argument("--delete", metavar="NAME", help="delete identity NAME with all its files")

    still = sub.add_parser(
        "still", help="export professional headshots from a photo (or the camera)",
        description="Make headshots in the chosen styles, keep those that pass the quality gate (likeness, one "
                    "face, size and position, sharpness, exposure, open eyes), crop them for each platform and "
                    "label every file as AI-generated. Each run is a folder with the images, report.json and a "
                    "contact sheet.")
    _config_args(still)
    still.add_argument("photo", nargs="?", type=Path, metavar="PHOTO",
                       help="the photo to start from; without it, a frame from the camera (input.source)")
    still.add_argument("--identity", default="", metavar="NAME", help="your enrolled identity (livecam identities)")
    still.add_argument("--styles", metavar="A,B",
                       help="style presets, comma-separated (livecam styles; default corporate; with --batch, for "
                            "rows that name none)")
    still.add_argument("--variants", type=int, metavar="N", help="images wanted per style (default still.variants)")
    still.add_argument("--platforms", metavar="A,B",
                       help="platform crops, comma-separated, or none (default still.platforms: "
                            "linkedin,resume,website,avatar,x,print)")
    still.add_argument("--out", type=Path, default=Path("headshots"), metavar="DIR",
                       help="where run folders go (default ./headshots)")
    still.add_argument("--name", default="", help="the run folder's name (default: photo name and time)")
    still.add_argument("--engine", choices=("studio", "diffusion", "auto"), help="renderer (default: auto)")
    still.add_argument("--seed", type=int, metavar="N", help="first seed (default still.seed)")
    for axis in ("attire", "lighting", "background"):
        still.add_argument(f"--{axis}", default="", metavar="STYLE|TEXT",
                           help=f"take the {axis} from another style, or describe it")
    still.add_argument("--batch", type=Path, metavar="CSV",
                       help="a team: one row per person (name, identity, photo, styles); resumable")
    still.add_argument("--brand", default="", metavar="STYLE", help="with --batch: the style everyone shares when "
                       "their row names none")
    still.add_argument("--ray", metavar="ADDRESS", help="with --batch: run one task per person on a Ray cluster "
                       "(auto: a local Ray)")

    serve = sub.add_parser(
        "serve", help="serve the studio page and a WebRTC stream for webinar viewers",
        description="Run the live camera and serve it over HTTP: the studio page (live controls, headshot export) "
                    "at /, a WebRTC stream that any number of viewers share at /view. Off 127.0.0.1 every URL "
                    "needs the access token it prints.")
    _config_args(serve)
    serve.add_argument("--input", metavar="SOURCE", help="camera index, video file or folder of images")
    serve.add_argument("--output", metavar="TARGET",
                       help="also send the frames to virtualcam, preview or a video file (default: the web only)")
    serve.add_argument("--engine", choices=("studio", "diffusion", "auto"), help="renderer (default: auto)")
    serve.add_argument("--frames", type=int, metavar="N", help="stop after N input frames")
    serve.add_argument("--host", metavar="ADDRESS",
                       help="address to listen on (default serve.host: 127.0.0.1; 0.0.0.0 = every interface)")
    serve.add_argument("--port", type=int, metavar="N", help="TCP port (default serve.port: 8000)")
    serve.add_argument("--token", metavar="TOKEN",
                       help="access token (default serve.token; empty: none on 127.0.0.1, else a random one)")
    serve.add_argument("--publish", metavar="URL",
                       help="also publish the stream to Janus's VideoRoom, janus://HOST:PORT/ROOM (default "
                            "publish.url), which fans it out to any number of viewers")

    cutout = sub.add_parser(
        "cutout", help="cut the person out of photos as transparent PNGs",
        description="Write the person of each photo as an RGBA PNG at the photo's resolution (transparent around "
                    "them, for a web page), with the matte the headshot export uses. Each photo needs a face; "
                    "with several people, the largest face's person is kept.")
    _config_args(cutout)
    cutout.add_argument("photos", nargs="+", type=Path, metavar="PHOTO", help="photo files")
    cutout.add_argument("--out", type=Path, default=Path("cutouts"), metavar="DIR",
                        help="where the PNGs go, named after the photos (default ./cutouts)")

    styles = sub.add_parser("styles", help="list the style presets (and platform crops)")
    _config_args(styles)
    return parser


def _load(args: argparse.Namespace, extra: list[str]) -> Config:
    from livecam.config import default_config_path, load_config

    path = args.config if args.config is not None else default_config_path()
    return load_config(path, [*extra, *args.overrides])


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """`kill` or a service manager stopping livecam gets the same clean stop as Ctrl-C: the summary is
    printed and a video being written is finished."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="livecam: %(message)s", stream=sys.stderr)
    try:
        if args.command == "run":
            extra = _live_overrides(args)
            if args.output is not None:
                extra.append(f"output.target={args.output}")
            if args.no_pace:
                extra.append("input.pace=false")
            config = _load(args, extra)
            from livecam.live.run import run_live

            signal.signal(signal.SIGTERM, _stop_on_sigterm)
            run_live(config, max_frames=args.frames, stats_json=args.stats_json)
            return 0
        if args.command == "serve":
            return _serve(args)
        if args.command == "doctor":
            from livecam.doctor import run_doctor

            return run_doctor(_load(args, []))
        if args.command == "models":
            from livecam.doctor import list_models

            list_models(_load(args, []))
            return 0
        if args.command == "enroll":
            from livecam.identity.enroll import enroll

            signal.signal(signal.SIGTERM, _stop_on_sigterm)
            result = enroll(args.photos, args.name, _load(args, []), resume=args.resume)
            identity = result.identity
            print(f"enrolled {identity.name!r} in {result.seconds:.0f} s from {len(identity.metadata['photos'])} "
                  f"photos (final loss {result.final_loss:.4f}): {identity.folder}\n"
                  f"use it with: livecam run --set models.identity={identity.name}")
            return 0
        if args.command == "identities":
            from livecam.identity.store import delete_identity, find_identities, identities_dir

            _load(args, [])  # a bad config is still an error here
            if args.delete:
                print(f"deleted identity {args.delete!r} ({delete_identity(args.delete)})")
                return 0
            found, damaged = find_identities()
            for reason in damaged:
                log.warning("skipped a damaged identity: %s", reason)
            print(f"identities in {identities_dir()} ($LIVECAM_DATA_DIR, else your user data directory):")
            for identity in found:
                m = identity.metadata
                print(f"  {identity.name}: {len(m.get('photos', []))} photos, trigger {m.get('trigger')!r}, "
                      f"base {m.get('base_model')}, {m.get('steps')} steps, created {m.get('created')}")
            if not found:
                print("  none yet: livecam enroll PHOTOS... --name NAME")
            return 0
        if args.command == "cutout":
            return _cutout(args)
        if args.command == "styles":
            _print_styles(_load(args, []))
            return 0
        if args.command == "still":
            signal.signal(signal.SIGTERM, _stop_on_sigterm)
            return _still(args)
    except LivecamError as e:
        print(f"livecam: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


def _live_overrides(args: argparse.Namespace) -> list[str]:
    """The config overrides `run` and `serve` share (--input, --engine), after checking --frames."""
    if args.frames is not None and args.frames < 1:
        raise LivecamError(f"--frames {args.frames}: must be 1 or more")
    extra = []
    if args.input is not None:
        extra.append(f"input.source={args.input}")
    if args.engine is not None:
        extra.append(f"engine.kind={args.engine}")
    return extra


def _serve(args: argparse.Namespace) -> int:
    extra = _live_overrides(args)
    if args.publish is not None:
        from livecam.config import PublishSettings

        try:
            PublishSettings(url=args.publish)
        except ValueError as e:
            raise LivecamError(f"--publish {args.publish}: {str(e).split(': ', 1)[-1]}") from None
        extra.append(f"publish.url={args.publish}")
    config = _load(args, extra)
    if args.output is not None:
        from livecam.live.outputs.base import check_output

        check_output(args.output, config.input.source)  # before the models load and the server starts
    try:
        from livecam.serve.runner import run_serve
    except ImportError as e:
        from livecam.assembly import missing_package

        raise missing_package("livecam serve", e) from None
    run_serve(config, host=args.host, port=args.port, token=args.token, output=args.output,
              max_frames=args.frames)
    return 0


def _print_styles(config: Config) -> None:
    print("styles (livecam still --styles NAME; engine.style for the live camera; [styles.NAME] in config.toml):")
    for name, style in config.styles.items():
        brand = f", brand colour {style.color}" if style.color else ""
        brand += f", brand background {style.background_image}" if style.background_image else ""
        print(f"  {name}{f' ({style.label})' if style.label else ''}{brand}\n"
              f"      attire: {style.attire}\n      lighting: {style.lighting}\n      background: {style.background}")
    print("platforms (--platforms; [platforms.NAME]):")
    for name, spec in config.platforms.items():
        print(f"  {name}: {spec.width}x{spec.height}{f' at {spec.dpi} dpi' if spec.dpi else ''}"
              f"{f', at least {spec.min_width} px wide' if spec.min_width else ''}: {spec.label}")


def _cutout(args: argparse.Namespace) -> int:
    from livecam.stills.cutout import Cutout, make_cutouts

    def written(cut: Cutout) -> None:
        print(f"{cut.path}: {cut.size[0]}x{cut.size[1]} RGBA, the person {cut.coverage:.0%} of the picture",
              flush=True)

    make_cutouts(args.photos, args.out, _load(args, []), report=written)
    return 0


def _split(text: str | None, option: str, none: bool = False) -> tuple[str, ...] | None:
    """A comma-separated `option` as names (None: not given). `none`: the word "none" means no names; any
    other list without a name (",", "") is an error, not a silent default."""
    if text is None:
        return None
    if none and text.strip().lower() == "none":
        return ()
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names:
        allowed = " or none" if none else ""
        raise LivecamError(f"{option} {text!r}: no name in it; give comma-separated names{allowed} "
                           "(livecam styles lists them)")
    return names


def _still(args: argparse.Namespace) -> int:
    extra = [f"engine.kind={args.engine}"] if args.engine else []
    config = _load(args, extra)
    from livecam.stills.export import StillRequest, export_stills

    styles = _split(args.styles, "--styles") or (() if args.batch is not None else ("corporate",))
    platforms = _split(args.platforms, "--platforms", none=True)
    request = StillRequest(photo=args.photo, styles=styles, identity=args.identity, variants=args.variants,
                           platforms=platforms, out=args.out, name=args.name, attire=args.attire,
                           lighting=args.lighting, background=args.background, seed=args.seed)
    if args.batch is not None:
        from livecam.stills.batch import run_batch

        if args.photo is not None:
            raise LivecamError("--batch takes the photos from the CSV; give no PHOTO with it")
        summary = run_batch(args.batch, request, config, brand=args.brand, ray_address=args.ray)
        print(summary.describe())
        return 0 if not summary.failed else 1
    if args.ray or args.brand:
        raise LivecamError("--ray and --brand go with --batch")
    run = export_stills(request, config)
    print(describe_run(run))
    return 0 if run.kept else 1


def describe_run(run: Any) -> str:
    """The end-of-run lines: where it is, what was kept, why the rest was rejected."""
    summary = run.report["summary"]
    lines = [f"{run.folder}: kept {summary['kept']} of {summary['tried']} candidates "
             f"({run.report['engine']} engine, {run.report['seconds']:.0f} s)"]
    for style, counts in summary["per_style"].items():
        lines.append(f"  {style}: {counts['kept']} kept of {counts['tried']}")
    from livecam.stills.files import advice_lines

    lines.extend(advice_lines(run.report))
    notes = {c.get("note") for cand in run.report["candidates"] for c in cand.get("crops", []) if c.get("note")}
    lines.extend(f"  note: {n}" for n in sorted(notes))
    if not summary["kept"]:
        lines.append("  no image passed the quality gate (each candidate's figures are in report.json, and every "
                     "candidate is on the contact sheet)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
