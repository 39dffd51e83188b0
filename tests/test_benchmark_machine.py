"""Benchmark results name the CPU they ran on (times differ 2x between VMs of the same kind)."""
from benchmarks.machine import cpu_name


def test_cpu_name_is_one_readable_line() -> None:
    name = cpu_name()
    assert name and name == name.strip() and "\n" not in name
