"""The `livecam` command: run, doctor, models, enroll, identities."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

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
            if args.frames is not None and args.frames < 1:
                raise LivecamError(f"--frames {args.frames}: must be 1 or more")
            extra = []
            if args.input is not None:
                extra.append(f"input.source={args.input}")
            if args.output is not None:
                extra.append(f"output.target={args.output}")
            if args.engine is not None:
                extra.append(f"engine.kind={args.engine}")
            if args.no_pace:
                extra.append("input.pace=false")
            config = _load(args, extra)
            from livecam.live import run_live

            signal.signal(signal.SIGTERM, _stop_on_sigterm)
            run_live(config, max_frames=args.frames, stats_json=args.stats_json)
            return 0
        if args.command == "doctor":
            from livecam.doctor import run_doctor

            return run_doctor(_load(args, []))
        if args.command == "models":
            from livecam.doctor import list_models

            list_models(_load(args, []))
            return 0
        if args.command == "enroll":
            from livecam.enroll import enroll

            signal.signal(signal.SIGTERM, _stop_on_sigterm)
            result = enroll(args.photos, args.name, _load(args, []), resume=args.resume)
            identity = result.identity
            print(f"enrolled {identity.name!r} in {result.seconds:.0f} s from {len(identity.metadata['photos'])} "
                  f"photos (final loss {result.final_loss:.4f}): {identity.folder}\n"
                  f"use it with: livecam run --set models.identity={identity.name}")
            return 0
        if args.command == "identities":
            from livecam.identities import delete_identity, identities_dir, list_identities

            _load(args, [])  # a bad config is still an error here
            if args.delete:
                print(f"deleted identity {args.delete!r} ({delete_identity(args.delete)})")
                return 0
            found = list_identities()
            print(f"identities in {identities_dir()} ($LIVECAM_DATA_DIR, else your user data directory):")
            for identity in found:
                m = identity.metadata
                print(f"  {identity.name}: {len(m.get('photos', []))} photos, trigger {m.get('trigger')!r}, "
                      f"base {m.get('base_model')}, {m.get('steps')} steps, created {m.get('created')}")
            if not found:
                print("  none yet: livecam enroll PHOTOS... --name NAME")
            return 0
    except LivecamError as e:
        print(f"livecam: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
