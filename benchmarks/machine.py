"""What CPU a benchmark ran on, and where its results file goes (one file per benchmark in benchmarks/results/).

`platform.processor()` is empty on Linux, so results said only "x86_64", while VMs of the same kind have had an
Intel Xeon with AVX-512, an AMD EPYC with AVX512-BF16 and an AMD EPYC with AVX2 only: times differ by 2x between them.
The model name alone does not tell them apart either ("Intel(R) Xeon(R) Processor" has been both a CPU without
AVX512-BF16 and one with AMX, where int8 ran 3x faster than float32 against 1.6x on AVX2), so the line also lists
the vector extensions that decide which kernels torch can use.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

# The flags (as /proc/cpuinfo spells them) that change which int8 / bf16 kernels torch runs, widest last.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_flags(cpuinfo: str) -> list[str]:
    """The SPEED_FLAGS present in a /proc/cpuinfo text, in SPEED_FLAGS order."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in SPEED_FLAGS if flag in present]
    return []


def cpu_name() -> str:
    """The CPU's model name and speed-relevant flags from /proc/cpuinfo, else what `platform` knows."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
            flags = cpu_flags(cpuinfo)
            return f"{name} ({', '.join(flags)})" if flags else name
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    """The 1/5/15-minute load averages: other work on a shared machine inflates every time measured."""
    return [round(v, 2) for v in os.getloadavg()]


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Write a benchmark's result as indented JSON (the file the README cites)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
