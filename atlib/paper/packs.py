"""Carry a profile's runs between a GPU machine and the checkout: ``campaign pack`` / ``campaign import``.

    python -m atlib campaign pack --profile one-seed --out $OUT          # on the GPU machine, after training
    python -m atlib campaign import /work/.device/.../                   # here: the parts that came back

A pack is one tar stream (a manifest first, then run files), split into parts of at most ``PART_BYTES`` (a device
call brings back files of at most 16 MiB): ``<profile>-pack.tar.<i>-of-<n>``. It holds, per run of the profile's
store:

- finished runs: ``config.json``, ``metrics.jsonl.gz`` (the metrics gzip-compressed, about 16x smaller),
  ``record.json``, and ``weights.pt`` only where a later run or a figure needs it (``kept_weights``: the teachers,
  and the student and AT runs of Figure 6), to keep the repository lean;
- unfinished runs: ``config.json``, ``metrics.jsonl``, ``checkpoint.pt`` (to commit and resume in the next window).

Import checks everything before it writes anything: the parts are complete, the manifest is ours, every member is a
regular file at ``runs/<run id>/<known file>`` (no absolute paths, ``..``, links or devices), sizes and SHA-256s
match the manifest, and each run's ``config.json`` hashes to its run id. Then, run by run, it only ever moves a run
forward: a run absent here is added; a run in progress here is replaced by a pack that holds more epochs or the
finished run (whose checkpoint is then removed); a run finished here is never touched.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..paths import DEFAULT_RESULTS
from ..training.store import (CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, METRICS_GZ_FILE, RECORD_FILE, WEIGHTS_FILE,
                              RunStore, atomic_write_bytes, config_hash, gzip_metrics)

PACK_FORMAT = "atlib-campaign-pack"
PACK_VERSION = 1
MANIFEST = "atlib-pack.json"
PART_BYTES = 15 * 2**20  # under the device tool's 16 MiB per returned file
RUN_FILES = {"finished": (CONFIG_FILE, METRICS_GZ_FILE, RECORD_FILE, WEIGHTS_FILE),
             "in progress": (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE)}
_MEMBER = re.compile(r"^runs/([A-Za-z0-9._-]+)/(" + "|".join(re.escape(f) for f in
                                                              {f for fs in RUN_FILES.values() for f in fs}) + r")$")
_PART = re.compile(r"^(?P<stem>.+\.tar)\.(?P<i>\d+)-of-(?P<n>\d+)$")


class PackError(ValueError):
    """A pack that cannot be imported (incomplete, corrupt, foreign, or pointing outside the results); nothing was
    written."""


def kept_weights(settings) -> set[str]:
    """Run ids whose final weights a pack carries: every CIFAR teacher of the first seed (later runs learn from
    them) and the runs Figure 6 shows (WRN-16-1 student and AT student of the WRN-16-2 row)."""
    from .grids import CIFAR_TEACHERS, FIGURE_6_ROW, FIGURE_6_RUNS, table1_row
    from .suite import run_id_for, teacher_config
    ids = {teacher_config(key, settings).run_id() for key in CIFAR_TEACHERS}
    row = table1_row(FIGURE_6_ROW)
    return ids | {run_id_for(row[column], settings, settings.seeds[0]) for column in FIGURE_6_RUNS.values()}


# -- pack ------------------------------------------------------------------------------------------------------------
def pack(settings, out_dir: str | os.PathLike, part_bytes: int = PART_BYTES,
         since: float | None = None) -> list[Path]:
    """Write the profile's runs as pack parts into ``out_dir``; returns their paths (none if nothing to pack).
    ``since`` (a ``time.time()``): only the runs with a file written since then (what a campaign call changed)."""
    from .campaign import progress_of
    store = RunStore(settings.store_root)
    keep = kept_weights(settings)
    files: dict[str, bytes] = {}
    runs: dict[str, dict] = {}
    for run in store.list_runs():
        run_id = run["run_id"]
        status, epochs = progress_of(store, run_id)
        if status == "not started":
            continue
        if since is not None and all(p.stat().st_mtime < since for p in store.run_dir(run_id).iterdir()
                                     if p.is_file()):
            continue
        directory = store.run_dir(run_id)
        for name in RUN_FILES[status]:
            if name == WEIGHTS_FILE and run_id not in keep:
                continue
            if name == METRICS_GZ_FILE and (directory / METRICS_FILE).is_file():
                files[f"runs/{run_id}/{name}"] = gzip_metrics((directory / METRICS_FILE).read_bytes())
            elif (directory / name).is_file():
                files[f"runs/{run_id}/{name}"] = (directory / name).read_bytes()
        runs[run_id] = {"status": status, "epochs": epochs}
    if not runs:
        return []
    manifest = {"format": PACK_FORMAT, "version": PACK_VERSION, "profile": settings.profile,
                "store": settings.store_root.name,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "runs": runs,
                "files": {name: {"bytes": len(data), "sha256": _sha256(data)} for name, data in files.items()}}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
        for name, data in files.items():
            _add_bytes(tar, name, data)
    data = buffer.getvalue()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = max(1, -(-len(data) // part_bytes))
    paths = []
    for i in range(n):
        path = out / f"{settings.profile}-pack.tar.{i + 1}-of-{n}"
        atomic_write_bytes(path, data[i * part_bytes:(i + 1) * part_bytes])
        paths.append(path)
    return paths


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- import ----------------------------------------------------------------------------------------------------------
@dataclass
class Imported:
    added: list[str]       # runs new here, or moved forward
    kept: list[str]        # runs left as they were, with why


def read_pack(paths: list[str | os.PathLike]) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the run files of a pack given as its parts (or a directory holding them), all checked."""
    data, where = _join_parts(paths)
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        members = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise PackError(f"{where} is not an atlib campaign pack (not a readable tar archive: {e})") from None
    if not members or members[0].name != MANIFEST or not members[0].isfile():
        raise PackError(f"{where} is not an atlib campaign pack (its first member is not {MANIFEST})")
    manifest = _manifest(tar.extractfile(members[0]).read(), where)
    contents: dict[str, bytes] = {}
    for member in members[1:]:
        name = member.name
        if name.startswith("/") or "\\" in name or any(part in ("", ".", "..") for part in name.split("/")):
            raise PackError(f"pack member {name!r} points outside the results directory; nothing imported")
        if not member.isfile():
            kind = "a link" if member.issym() or member.islnk() else "not a regular file"
            raise PackError(f"pack member {name!r} is {kind}; nothing imported")
        if not _MEMBER.match(name):
            raise PackError(f"pack member {name!r} is not a run file (runs/<run id>/<file>); nothing imported")
        if name in contents:
            raise PackError(f"pack member {name!r} appears twice; nothing imported")
        contents[name] = tar.extractfile(member).read()
    listed = manifest["files"]
    if set(listed) != set(contents):
        missing = sorted(set(listed) ^ set(contents))[:3]
        raise PackError(f"{where}: manifest and members differ ({', '.join(missing)}); nothing imported")
    for name, body in contents.items():
        if len(body) != listed[name].get("bytes") or _sha256(body) != listed[name].get("sha256"):
            raise PackError(f"{where}: {name} does not match its checksum (corrupt pack); nothing imported")
    for run_id in {_MEMBER.match(n).group(1) for n in contents}:
        config = contents.get(f"runs/{run_id}/{CONFIG_FILE}")
        if config is None:
            raise PackError(f"{where}: run {run_id} has no {CONFIG_FILE}; nothing imported")
        try:
            digest = config_hash(json.loads(config))
        except ValueError as e:
            raise PackError(f"{where}: run {run_id}'s {CONFIG_FILE} is not valid JSON ({e}); nothing imported") \
                from None
        if not run_id.endswith(f"-{digest}"):
            raise PackError(f"{where}: run {run_id}'s {CONFIG_FILE} does not hash to its run id; nothing imported")
    return manifest, contents


