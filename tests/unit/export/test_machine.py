"""CPU flags from /proc/cpuinfo text, and the interleaved latency timer."""
import time

from domainft.export.machine import cpu_info, latencies


def test_cpu_info_reads_flags(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n\n"
                 "processor\t: 1\nflags\t\t: fpu\n")
    info = cpu_info(str(f))
    assert info["model"] == "Test CPU"
    assert info["flags"]["avx512_vnni"] and info["flags"]["avx2"] and not info["flags"]["amx_int8"]
    assert "VNNI" in info["int8_note"]
    f.write_text("model name\t: Old CPU\nflags\t\t: fpu sse avx2\n")
    assert "no VNNI" in cpu_info(str(f))["int8_note"]
    assert cpu_info(str(tmp_path / "missing"))["flags"]["avx2"] is False


def test_latencies_time_every_run_in_turn():
    calls = []
    out = latencies({"fast": lambda i: calls.append(("fast", i)),
                     "slow": lambda i: (calls.append(("slow", i)), time.sleep(0.002))}, repeats=5, warmup=1)
    assert out["fast"]["calls"] == out["slow"]["calls"] == 5
    assert out["slow"]["p50_ms"] > out["fast"]["p50_ms"]
    assert calls[:4] == [("fast", 0), ("slow", 0), ("slow", 1), ("fast", 1)]  # who goes first rotates
