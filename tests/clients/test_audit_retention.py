"""Audit retention (SecNumCloud 12.6.c): entries older than the retention are pruned up to a signed
checkpoint, the chain still verifies from that anchor, a premature prune is reported as tampering,
and a retention shorter than six months is refused.

The clock is moved with libfaketime on the `ciel` commands, as an operator would see it 200 days on."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import uuid

import pytest

from cieltest import ciel_bin, faketime_library, missing_prerequisite


def _ciel(*args, days_later: int = 0, env_extra: dict | None = None, timeout: int = 120):
    env = os.environ.copy()
    if days_later:
        lib = faketime_library()
        if not lib:
            missing_prerequisite("libfaketime is not installed (apt-get install libfaketime)")
        env.update({"LD_PRELOAD": lib, "FAKETIME": f"+{days_later}d", "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    env.update(env_extra or {})
    return subprocess.run([ciel_bin(), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env)


def _seqs(data_dir):
    with sqlite3.connect(f"file:{data_dir / 'ciel.db'}?mode=ro", uri=True) as c:
        return [r[0] for r in c.execute("SELECT seq FROM audit_log ORDER BY seq")]


@pytest.fixture(scope="module")
def stopped(servers):
    s = servers.new("retention").start()
    for i in range(3):
        s.create_group(f"ret-{i}-{uuid.uuid4().hex[:6]}")
    rc = s.stop()
    assert rc == 0, f"SIGTERM exit code {rc}\n{s.log_text(50)}"
    return s


def test_nothing_is_pruned_within_six_months(stopped, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(stopped.data_dir, data)
    before = _seqs(data)
    p = _ciel("audit", "prune", "--data-dir", str(data), days_later=182)
    assert p.returncode == 0, p.stderr
    assert "nothing to prune" in p.stdout, p.stdout
    assert _seqs(data) == before


def test_prune_past_retention_keeps_a_verifiable_chain(stopped, servers, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(stopped.data_dir, data)
    before = _seqs(data)
    assert before[0] == 1

    dry = _ciel("audit", "prune", "--data-dir", str(data), "--dry-run", days_later=200)
    assert dry.returncode == 0 and "would prune" in dry.stdout, dry.stdout + dry.stderr
    assert _seqs(data) == before, "a dry run changed the log"

    p = _ciel("audit", "prune", "--data-dir", str(data), days_later=200)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "pruned" in p.stdout, p.stdout
    after = _seqs(data)
    # The final checkpoint written at SIGTERM covers the whole log: everything before the prune
    # entry is gone, and the prune itself is the first entry kept.
    assert after[0] == before[-1] + 1 and len(after) == 1, (before, after)
    with sqlite3.connect(f"file:{data / 'ciel.db'}?mode=ro", uri=True) as c:
        action, details = c.execute("SELECT action, details FROM audit_log ORDER BY seq LIMIT 1").fetchone()
    assert action == "audit/prune" and f'"throughSeq":{before[-1]}' in details.replace(" ", ""), details

    v = _ciel("audit", "verify", "--data-dir", str(data), days_later=200)
    assert v.returncode == 0, v.stdout + v.stderr
    assert f"retention anchor at entry {before[-1]}" in v.stdout, v.stdout

    # The same database judged today: the anchor is minutes old, so these entries were removed
    # before their six months — tampering, named.
    now = _ciel("audit", "verify", "--data-dir", str(data))
    assert now.returncode != 0, now.stdout
    assert f"entry {before[-1]}" in now.stderr and "183 days" in now.stderr, now.stderr

    # The server starts on the pruned log and keeps chaining from the anchor.
    s2 = servers.new("retention-again")
    shutil.copytree(data, s2.data_dir)
    lib = faketime_library()
    s2.extra_env.update({"LD_PRELOAD": lib, "FAKETIME": "+200d", "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    s2.start()
    try:
        s2.create_group(f"ret-after-{uuid.uuid4().hex[:6]}")
    finally:
        assert s2.stop() == 0
    v = _ciel("audit", "verify", "--data-dir", str(s2.data_dir), days_later=200)
    assert v.returncode == 0, v.stdout + v.stderr


def test_a_retention_below_six_months_is_refused(stopped, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(stopped.data_dir, data)
    (data / "ciel.toml").write_text("audit_retention_days = 90\n")
    before = _seqs(data)
    p = _ciel("audit", "prune", "--data-dir", str(data), days_later=200)
    assert p.returncode != 0
    assert "below the minimum of 183 days" in p.stderr, p.stderr
    assert _seqs(data) == before
    up = _ciel("up", "--data-dir", str(data), "--listen", "127.0.0.1:0", timeout=60)
    assert up.returncode != 0 and "audit_retention_days" in up.stderr, up.stdout + up.stderr
