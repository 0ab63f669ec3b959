"""`livecam still --batch people.csv`: headshots for a whole team, resumable, locally or on a Ray cluster.

The CSV has a header and one row per person: `name` (the person's run folder), `identity` (an enrolled
identity, may be empty), `photo` (relative to the CSV's folder) and `styles` (comma- or semicolon-separated,
may be empty: then `--styles`, or the `--brand` style itself). `--brand STYLE` gives every person that
style's background (description, brand colour or picture), so a team page looks like one shoot.

Each person's run is `OUT/<name>/`, renamed into place only when complete, so a person whose folder exists
is done: running the same command again resumes with the rest. A bad row (unknown identity, missing photo,
no face, ...) is reported by its line number and the others go on; `OUT/batch.json` records every row's
outcome.

Locally the models are loaded once for everyone. With `--ray ADDRESS` each person is one task on a Ray
actor that holds the models on its own GPU (one actor per GPU in the cluster, or one CPU actor where there
is none); the actor sends the finished files back, so workers need no shared disk with the driver.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livecam.assembly import open_workbench
from livecam.config import Config
from livecam.errors import LivecamError
from livecam.stills.export import StillRequest, export_stills
from livecam.stills.files import REPORT_FILE, check_output
from livecam.stills.workbench import Workbench

log = logging.getLogger("livecam")

COLUMNS = ("name", "identity", "photo", "styles")
BATCH_FILE = "batch.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Person:
    line: int
    """The row's line number in the CSV (the header is line 1)."""
    name: str
    identity: str
    photo: Path
    styles: tuple[str, ...]


@dataclass
class BatchSummary:
    out: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Finished in an earlier run."""
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    """(line, name, why)."""
    seconds: float = 0.0

    def describe(self) -> str:
        lines = [f"{self.out}: {len(self.done)} done, {len(self.skipped)} already done earlier, "
                 f"{len(self.failed)} failed ({self.seconds:.0f} s)"]
        lines.extend(f"  line {line} ({name}): {why}" for line, name, why in self.failed)
        if self.failed:
            lines.append("  fix those rows and run the same command again: finished people are not redone")
        return "\n".join(lines)


def read_people(path: Path, default_styles: tuple[str, ...], brand: str) -> tuple[list[Person],
                                                                                   list[tuple[int, str, str]]]:
    """The CSV's rows as people, and the rows that cannot be (line, name, why). LivecamError when the file
    itself is unusable."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LivecamError(f"--batch {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LivecamError(f"--batch {path} cannot be read ({e})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in ("name", "photo") if c not in header]
    if missing:
        raise LivecamError(f"{path}: the first line must be a header with the columns {', '.join(COLUMNS)} "
                           f"(missing {', '.join(missing)}; found {', '.join(header) or 'nothing'})")
    people: list[Person] = []
    bad: list[tuple[int, str, str]] = []
    seen: set[str] = set()
    for index, raw in enumerate(reader):
        line = index + 2
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if isinstance(v, str)}
        name = row.get("name", "")
        if not name and not any(row.values()):
            continue  # a blank line
        if not _NAME.fullmatch(name):
            bad.append((line, name, f"name {name!r}: use letters, digits, '.', '-' and '_' (it names a folder)"))
            continue
        if name in seen:
            bad.append((line, name, f"name {name!r} appears twice"))
            continue
        seen.add(name)
        if not row.get("photo"):
            bad.append((line, name, "no photo"))
            continue
        photo = Path(row["photo"]).expanduser()
        styles = tuple(s.strip() for s in re.split(r"[;,]", row.get("styles", "")) if s.strip())
        people.append(Person(line, name, row.get("identity", ""), photo if photo.is_absolute() else path.parent / photo,
                             styles or default_styles or ((brand,) if brand else ("corporate",))))
    return people, bad


def _request(base: StillRequest, person: Person, out: Path, brand: str) -> StillRequest:
    return dataclasses.replace(base, photo=person.photo, identity=person.identity, styles=person.styles, out=out,
                               name=person.name, brand=brand)


def run_batch(csv_path: Path, base: StillRequest, config: Config, brand: str = "", ray_address: str | None = None,
              progress: bool = True) -> BatchSummary:
    """Every person of `csv_path` into `base.out`; people already done are skipped. Returns the summary (the
    failed rows among it); LivecamError only for a problem with the whole batch (the CSV, the output folder,
    the brand style, the models)."""
    started = time.perf_counter()
    if brand and brand not in config.styles:
        raise LivecamError(f"--brand {brand!r}: no such style; styles: {', '.join(config.styles)}")
    if ray_address:
        check_ray_address(ray_address)
    people, bad = read_people(csv_path, base.styles, brand)
    out = base.out
    check_output(out)  # before anyone's run: every row would fail, and then the batch state too
    summary = BatchSummary(out, failed=list(bad))
    todo = []
    for person in people:
        if (out / person.name / REPORT_FILE).is_file():
            summary.skipped.append(person.name)
        else:
            todo.append(person)
    if summary.skipped:
        log.info("resuming: %d of %d people are done already", len(summary.skipped), len(people))
    runner = _run_ray if ray_address else _run_local
    for person, error in runner(todo, base, config, brand, progress, ray_address or ""):
        if error is None:
            summary.done.append(person.name)
        else:
            summary.failed.append((person.line, person.name, error))
            log.warning("line %d (%s): %s", person.line, person.name, error)
    summary.failed.sort()
    summary.seconds = time.perf_counter() - started
    _write_state(out, csv_path, summary)
    return summary


def _write_state(out: Path, csv_path: Path, summary: BatchSummary) -> None:
    """OUT/batch.json: every row's outcome of the latest run (done people accumulate across runs)."""
    state_path = out / BATCH_FILE
    state: dict[str, Any] = {"csv": str(csv_path), "done": [], "failed": []}
    if state_path.is_file():
        with contextlib.suppress(OSError, ValueError):  # a damaged state file is rebuilt from this run
            state.update(json.loads(state_path.read_text(encoding="utf-8")))
    done = sorted(set(state.get("done", [])) | set(summary.done) | set(summary.skipped))
    state.update(csv=str(csv_path), done=done, updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 failed=[{"line": line, "name": name, "error": why} for line, name, why in summary.failed])
    part = state_path.with_name(state_path.name + ".part")
    try:
        part.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        os.replace(part, state_path)
    except OSError as e:  # the people's folders are complete; only the record of this run is lost
        raise LivecamError(f"cannot write {state_path}: {e.strerror or e}") from None


def _bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="people", unit="person", disable=not enabled)


