"""What CPU a benchmark ran on, for its results file.

`platform.processor()` is empty on Linux, so results said only "x86_64", while VMs of the same kind have had an
Intel Xeon with AVX-512, an AMD EPYC with AVX512-BF16 and an AMD EPYC with AVX2 only: times differ by 2x between them.
"""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
