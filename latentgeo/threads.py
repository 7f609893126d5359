"""How many torch threads to use: from the cores this process may use and how busy they are.

API
---
- :func:`usable_cores` -- CPUs this process may run on: ``len(os.sched_getaffinity(0))`` (else ``os.cpu_count()``),
  lowered to a cgroup CPU quota when one is set (``cpu.max`` on cgroup v2, ``cpu.cfs_quota_us`` /
  ``cpu.cfs_period_us`` on v1; a fractional quota is rounded down, at least 1).
- :func:`choose_threads` ``(requested=None) -> int`` -- the first that is set of: ``requested`` (a positive int),
  ``$LATENTGEO_THREADS`` (a positive int, or ``auto`` to skip the next rule), ``$OMP_NUM_THREADS`` (the user's
  standard OpenMP setting, honoured when it is a positive int), else the automatic rule below.
  A bad ``requested`` / ``$LATENTGEO_THREADS`` raises :class:`~latentgeo.errors.LatentgeoError`.
- :func:`thread_choice` -- the same decision as a dict (threads, source, cores, loads), for logs and reports.
- :func:`apply_threads` ``(requested=None) -> int`` -- ``torch.set_num_threads(choose_threads(requested))``; on
  the first call it also sets torch's inter-op pool to the same size when torch still allows it (the pool size
  can be set only once, before inter-op work started; later calls leave it). Safe to call any number of times.

The automatic rule
------------------
``other`` = the load of everything but this process: the larger of the 1-minute load average minus this
process's own contribution to it, and the number of runnable tasks right now (``/proc/loadavg``, median of three
quick samples) minus this process's own running threads. The instantaneous count matters because the 1-minute
average lags: two jobs started 10 s ago show up as ~0.3 in it. ``other`` is scaled to the CPUs this process may
run on (``* affinity / os.cpu_count()``, assuming the load is spread evenly), and then::

    threads = max(1, min(usable_cores(), affinity - ceil(other - 0.25)))

i.e. a core counts as taken as soon as more than a quarter of a core's worth of other work is around; on a busy
machine this gives 1 thread. Why so eager to drop threads: measured on the 2-core Xeon VM this project runs on
(torch 2.13 CPU, GNU OpenMP, the demo's diffusion-stage MLP denoiser -- 8x8 digits, hidden 256, depth 3,
batch 256 -- through :func:`latentgeo.diffusion.fit_denoiser`), optimiser steps per second:

==============================  ==========  ==========
other work on the 2 cores       1 thread    2 threads
==============================  ==========  ==========
none                               60          86
one busy process                   56          23
two busy processes                 14          4.3
==============================  ==========  ==========

With the cores free, 2 threads are 1.43x faster. Once one core is taken, the second thread has to share it, and
every parallel region ends in a barrier that waits for the descheduled thread while the other one spins (libgomp
spins before it sleeps): 2 threads become 2.5x *slower* than 1 (one busy process) and 3.3x slower (two). The
break-even is about 0.2 of a core's worth of other work (a core busy a fraction f of the time costs 2 threads
11.6 + 32 f ms per step against ~17 ms for 1), hence the 0.25 slack; the asymmetry (a quiet machine loses 1.43x
with 1 thread, a busy one loses 3-20x with too many) is why the rule errs towards fewer threads. The rows with
busy processes were measured while the machine's load also varied (other jobs), so they are indicative; the
1-thread row with two busy processes is below its fair share (2/3 of a core, ~40 it/s) for that reason.
``OMP_WAIT_POLICY=passive`` (libgomp workers sleep instead of spinning) cannot help here: it is read when the
OpenMP runtime loads, i.e. before torch is imported. ``benchmarks/load_threads.py`` measures the quiet / loaded
comparison end to end (``benchmarks/results/load_threads.json``).

What is not done: ``OMP_NUM_THREADS`` is read but never written (setting it after torch is loaded does not
change this process; child processes choose for themselves). The count is chosen once per call; a run that
lasts hours does not follow the load as it changes. Different thread counts may change the last bits of float
results (reduction order), so a run resumed under a different load may not be bit-identical to an uninterrupted
one; pass ``--threads`` / ``$LATENTGEO_THREADS`` to pin it.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Dict, List, Optional

import torch

from latentgeo.errors import LatentgeoError

__all__ = ["usable_cores", "choose_threads", "thread_choice", "apply_threads", "cgroup_cpu_limit",
           "parse_cpu_max", "parse_cfs_quota", "auto_threads", "ENV_VAR"]

ENV_VAR = "LATENTGEO_THREADS"
SLACK = 0.25  # other load (in cores) tolerated before a core counts as taken; see the module docstring
_CGROUP_ROOT = "/sys/fs/cgroup"
_interop_done = False


# ------------------------------------------------------------------------------------------------ cores

def _read(path: str) -> Optional[str]:
    """The text of a (small, /proc or /sys) file, or None when it cannot be read."""
    try:
        with open(path) as fh:
            return fh.read()
    except (OSError, ValueError):
        return None


def parse_cpu_max(text: Optional[str]) -> Optional[float]:
    """cgroup v2 ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``) -> quota in cores, None if unlimited."""
    if not text:
        return None
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota = float(parts[0])
        period = float(parts[1]) if len(parts) > 1 else 100000.0
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs_quota(quota_text: Optional[str], period_text: Optional[str]) -> Optional[float]:
    """cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` -> quota in cores, None if unlimited (-1)."""
    try:
        quota = float((quota_text or "").strip())
        period = float((period_text or "").strip() or 100000)
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _cgroup_paths() -> Dict[str, str]:
    """``{"v2": path, "cpu": path}`` of this process's cgroups from /proc/self/cgroup (missing keys: unknown)."""
    out: Dict[str, str] = {}
    for line in (_read("/proc/self/cgroup") or "").splitlines():
        bits = line.strip().split(":", 2)
        if len(bits) != 3:
            continue
        if bits[0] == "0" and bits[1] == "":
            out["v2"] = bits[2]
        elif "cpu" in bits[1].split(","):
            out["cpu"] = bits[2]
    return out


def _ancestors(path: str) -> List[str]:
    """``/a/b`` -> ``["/a/b", "/a", ""]`` (every level up to the mount root)."""
    path = "/" + path.strip("/") if path.strip("/") else ""
    out = [path]
    while path:
        path = path.rsplit("/", 1)[0]
        out.append(path)
    return out


def cgroup_cpu_limit() -> Optional[float]:
    """The tightest CPU quota (in cores) of this process's cgroup and its parents, or None when there is none.

    Looks at cgroup v2 (``cpu.max``) and v1 (``cpu.cfs_quota_us``, under ``cpu`` or ``cpu,cpuacct``); in a
    container the cgroup path may not exist below the mount, so the mount root itself is always checked too.
    """
    paths = _cgroup_paths()
    limits = []
    for rel in _ancestors(paths.get("v2", "")):
        q = parse_cpu_max(_read(f"{_CGROUP_ROOT}{rel}/cpu.max"))
        if q is not None:
            limits.append(q)
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for rel in _ancestors(paths.get("cpu", "")):
            base = f"{_CGROUP_ROOT}/{mount}{rel}"
            q = parse_cfs_quota(_read(f"{base}/cpu.cfs_quota_us"), _read(f"{base}/cpu.cfs_period_us"))
            if q is not None:
                limits.append(q)
    return min(limits) if limits else None


def _affinity() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def usable_cores() -> int:
    """CPUs this process may use: its affinity mask, lowered to the cgroup CPU quota (rounded down, >= 1)."""
    n = _affinity()
    quota = cgroup_cpu_limit()
    if quota is not None:
        n = min(n, max(1, int(math.floor(quota + 1e-9))))
    return n


# ------------------------------------------------------------------------------------------------- load

def _loadavg1() -> float:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def _own_running() -> int:
    """Threads of this process in state R right now (at least 1: the caller)."""
    n = 0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for tid in tids:
        text = _read(f"/proc/self/task/{tid}/stat")
        if text and ")" in text:
            fields = text.rsplit(")", 1)[1].split()
            n += bool(fields) and fields[0] == "R"
    return max(1, n)


def _runnable_others(samples: int = 3, gap_s: float = 0.005) -> float:
    """Runnable tasks on the machine right now that are not this process's (median of ``samples`` looks).

    The 4th field of ``/proc/loadavg`` is ``running/total``; 0 where the file does not exist (non-Linux).
    """
    vals = []
    for i in range(samples):
        text = _read("/proc/loadavg")
        try:
            running = int(text.split()[3].split("/")[0]) if text else None
        except (IndexError, ValueError):
            running = None
        if running is None:
            return 0.0
        vals.append(max(0, running - _own_running()))
        if i + 1 < samples:
            time.sleep(gap_s)
    vals.sort()
    return float(vals[len(vals) // 2])


def _own_load_share() -> float:
    """This process's own contribution to the 1-minute load average (estimated).

    A process that kept ``r`` threads busy for ``age`` seconds adds ``r * (1 - exp(-age / 60))`` to the
    exponentially damped average; ``r`` is estimated as CPU time / age. 0 when the age is unknown.
    """
    stat, up = _read("/proc/self/stat"), _read("/proc/uptime")
    try:
        start_ticks = float(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime, clock ticks after boot
        age = float(up.split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (AttributeError, IndexError, ValueError, OSError):
        return 0.0
    if age <= 0:
        return 0.0
    t = os.times()
    rate = (t.user + t.system) / age
    return max(0.0, rate * (1.0 - math.exp(-age / 60.0)))


def auto_threads(cores: int, affinity: int, total_cpus: int, other_load: float, slack: float = SLACK) -> int:
    """The automatic rule: ``max(1, min(cores, affinity - ceil(other_here - slack)))``.

    ``other_here = other_load * affinity / total_cpus``: the load of other processes, assumed evenly spread over
    the machine's ``total_cpus``, on the ``affinity`` CPUs this process may run on; ``cores`` is
    :func:`usable_cores` (affinity lowered to the cgroup quota).
    """
    total_cpus = max(1, total_cpus, affinity)
    here = max(0.0, float(other_load)) * affinity / total_cpus
    taken = max(0, math.ceil(here - slack))
    return max(1, min(cores, affinity - taken))


# ----------------------------------------------------------------------------------------------- choice

def _positive_int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    try:
        text = str(value).strip()
        n = int(text)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def thread_choice(requested: Optional[int] = None) -> Dict[str, Any]:
    """The decision of :func:`choose_threads` with its inputs: ``{"threads", "source", ...}``.

    ``source`` is ``"requested"``, ``"LATENTGEO_THREADS"``, ``"OMP_NUM_THREADS"`` or ``"auto"``; the auto case
    adds ``cores``, ``affinity``, ``cpu_count``, ``loadavg1``, ``own_share``, ``runnable_others`` and
    ``other_load``.
    """
    if requested is not None:
        n = _positive_int(requested)
        if n is None:
            raise LatentgeoError(f"the thread count must be a positive integer, got {requested!r}; "
                                 "leave it out to choose from the cores and the load")
        return {"threads": n, "source": "requested"}
    env = os.environ.get(ENV_VAR, "").strip()
    if env and env.lower() != "auto":
        n = _positive_int(env)
        if n is None:
            raise LatentgeoError(f"{ENV_VAR} must be a positive integer (torch threads) or 'auto', got {env!r}; "
                                 f"fix it or unset it")
        return {"threads": n, "source": ENV_VAR}
    if env.lower() != "auto":
        omp = _positive_int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
        if omp is not None:
            return {"threads": omp, "source": "OMP_NUM_THREADS"}
    cores, affinity, total = usable_cores(), _affinity(), max(1, os.cpu_count() or 1)
    load1, own, now = _loadavg1(), _own_load_share(), _runnable_others()
    other = max(0.0, load1 - own, now)
    return {"threads": auto_threads(cores, affinity, total, other), "source": "auto", "cores": cores,
            "affinity": affinity, "cpu_count": total, "loadavg1": round(load1, 2), "own_share": round(own, 2),
            "runnable_others": now, "other_load": round(other, 2)}


def choose_threads(requested: Optional[int] = None) -> int:
    """Torch threads to use: ``requested``, else ``$LATENTGEO_THREADS``, else ``$OMP_NUM_THREADS``, else from
    :func:`usable_cores` and the load (see the module docstring). Raises LatentgeoError on a bad value."""
    return int(thread_choice(requested)["threads"])


def apply_threads(requested: Optional[int] = None) -> int:
    """Set torch's intra-op threads to :func:`choose_threads` ``(requested)`` and return the count.

    The first call also sizes the inter-op pool the same way if torch still allows it (it can be set once,
    before inter-op work has started; a RuntimeError then is ignored). Safe to call more than once.
    """
    global _interop_done
    n = choose_threads(requested)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if not _interop_done:
        _interop_done = True
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:
            pass
    return n
