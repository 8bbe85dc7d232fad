"""Sovereignty: Ciel opens no connection outside the machine. Every server the client tests start
runs under strace recording its connect() calls; the session fails if any of them reached an
address other than the loopback (checked in conftest.py when the pool of servers closes). This
file checks the detector itself on real strace output, and the shared server's record so far."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cieltest import STRACE, outbound_connections


def _strace_of(code: str, tmp_path) -> str:
    out = tmp_path / "trace.txt"
    subprocess.run([STRACE, "-f", "-qq", "--seccomp-bpf", "-e", "trace=connect", "-o", str(out),
                    sys.executable, "-c", code], check=False, timeout=60, capture_output=True)
    return out.read_text()


@pytest.fixture(autouse=True)
def _need_strace():
    if not STRACE:
        pytest.fail("strace is missing (scripts/test installs it); CIEL_TEST_NO_STRACE disables the check")


def test_detector_flags_an_outside_address_and_spares_the_loopback(tmp_path):
    code = (
        "import socket\n"
        "for host in ('192.0.2.10', '127.0.0.1'):\n"
        "    s = socket.socket(); s.settimeout(0.3)\n"
        "    try: s.connect((host, 9))\n"
        "    except OSError: pass\n"
        "s = socket.socket(socket.AF_INET6); s.settimeout(0.3)\n"
        "try: s.connect(('::1', 9))\n"
        "except OSError: pass\n"
    )
    text = _strace_of(code, tmp_path)
    assert text.count("connect(") >= 3, text
    leaks = outbound_connections(text)
    assert len(leaks) == 1 and "192.0.2.10" in leaks[0], leaks


def test_the_shared_server_runs_under_the_recorder_and_stayed_home(ciel):
    assert ciel.pid != ciel.proc.pid, "the server was not started under strace"
    assert list(ciel.trace_dir.glob("*.txt")), "no connect() record for the shared server"
    # Make the server work a little first: tokens, ARM, Graph.
    ciel.arm_call("GET", f"/subscriptions/{ciel.sub}/resourcegroups", params={"api-version": "2022-09-01"})
    assert ciel.outbound_connections() == []
