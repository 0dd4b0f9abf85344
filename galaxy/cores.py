"""How many cores this process may use: the one count that sizes threads and worker pools, in the
galaxy core (framing, the training caches) and in the engine (inference streams, decode workers);
and what the CPU is (its model name and the vector features that decide the libraries' kernels), for
the engine's speed records and the training cards. No torch here.
"""

from __future__ import annotations

import functools
import math
import os
import platform
from pathlib import Path


def usable_cores() -> int:
    """The cores this process may use: its affinity mask, read on each call (`taskset` may change
    it), else the machine's count; fewer where a CPU quota caps it (a container started with
    `--cpus 2` on a 64-core host sees 64 cores but gets the time of 2)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU time this process's control group may use, in cores (cgroup v2 `cpu.max`, v1
    `cpu.cfs_quota_us` / `cpu.cfs_period_us`, as container runtimes mount them); None without a limit."""
    try:
        limit, _, period = (root / "cpu.max").read_text().partition(" ")
        return None if limit.strip() == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        pass
    for folder in (root / "cpu", root / "cpu,cpuacct"):
        try:
            limit = int((folder / "cpu.cfs_quota_us").read_text())
            return None if limit <= 0 else limit / int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
    return None


# CPU flags that decide which kernels the libraries use.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


@functools.lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset]:
    """The CPU's model name and flags, read once per process (they do not change while it runs)."""
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = frozenset(value.split())
    except OSError:
        pass
    return model, flags


def cpu_description() -> dict:
    """CPU model name, the speed-relevant flags present and the usable core count."""
    model, flags = cpu_info()
    return {"cpu": model, "flags": [f for f in SPEED_FLAGS if f in flags], "cores": usable_cores()}