def _join_parts(paths: list[str | os.PathLike]) -> tuple[bytes, str]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if _PART.match(f.name))
        elif p.is_file():
            files.append(p)
        else:
            raise PackError(f"pack part {p} does not exist")
    if not files:
        raise PackError(f"no pack parts (<profile>-pack.tar.<i>-of-<n>) in {', '.join(map(str, paths))}")
    parts = {}
    for f in files:
        m = _PART.match(f.name)
        if not m:
            raise PackError(f"{f.name} is not a pack part (expected <profile>-pack.tar.<i>-of-<n>)")
        parts[(m["stem"], int(m["n"]), int(m["i"]))] = f
    stems = {(stem, n) for stem, n, _ in parts}
    if len(stems) != 1:
        raise PackError(f"parts of {len(stems)} different packs given ({', '.join(sorted(s for s, _ in stems))}); "
                        f"import one pack at a time")
    (stem, n), = stems
    missing = [i for i in range(1, n + 1) if (stem, n, i) not in parts]
    if missing or len(parts) != n:
        raise PackError(f"pack {stem} is incomplete: part(s) {missing or sorted(i for _, _, i in parts)} of {n} "
                        f"missing")
    return b"".join(parts[(stem, n, i)].read_bytes() for i in range(1, n + 1)), stem


