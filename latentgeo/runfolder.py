"""Output paths and run folders: one check for every ``--out``, one writer per run folder.

- :func:`check_output_dir` / :func:`check_output_file`: fail fast (before any work) when an output path cannot be
  written — it is a file where a folder is wanted (or the reverse), it lies below a file, or its nearest existing
  folder is not writable.
- :class:`RunLock`: an exclusive, non-blocking ``flock`` on ``<folder>/.latentgeo.lock`` held while a process writes
  a run folder. A second writer gets a one-line :class:`LatentgeoError`; the kernel drops the lock when its holder
  dies (even by ``kill -9``), so a crashed run never blocks its ``--resume``. Taking the lock also removes the
  ``.*.tmp`` files an interrupted atomic write left behind (only the lock holder could be writing them).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from latentgeo.errors import LatentgeoError

__all__ = ["check_output_dir", "check_output_file", "RunLock", "remove_orphan_tmp", "check_resume_config", "read_json",
           "loads_json", "LOCK_NAME", "MAX_JSON_BYTES", "MAX_JSON_DEPTH"]

LOCK_NAME = ".latentgeo.lock"
PathLike = Union[str, os.PathLike]


def _nearest_existing(p: Path) -> Path:
    q = p
    while not q.exists():
        if q.parent == q:
            break
        q = q.parent
    return q


def _check_parents(p: Path, what: str) -> None:
    anc = _nearest_existing(p.parent if p.parent != p else p)
    if anc.exists() and not anc.is_dir():
        raise LatentgeoError(f"{what} '{p}' lies below '{anc}', which is a file, not a folder; choose another path")
    if anc.exists() and not os.access(anc, os.W_OK | os.X_OK):
        raise LatentgeoError(f"{what} '{p}' cannot be created: '{anc}' is not writable; choose a writable path")


#: Kernel and device file systems: nothing latentgeo writes belongs there (and as root much of them looks writable).
_SYSTEM_TREES = ("/proc", "/sys", "/dev")


def _check_not_system(p: Path, what: str) -> None:
    """Refuse an output path inside /proc, /sys or /dev (links followed), before any work."""
    try:
        real = os.path.realpath(p)
    except (OSError, ValueError):
        return
    for top in _SYSTEM_TREES:
        if real == top or real.startswith(top + "/"):
            shown = f"'{p}'" + (f" (= '{real}')" if str(p) != real else "")
            raise LatentgeoError(f"{what} {shown} lies in {top}, a kernel file system, not a place for results; "
                                 "choose a folder on disk")


def check_output_dir(path: PathLike, what: str = "--out") -> Path:
    """Raise unless ``path`` is (or can be created as) a writable folder. Creates nothing."""
    p = Path(path).expanduser()
    if str(path).strip() == "":
        raise LatentgeoError(f"{what} is empty; pass a folder path")
    _check_not_system(p, what)
    if p.exists():
        if not p.is_dir():
            raise LatentgeoError(f"{what} '{p}' is a file, not a folder; choose a folder path (it is created)")
        if not os.access(p, os.W_OK | os.X_OK):
            raise LatentgeoError(f"{what} '{p}' is not writable; choose a writable folder")
        return p
    _check_parents(p, what)
    return p


def check_output_file(path: PathLike, what: str = "--out") -> Path:
    """Raise unless ``path`` can be written as a file (an existing file is replaced). Creates nothing."""
    p = Path(path).expanduser()
    if str(path).strip() == "":
        raise LatentgeoError(f"{what} is empty; pass a file path")
    _check_not_system(p, what)
    if p.is_dir():
        raise LatentgeoError(f"{what} '{p}' is a folder, not a file; pass a file path")
    if p.exists():
        if not os.access(p.parent, os.W_OK | os.X_OK):
            raise LatentgeoError(f"{what} '{p}' cannot be replaced: '{p.parent}' is not writable; choose a writable "
                                 "path")
        return p
    _check_parents(p, what)
    return p


def remove_orphan_tmp(folder: PathLike) -> int:
    """Delete ``.*.tmp`` files (left by interrupted atomic writes) directly in ``folder``; returns how many."""
    n = 0
    d = Path(folder)
    if not d.is_dir():
        return 0
    for f in d.glob(".*.tmp"):
        try:
            f.unlink()
            n += 1
        except OSError:
            pass
    return n


class RunLock:
    """``with RunLock(folder):`` — exclusive writer of ``folder`` (created if missing).

    Re-entrant within one process (nested locks on the same folder share one file descriptor), so library code
    that takes the lock can be called from a command that already holds it.
    """

    _held: dict = {}

    def __init__(self, folder: PathLike, what: str = "--out"):
        self.folder = Path(folder).expanduser()
        self.what = what
        self._fd: Optional[int] = None
        self._key: Optional[str] = None

    def __enter__(self) -> "RunLock":
        import fcntl

        check_output_dir(self.folder, self.what)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LatentgeoError(f"cannot create {self.what} '{self.folder}': {exc.strerror}; "
                                 "choose a writable path") from None
        key = str(self.folder.resolve())
        if key in RunLock._held:
            fd, count = RunLock._held[key]
            RunLock._held[key] = (fd, count + 1)
            self._key = key
            return self
        lock = self.folder / LOCK_NAME
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise LatentgeoError(f"cannot write {self.what} '{self.folder}': {exc.strerror}; "
                                 "choose a writable folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            except OSError:
                holder = "?"
            os.close(fd)
            raise LatentgeoError(f"{self.what} '{self.folder}' is being written by another latentgeo process "
                                 f"(pid {holder}); wait for it to finish or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        RunLock._held[key] = (fd, 1)
        self._key = key
        remove_orphan_tmp(self.folder)
        return self

    def __exit__(self, *exc) -> None:
        key = self._key
        if key is None or key not in RunLock._held:
            return
        fd, count = RunLock._held[key]
        if count > 1:
            RunLock._held[key] = (fd, count - 1)
        else:
            del RunLock._held[key]
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            os.close(fd)  # closing the descriptor releases the flock
        self._key = None


# Settings that may differ on --resume without changing what the run computes.
RESUME_FREE = frozenset({"device", "log_every", "ckpt_every", "progress", "quiet", "resume_history"})


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def check_resume_config(old: dict, new: dict, where: PathLike, extendable: tuple = ("steps",),
                        free: frozenset = RESUME_FREE) -> dict:
    """The config to record when resuming run ``where``: ``old`` with ``extendable`` counts raised to ``new``'s.

    Raises a one-line :class:`LatentgeoError` naming every setting that differs between the recorded ``old`` and
    the requested ``new`` config (other than ``free`` ones such as the device), and when an ``extendable`` count
    would shrink. An extension is recorded in ``resume_history`` (``[{"steps": [old, new]}, ...]``).
    """
    fo, fn = _flat(old), _flat(new)
    changed = []
    for k in sorted(set(fo) | set(fn)):
        leaf = k.rsplit(".", 1)[-1]
        if leaf in free or k in extendable:
            continue
        a, b = fo.get(k, "<unset>"), fn.get(k, "<unset>")
        if _norm(a) != _norm(b):
            changed.append(f"{k} was {a!r}, now {b!r}")
    if changed:
        shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
        grow = " and ".join(f"--{k.replace('_', '-')}" for k in extendable)
        raise LatentgeoError(f"cannot resume '{where}' with different settings ({shown}); resume with the "
                             f"settings it was started with (only {grow} may grow) or choose a new --out")
    merged = dict(old)
    history = list(old.get("resume_history", []))
    for k in extendable:
        a, b = fo.get(k), fn.get(k)
        if a is None or b is None or a == b:
            continue
        if b < a:
            raise LatentgeoError(f"cannot resume '{where}' with {k} {b} < the {a} it was started with; pass "
                                 f"--{k.replace('_', '-')} {a} or more")
        history.append({k: [a, b]})
        merged[k] = b
    for k in free:
        if k in new and k != "resume_history":
            merged[k] = new[k]
    if history:
        merged["resume_history"] = history
    return merged


def _norm(v):
    if isinstance(v, tuple):
        return [_norm(x) for x in v]
    if isinstance(v, list):
        return [_norm(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


#: Largest JSON file :func:`read_json` reads (configs, run records, indexes are kilobytes; a bigger file is forged).
MAX_JSON_BYTES = 16 * 2 ** 20
#: Deepest nesting of arrays / objects accepted (latentgeo's and diffusers' files nest a few levels).
MAX_JSON_DEPTH = 100


def _json_depth(text: str) -> int:
    """Deepest nesting of ``[`` / ``{`` in JSON ``text`` (brackets inside strings do not count); linear time, no
    recursion, so that a forged file of 100,000 ``[`` is measured before any parser recurses into it."""
    import re

    if "[" not in text and "{" not in text:
        return 0
    # Escapes first (so that \" is no quote), then every other '"'-separated piece lies outside strings.
    outside = "".join(re.sub(r"\\.", "", text, flags=re.S).split('"')[0::2])
    brackets = re.sub(r"[^\[\]{}]+", "", outside)
    if not brackets:
        return 0
    import numpy as np

    a = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    steps = np.where((a == ord("[")) | (a == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def loads_json(text: str, where: str, fix: str, max_depth: int = MAX_JSON_DEPTH):
    """``json.loads(text)`` for text from a file or a command line: nesting deeper than ``max_depth`` and any
    parse error raise one line ``<where> ...; <fix>`` (``where`` names the source, e.g. ``run record '/a/b.json'``)."""
    import json

    depth = _json_depth(text)
    if depth > max_depth:
        raise LatentgeoError(f"{where} nests JSON {depth:,} levels deep (latentgeo reads at most {max_depth}); "
                             f"{fix}")
    try:
        return json.loads(text)
    except RecursionError:
        raise LatentgeoError(f"{where} nests JSON too deeply to read; {fix}") from None
    except ValueError as exc:
        at = f"line {exc.lineno} column {exc.colno}: " if hasattr(exc, "lineno") else ""
        raise LatentgeoError(f"{where} is corrupt, not valid JSON ({at}{getattr(exc, 'msg', exc)}); {fix}") from None


def read_json(path: PathLike, what: str = "", fix: Optional[str] = None, want_object: bool = False,
              max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH):
    """``json.loads`` of a file; a missing, unreadable or corrupt file (or, with ``want_object``, one that holds no
    JSON object) raises one line naming the file (``what`` its role, e.g. "run record") and ``fix``.

    Files that are not regular files (FIFOs, devices), larger than ``max_bytes`` (16 MiB: the size is read before
    anything else) or nested deeper than ``max_depth`` are refused the same way -- never read whole or parsed."""
    import stat

    p = Path(path)
    role = f"{what} " if what else ""
    fix = fix or "restore it or start a new run folder"
    try:
        st = os.stat(p)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(st.st_mode):
            raise LatentgeoError(f"{role}'{p}' is not a regular file (a FIFO, socket or device); {fix}")
        if st.st_size > max_bytes:
            raise LatentgeoError(f"{role}'{p}' is {st.st_size / 2 ** 20:,.1f} MiB, more than the "
                                 f"{max_bytes / 2 ** 20:g} MiB a JSON file latentgeo reads may hold; {fix}")
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)  # the file may have grown since stat
        if len(data) > max_bytes:
            raise LatentgeoError(f"{role}'{p}' is more than the {max_bytes / 2 ** 20:g} MiB a JSON file latentgeo "
                                 f"reads may hold; {fix}")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise LatentgeoError(f"{role}'{p}' does not exist; {fix}") from None
    except IsADirectoryError:
        raise LatentgeoError(f"{role}'{p}' is a folder, not a JSON file; {fix}") from None
    except UnicodeDecodeError:
        raise LatentgeoError(f"{role}'{p}' is corrupt (not UTF-8 text); {fix}") from None
    except OSError as exc:
        raise LatentgeoError(f"cannot read {role}'{p}': {exc.strerror or exc}; check its permissions") from None
    obj = loads_json(text, f"{role}'{p}'", fix, max_depth)
    if want_object and not isinstance(obj, dict):
        raise LatentgeoError(f"{role}'{p}' holds a JSON {type(obj).__name__}, not an object; {fix}")
    return obj
