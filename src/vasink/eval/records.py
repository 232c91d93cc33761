"""The output folder of a run: ``run.json`` (what was run, per arm) and JSONL record files.

One record per (sample, arm), appended and flushed per batch::

    {"id", "arm", "subset", "image_id", "question", "target", "prompt_hash", "raw", "parsed", "correct",
     "stats", "config_hash"}

A run with ``--shard I/N`` (or under ``accelerate launch``) writes ``records.shard-I-of-N.jsonl``; an
unsharded run writes ``records.jsonl``. Readers merge every ``records*.jsonl`` in the folder.
A line cut short by a kill is dropped when the file is next opened for appending.

One process writes a records file at a time (:func:`writer_lock`): a second ``vasink eval`` into the same
``--out`` (and shard) is refused before it loads a model, so no (id, arm) is answered twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

RUN_FILE = "run.json"
RECORDS_GLOB = "records*.jsonl"


def config_hash(payload: Mapping) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def records_file(out: Path, shard: tuple[int, int] | None) -> Path:
    if shard is None or shard[1] == 1:
        return out / "records.jsonl"
    return out / f"records.shard-{shard[0]}-of-{shard[1]}.jsonl"


class ConfigMismatch(ValueError):
    """The output folder holds records of a run with other settings."""


class RunInProgress(FileExistsError):
    """Another process is writing the same records file."""


@contextlib.contextmanager
def writer_lock(records: Path):
    """Hold ``<records file>.lock`` while a run writes ``records``; a second writer gets :class:`RunInProgress`.

    The lock is the OS's (``flock``), not the file's existence: it is released when its process ends, killed
    or not, so a lock file left behind never blocks a later run. The file holds the writer's PID and host,
    for the message."""
    records.parent.mkdir(parents=True, exist_ok=True)
    path = records.with_name(records.name + ".lock")
    with _locked(path, blocking=False) as handle:
        if handle is None:
            holder = path.read_text(errors="replace").strip() or "another process"
            raise RunInProgress(f"{records.parent} is being written by another vasink run ({holder}); wait for it to "
                                f"finish or stop it, or pass another --out (two writers would answer the same "
                                f"samples twice). If that process is gone, run the command again")
        handle.truncate(0)
        handle.write(f"process {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        yield


@contextlib.contextmanager
def _locked(path: Path, blocking: bool):
    """``path`` opened and locked for this process (None when ``blocking`` is False and another holds it)."""
    with path.open("a+") as handle:
        try:
            import fcntl
        except ImportError:  # Windows
            import msvcrt

            lock = lambda: msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)  # noqa: E731
        else:
            lock = lambda: fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))  # noqa: E731
        try:
            lock()
        except OSError:  # BlockingIOError, or msvcrt's PermissionError
            yield None
            return
        handle.seek(0)
        yield handle  # released when the file closes


# run settings known only once the model is loaded (and absent from folders written before them): compared
# where both sides have them
LATE_RUN_KEYS = ("dtype",)


def check_run(out: Path, run: dict, arms: Mapping[str, dict],
              decodings: Mapping[str, dict | None] | None = None, writing: Path | None = None) -> dict:
    """Compare with ``out/run.json`` (refusing any difference in the run settings or in an existing
    arm's config or decoding), add new arms, write it back, and return the arms' config hashes.

    ``decodings``: arm -> its decoding when it samples (None: greedy). Its ``runs`` is kept but not hashed, so
    a larger ``--runs`` extends the same arm as a larger ``--limit`` does.

    Answers bind a folder, and so does another process writing into it (a shard started beside this one,
    before its first answer): settings that produced no record and that no other writer runs (a start that
    failed before its first answer) are replaced, so the corrected command runs in the same ``--out``.
    ``writing``: the records file this process holds the writer lock of (not another writer)."""
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out / (RUN_FILE + ".lock"), blocking=True):  # shards of one run update it side by side
        return _check_run(out, run, arms, decodings, writing)


def _other_writer(out: Path, writing: Path | None) -> bool:
    """Whether another process holds the writer lock of one of ``out``'s records files."""
    own = writing.with_name(writing.name + ".lock") if writing is not None else None
    for lock in out.glob(RECORDS_GLOB + ".lock"):
        if lock == own:
            continue
        with _locked(lock, blocking=False) as handle:
            if handle is None:
                return True
    return False


def _check_run(out: Path, run: dict, arms: Mapping[str, dict], decodings: Mapping[str, dict | None] | None,
               writing: Path | None) -> dict:
    path = out / RUN_FILE
    recorded = {record.get("config_hash") for record in read_records(out)}
    original = path.read_text() if path.exists() else None
    stored = json.loads(original) if original is not None else None
    active = stored is not None and _other_writer(out, writing)
    if stored is None or not (recorded or active):
        stored = {"run": run, "arms": {}}
    hint = f"pass another --out, or delete the folder {out} to start over"
    if active and not recorded:
        hint = "another process is writing into it with those settings: wait for it, or pass another --out"
    for key in sorted(set(stored["run"]) | set(run)):
        if key in LATE_RUN_KEYS and (key not in stored["run"] or key not in run):
            continue
        if stored["run"].get(key) != run.get(key):
            how = f"pass --dtype {stored['run'][key]} to load the model as that run did, or " if key == "dtype" else ""
            raise ConfigMismatch(f"{out} holds a run with {key}={stored['run'].get(key)!r}, but this run has "
                                 f"{key}={run.get(key)!r}; results would mix ({how}{hint})")
    hashes = {}
    for name, config in arms.items():
        decoding = (decodings or {}).get(name)
        hashed = {"run": {k: v for k, v in run.items() if k not in LATE_RUN_KEYS}, "arm": name, "config": config}
        if decoding is not None:  # greedy arms hash as they did before arms had decodings
            hashed["decoding"] = {k: v for k, v in decoding.items() if k != "runs"}
        hashes[name] = config_hash(hashed)
        old = stored["arms"].get(name)
        if old is not None and old["config_hash"] != hashes[name] and (old["config_hash"] in recorded or active):
            before, after = old["config"] or {}, as_stored(config) or {}  # (66,) and [66] are equal
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            detail = ", ".join(f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in changed)
            if not detail and old.get("decoding") != as_stored(decoding):
                detail = f"decoding {old.get('decoding') or 'greedy'} -> {decoding or 'greedy'}"
            what = "VAR config" if not (config or {}).get("method") else f"{config['method']} config"
            raise ConfigMismatch(f"{out} holds arm {name!r} run with another {what} (differs in "
                                 f"{detail or 'on/off'}); {hint}")
        stored["arms"][name] = {"config": config, "config_hash": hashes[name]}
        if decoding is not None:
            stored["arms"][name]["decoding"] = decoding
    text = json.dumps(stored, indent=2, sort_keys=True)
    if text == original:
        return hashes
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    temporary.write_text(text)
    temporary.replace(path)
    return hashes


def as_stored(value):
    """``value`` as run.json holds it (tuples become lists), so a comparison lists real differences only."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def read_run(out: Path) -> dict:
    path = Path(out) / RUN_FILE
    if not path.exists():
        raise FileNotFoundError(f"{out}: no {RUN_FILE} (not a vasink eval output folder)")
    return json.loads(path.read_text())


def read_records(out: Path, files: Iterable[Path] | None = None) -> list[dict]:
    """Every complete record of the folder (all shards), in file order; a cut-off last line is skipped."""
    records = []
    for path in sorted(files if files is not None else Path(out).glob(RECORDS_GLOB)):
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the tail of a killed write
    return records


class RecordWriter:
    """Appends records to one file, one flush per batch: what a killed process wrote is in the file (the
    OS keeps it); no fsync, which would cost more than the organism's generation of a batch."""

    def __init__(self, path: Path):
        self.path = path
        self._repair()
        self._file = path.open("a")

    def _repair(self) -> None:
        """Cut a partial last line (from a kill mid-write), so appends start on a fresh line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def write_batch(self, records: Iterable[dict]) -> None:
        for record in records:
            self._file.write(json.dumps(record, default=_plain) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
