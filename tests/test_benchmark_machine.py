"""Benchmark results name the CPU they ran on (times differ 2x between VMs of the same kind)."""
from benchmarks.machine import cpu_flags, cpu_name


def test_cpu_name_is_one_readable_line() -> None:
    name = cpu_name()
    assert name and name == name.strip() and "\n" not in name


def test_cpu_flags_lists_only_the_speed_flags_in_order() -> None:
    info = "model name\t: Some CPU\nflags\t\t: fpu amx_int8 sse avx2 avx512_vnni\n"
    assert cpu_flags(info) == ["avx2", "avx512_vnni", "amx_int8"]
    assert cpu_flags("model name\t: no flags line\n") == []
