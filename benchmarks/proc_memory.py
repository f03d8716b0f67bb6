"""Memory of the running process from /proc (standard library only).

Shared by the project's benchmarks (``benchmarks.proc_memory``) and by ``evidently_runner.py``, which runs
in Evidently's own virtualenv as a script and imports this file as its sibling (``proc_memory``).
"""

from __future__ import annotations

import resource
from pathlib import Path


def memory_kib(field: str) -> int | None:
    """A ``Vm*`` line of /proc/self/status in KiB, or None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """Peak resident memory of this process image, MiB (VmHWM: reset by exec, unlike getrusage's maxrss)."""
    hwm = memory_kib("VmHWM")
    kib = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0


def rss_mib() -> float:
    """Resident memory now, MiB."""
    return (memory_kib("VmRSS") or 0) / 1024.0