def _manifest(raw: bytes, where: str) -> dict:
    try:
        manifest = json.loads(raw)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
        raise PackError(f"{where} is not an atlib campaign pack (foreign manifest)")
    if manifest.get("version") != PACK_VERSION:
        raise PackError(f"{where}: pack version {manifest.get('version')!r} is not supported (expected "
                        f"{PACK_VERSION})")
    names = [manifest.get("profile"), manifest.setdefault("store", manifest.get("profile"))]
    if not all(isinstance(n, str) and re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", n) for n in names) \
            or not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("runs"), dict) \
            or not all(isinstance(v, dict) for v in manifest["files"].values()):
        raise PackError(f"{where}: malformed manifest (profile, store, run or file list)")
    return manifest


def import_pack(paths: list[str | os.PathLike], results_dir: str | os.PathLike = DEFAULT_RESULTS,
                profile: str | None = None) -> tuple[str, Imported]:
    """Import a pack into ``<results_dir>/<its store>`` (its profile's, or the one that profile shares runs with);
    returns (that store's name, what was added and kept). Raises ``PackError`` (nothing written) for a bad pack."""
    manifest, contents = read_pack(paths)
    if profile is not None and manifest["profile"] != profile:
        raise PackError(f"the pack holds profile {manifest['profile']!r}, not {profile!r}; nothing imported")
    store = RunStore(Path(results_dir) / manifest["store"])
    by_run: dict[str, dict[str, bytes]] = {}
    for name, body in contents.items():
        run_id, file = _MEMBER.match(name).groups()
        by_run.setdefault(run_id, {})[file] = body
    plan = []
    kept = []
    for run_id in sorted(by_run):
        files = by_run[run_id]
        decision = _decide(store, run_id, files, manifest["runs"].get(run_id, {}))
        if decision is None:
            plan.append((run_id, files))
        else:
            kept.append(f"{run_id} ({decision})")
    added = []
    for run_id, files in plan:
        _write_run(store, run_id, files)
        added.append(run_id)
    return manifest["store"], Imported(added, kept)


def _decide(store: RunStore, run_id: str, files: dict[str, bytes], listed: dict) -> str | None:
    """None to import this run, else why the local one stays."""
    status = store.status(run_id)
    if status == "new":
        return None
    local_config = (store.run_dir(run_id) / CONFIG_FILE).read_bytes()
    if json.loads(local_config) != json.loads(files[CONFIG_FILE]):
        raise PackError(f"run {run_id} differs in {CONFIG_FILE} from the one here; nothing imported")
    if status == "finished":
        return "finished here already"
    if RECORD_FILE in files:
        return None
    from .campaign import progress_of
    here = progress_of(store, run_id)[1]
    there = listed.get("epochs") if isinstance(listed, dict) else None
    if not isinstance(there, int):
        raise PackError(f"malformed manifest: no epoch count for run {run_id}; nothing imported")
    if CHECKPOINT_FILE in files and there > here:
        return None
    return f"here after epoch {here}, the pack holds {there}"


def _write_run(store: RunStore, run_id: str, files: dict[str, bytes]) -> None:
    """Write in an order that leaves a consistent run if interrupted: metrics before the checkpoint (a resumed run
    cuts metrics back to its checkpoint), the record (which marks a run finished) last."""
    directory = store.run_dir(run_id)
    for name in (CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE, METRICS_GZ_FILE, CHECKPOINT_FILE, RECORD_FILE):
        if name in files:
            atomic_write_bytes(directory / name, files[name])
    if RECORD_FILE in files:  # finished: its compressed metrics replace the plain ones of its unfinished state
        store.delete_checkpoint(run_id)
        (directory / METRICS_FILE).unlink(missing_ok=True)


def describe(imported: Imported, root: Path) -> str:
    lines = [f"imported into {root}: {len(imported.added)} run(s) added or moved forward, "
             f"{len(imported.kept)} kept as they were"]
    lines += [f"  + {run_id}" for run_id in imported.added]
    lines += [f"  = {why}" for why in imported.kept]
    return "\n".join(lines)
