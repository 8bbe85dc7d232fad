"""`ciel audit verify` on a stopped deployment: the intact chain verifies; an edited, a deleted, a
reordered or a changed last entry is found and named."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import uuid

import pytest

from cieltest import ciel_bin, expect_arm_error

COLUMNS = ["ts", "tenant_id", "actor", "action", "target", "outcome", "details", "request_id", "client_ip",
           "prev_hash", "hash"]


@pytest.fixture(scope="module")
def stopped(servers):
    s = servers.new("audit").start()
    names = [f"audit-{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    for n in names:
        s.create_group(n, tags={"n": n})
    r = s.arm_call("DELETE", f"/subscriptions/{s.sub}/resourcegroups/{names[0]}", params={"api-version": "2021-04-01"})
    assert r.status_code in (200, 202), r.text
    expect_arm_error(s.get_group(names[1], token="not-a-token"), 401)
    s.create_sp("audit-sp")
    s.create_group(f"audit-last-{uuid.uuid4().hex[:6]}")
    rc = s.stop()
    assert rc == 0, f"SIGTERM exit code {rc}\n{s.log_text(50)}"

    with sqlite3.connect(f"file:{s.data_dir / 'ciel.db'}?mode=ro", uri=True) as conn:
        seqs = [row[0] for row in conn.execute("SELECT seq FROM audit_log ORDER BY seq")]
    assert len(seqs) >= 8, f"expected at least 8 audit entries after these writes, found {len(seqs)}"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"audit seq is not contiguous: {seqs}"
    return s, seqs


def _verify(s, data_dir=None):
    data_dir = data_dir or s.data_dir
    return subprocess.run([ciel_bin(), "audit", "verify", "--data-dir", str(data_dir)], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def _named_entries(p) -> list[int]:
    return [int(x) for x in re.findall(r"\bentry\s*#?\s*(\d+)", p.stdout + "\n" + p.stderr, re.IGNORECASE)]


def _edit_actor(conn, seqs):
    k = seqs[len(seqs) // 2]
    cur = conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = ?", (k,))
    assert cur.rowcount == 1
    return {k}


def _delete_middle(conn, seqs):
    k = seqs[len(seqs) // 2]
    cur = conn.execute("DELETE FROM audit_log WHERE seq = ?", (k,))
    assert cur.rowcount == 1
    # The gap is at k; a verifier walking the chain may name k (missing) or k+1 (whose link breaks).
    return {k, k + 1}


def _swap(conn, seqs):
    i, j = seqs[len(seqs) // 2 - 1], seqs[len(seqs) // 2 + 1]
    cols = ", ".join(COLUMNS)
    a = conn.execute(f"SELECT {cols} FROM audit_log WHERE seq = ?", (i,)).fetchone()
    b = conn.execute(f"SELECT {cols} FROM audit_log WHERE seq = ?", (j,)).fetchone()
    assert a != b
    sets = ", ".join(f"{c} = ?" for c in COLUMNS)
    conn.execute(f"UPDATE audit_log SET {sets} WHERE seq = ?", (*b, i))
    conn.execute(f"UPDATE audit_log SET {sets} WHERE seq = ?", (*a, j))
    return {i}


def _edit_last(conn, seqs):
    k = seqs[-1]
    cur = conn.execute("UPDATE audit_log SET details = '{\"forged\":true}' WHERE seq = ?", (k,))
    assert cur.rowcount == 1
    return {k}


TAMPERS = {"edit-actor": _edit_actor, "delete-middle": _delete_middle, "swap-two": _swap, "edit-last": _edit_last}


def test_untampered_chain_verifies(stopped):
    s, _ = stopped
    p = _verify(s)
    assert p.returncode == 0, f"audit verify failed on an untampered log\n{p.stdout}\n{p.stderr}"
    assert "ok" in p.stdout.lower(), p.stdout


@pytest.mark.parametrize("kind", list(TAMPERS))
def test_tampering_is_detected_and_named(stopped, tmp_path, kind):
    s, seqs = stopped
    copy = tmp_path / f"data-{kind}"
    shutil.copytree(s.data_dir, copy)
    conn = sqlite3.connect(copy / "ciel.db")
    try:
        expected = TAMPERS[kind](conn, seqs)
        conn.commit()
    finally:
        conn.close()

    p = _verify(s, copy)
    out = f"stdout: {p.stdout}\nstderr: {p.stderr}"
    assert p.returncode != 0, f"audit verify accepted a log with {kind}\n{out}"
    named = _named_entries(p)
    assert named, f"audit verify does not name the broken entry (expected e.g. 'entry {min(expected)}')\n{out}"
    assert named[0] in expected, f"audit verify names entry {named[0]}, expected {sorted(expected)}\n{out}"

    # The original is untouched and still verifies.
    assert _verify(s).returncode == 0