def _run_local(people: list[Person], base: StillRequest, config: Config, brand: str, progress: bool,
               address: str) -> Iterator[tuple[Person, str | None]]:
    """One person after another with the models loaded once."""
    if not people:
        return
    bench = open_workbench(config)
    bar = _bar(len(people), progress)
    try:
        for person in people:
            bar.set_postfix_str(person.name)
            yield person, _one(bench, person, base, config, brand, base.out)
            bar.update(1)
    finally:
        bar.close()
        bench.close()


def _one(bench: Workbench, person: Person, base: StillRequest, config: Config, brand: str, out: Path) -> str | None:
    """Run one person; the error message when the row cannot be done (None: done)."""
    try:
        run = export_stills(_request(base, person, out, brand), config, bench=bench, progress=False)
    except LivecamError as e:
        return str(e)
    if not run.kept:
        # Not done: the folder goes, so that running the batch again (with a better photo) retries this person.
        advice = "; ".join(a["advice"] for a in run.report["summary"]["advice"])
        shutil.rmtree(run.folder, ignore_errors=True)
        return f"no image passed the quality gate ({run.tried} tried): {advice}"
    return None


# --- Ray ---------------------------------------------------------------------------------------------------

def check_ray_address(address: str, timeout_s: float = 3.0) -> None:
    """`--ray ADDRESS` usable: the cluster extra installed, and for HOST:PORT (or ray://HOST:PORT) something
    answering there within `timeout_s`; LivecamError otherwise. Ray itself retries an address where nothing
    listens for minutes, with only its own warnings. `local` (a Ray started here) and `auto` (the cluster this
    machine belongs to) are Ray's to find."""
    if importlib.util.find_spec("ray") is None:
        raise LivecamError('--ray needs the cluster extra: pip install -c constraints.txt -e ".[cluster]"')
    if address in ("local", "auto"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # an IPv6 address is written in brackets
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LivecamError(f"--ray {address!r}: expected HOST:PORT (the head node's address, e.g. 10.0.0.5:6379), "
                           "ray://HOST:PORT, auto or local")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        why = (f"no answer within {timeout_s:g} s" if isinstance(e, TimeoutError)
               else "unknown host" if isinstance(e, socket.gaierror) else e.strerror or str(e))
        raise LivecamError(f"no Ray cluster at {host}:{port} ({why}); check --ray, or start one there with "
                           f"`ray start --head --port={port}`") from None


class _StillWorker:
    """A Ray actor: the models loaded once, one person per call; the files go back to the driver."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._bench = open_workbench(config)

    def run(self, person: Person, base: StillRequest, brand: str) -> tuple[Person, str | None, dict[str, bytes]]:
        with tempfile.TemporaryDirectory(prefix="livecam-batch-") as tmp:
            error = _one(self._bench, person, base, self._config, brand, Path(tmp))
            folder = Path(tmp) / person.name
            files = {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}
        return person, error, files


def _run_ray(people: list[Person], base: StillRequest, config: Config, brand: str, progress: bool,
             address: str) -> Iterator[tuple[Person, str | None]]:
    """One task per person on an actor pool: one actor per GPU of the cluster (or one on CPUs)."""
    if not people:
        return
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise LivecamError('--ray needs the cluster extra: pip install -c constraints.txt -e ".[cluster]"') from None
    env = {k: v for k, v in os.environ.items() if k.startswith("LIVECAM_")}
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address == "local":
                ray.init(num_cpus=max(1, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": env})
            else:
                ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env})
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise LivecamError(f"--ray {address}: cannot connect to the Ray cluster ({e})") from None
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        actors = max(1, min(gpus, len(people))) if gpus else 1
        worker = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1)(_StillWorker)
        log.info("ray: %d actor(s) on %s", actors, f"{gpus} GPU(s)" if gpus else "CPU")
        pool = ActorPool([worker.remote(config) for _ in range(actors)])
        bar = _bar(len(people), progress)
        try:
            for person, error, files in pool.map_unordered(lambda a, p: a.run.remote(p, base, brand), people):
                if error is None:
                    _store(base.out, person.name, files)
                bar.update(1)
                yield person, error
        finally:
            bar.close()
    finally:
        if started_here:
            ray.shutdown()


def _store(out: Path, name: str, files: dict[str, bytes]) -> None:
    """A person's files from a worker, written into `out/name` all at once (staging folder, then rename)."""
    staging = out / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        for file, data in files.items():
            (staging / Path(file).name).write_bytes(data)
        os.rename(staging, out / name)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise LivecamError(f"cannot write {out / name}: {e.strerror or e}") from None
