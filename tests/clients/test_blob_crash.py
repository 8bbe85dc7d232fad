"""Crash safety of the Blob data plane with azure-storage-blob unchanged: `kill -9` the server during
many concurrent uploads (blobs in one piece and Put Block + Put Block List uploads), restart it on the
same data directory, and check that

- every upload the SDK acknowledged reads back bit-exact;
- every listed blob is complete: its content is exactly one of the payloads attempted for its name
  (the last acknowledged one, or one that was in flight at the kill);
- the startup garbage collection removed exactly the files the crash orphaned (`.partial` files and
  objects no record refers to), wrote one audit record for it, and left on disk exactly the objects
  the metadata store refers to; a further clean restart removes nothing;
- the audit chain verifies;
- a second `ciel up` on the same data directory is refused.

The kill comes at three different moments (early, late, after a fixed delay)."""

from __future__ import annotations

import hashlib
import os
import random
import re
import sqlite3
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from cieltest import DOMAIN, ciel_bin, describe, wait_until

API = "2025-08-01"
THREADS = 32
# The SDK switches to Put Block + Put Block List above 256 KiB, in blocks of 256 KiB.
BLOCK = 256 * 1024
GC_ACTION = "Ciel/blobstore/garbageCollect"
OBJECT = re.compile(r"^[0-9a-f]{32}$")


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class Uploads:
    """What the clients attempted and what the server acknowledged, per blob name."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked: dict[str, str] = {}  # name -> sha256 of the last acknowledged payload
        self.pending: dict[str, list[str]] = defaultdict(list)  # attempts since the last ack
        self.acks = 0
        self.in_flight = 0
        self.errors: list[tuple[float, str, str]] = []

    def allowed(self, name: str) -> set[str]:
        out = set(self.pending.get(name, []))
        if name in self.acked:
            out.add(self.acked[name])
        return out


def _client(s, account) -> BlobServiceClient:
    # No retries: after the kill every call must fail at once, not wait for the restart.
    return BlobServiceClient(f"https://{account['name']}.blob.core.{DOMAIN}:{s.port}", credential=account["key"],
                             connection_verify=s.ca, max_single_put_size=BLOCK, max_block_size=BLOCK,
                             retry_total=0, connection_timeout=10, read_timeout=30)


def _uploader(s, account, container, up: Uploads, stop: threading.Event, prefix: str, seed: int):
    rng = random.Random(seed)
    cc = _client(s, account).get_container_client(container)
    mine: list[str] = []
    k = 0
    while not stop.is_set():
        if mine and rng.random() < 0.2:
            name = rng.choice(mine)  # an overwrite: the replaced object is removed after the commit
        else:
            name = f"{prefix}/{k}"
            k += 1
            mine.append(name)
        big = rng.random() < 0.3
        data = os.urandom(rng.randint(BLOCK + 1, 3 * 1024 * 1024) if big else rng.randint(0, 64 * 1024))
        sha = _sha(data)
        with up.lock:
            up.pending[name].append(sha)
            up.in_flight += 1
        try:
            cc.upload_blob(name, data, overwrite=True, max_concurrency=1)
        except Exception as e:  # the server is gone (or failed: checked against the kill time)
            with up.lock:
                up.in_flight -= 1
                up.errors.append((time.monotonic(), name, repr(e)[:300]))
            return
        with up.lock:
            up.in_flight -= 1
            up.acked[name] = sha
            up.pending[name] = []
            up.acks += 1


def _files(root: Path) -> tuple[set[str], list[Path], list[Path]]:
    """(object ids, .partial files, anything else) under the blob root."""
    objects, partials, other = set(), [], []
    for p in root.rglob("*"):
        if p.is_dir():
            continue
        if p.name.endswith(".partial"):
            partials.append(p)
        elif OBJECT.match(p.name):
            objects.add(p.name)
        else:
            other.append(p)
    return objects, partials, other


def _db(s) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{s.data_dir / 'ciel.db'}?mode=ro", uri=True)


def _referenced(s) -> set[str]:
    """The objects the metadata store refers to: blobs in one piece, committed and uncommitted
    blocks (what `MetadataStore::referenced_objects` returns, read here straight from SQLite)."""
    import json
    out = set()
    with _db(s) as c:
        for oid, blocks in c.execute("SELECT object_id, blocks FROM blobs"):
            if oid:
                out.add(bytes(oid).hex())
            for b in json.loads(blocks):
                out.add(b["object"])
        for (oid,) in c.execute("SELECT object_id FROM blob_blocks"):
            out.add(bytes(oid).hex())
    return out


def _gc_audits(s) -> int:
    with _db(s) as c:
        return c.execute("SELECT count(*) FROM audit_log WHERE action = ?", (GC_ACTION,)).fetchone()[0]


def _gc_report(s) -> dict[str, int]:
    """The garbage collection's log line of the server's last start."""

    def lines():
        log = s.log_path.read_text(errors="replace")
        last = log[log.rfind("===== start #"):]
        return [x for x in last.splitlines() if "blob store garbage collection done" in x]

    # The line comes on stderr before `ready` on stdout, but the two are drained by different threads.
    found = wait_until(lines, 10, what="the garbage collection summary in the server log")
    assert len(found) == 1, f"expected one garbage collection summary in the last start's log: {found}"
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", found[0])}


def _audit_verify(s):
    p = subprocess.run([ciel_bin(), "audit", "verify", "--data-dir", str(s.data_dir)], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 0 and "ok" in p.stdout.lower(), f"audit verify failed\n{p.stdout}\n{p.stderr}"


def _check_contents(s, account, container, up: Uploads, settled: dict[str, str | None]):
    """Every acknowledged blob bit-exact, every listed blob complete; returns name -> sha (None =
    absent) for the names of this round, as the server now holds them."""
    cc = _client(s, account).get_container_client(container)
    listed = [b.name for b in cc.list_blobs()]

    def read(name):
        return name, _sha(cc.download_blob(name, max_concurrency=1).readall())

    with ThreadPoolExecutor(8) as pool:
        got = dict(pool.map(read, listed))
    now: dict[str, str | None] = {}
    for name in set(up.pending) | set(up.acked):
        if name in up.acked:
            assert name in got, f"acknowledged blob {name} is missing after the restart"
        if name in got:
            assert got[name] in up.allowed(name), (
                f"blob {name} holds content that was never uploaded whole (a partial or mixed blob): "
                f"acknowledged={up.acked.get(name)} in-flight={up.pending.get(name)} got={got[name]}")
        now[name] = got.get(name)
    # Earlier rounds' blobs are exactly as they were; no other name exists.
    for name, sha in settled.items():
        assert got.get(name) == sha, f"blob {name} of an earlier round changed: {sha} -> {got.get(name)}"
    stray = set(got) - set(now) - set(settled)
    assert not stray, f"blobs nobody uploaded: {sorted(stray)[:10]}"
    return now


def test_kill_during_concurrent_uploads(server_factory):
    s = server_factory("crash")
    rg = f"crash-{uuid.uuid4().hex[:8]}"
    s.create_group(rg)
    name = f"crash{uuid.uuid4().hex[:12]}"
    r = s.arm_call("PUT", f"/subscriptions/{s.sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}",
                   params={"api-version": API},
                   json_body={"location": "francecentral", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"})
    assert r.status_code == 200, describe(r)
    keys = s.arm_call("POST", f"{r.json()['id']}/listKeys", params={"api-version": API}).json()["keys"]
    account = {"name": name, "key": keys[0]["value"]}
    container = "crash"
    _client(s, account).create_container(container)
    root = s.data_dir / "blobs"

    settled: dict[str, str | None] = {}
    totals = {"acked": 0, "orphans": 0, "partials": 0}
    # When to kill: after a few acknowledgements (most first uploads in flight), after many,
    # and after a fixed delay whatever has been acknowledged.
    # A crash leaves something to collect only if it cuts a write or a commit short; should three
    # kills all fall between requests, up to three more (rare) rounds make sure the collection runs.
    moments = [(5, 0.0), (60, 0.0), (1, 1.5)]
    rnd = -1
    while rnd + 1 < len(moments) or (totals["orphans"] + totals["partials"] == 0 and rnd + 1 < 6):
        rnd += 1
        min_acks, delay = moments[rnd] if rnd < len(moments) else (1, 0.8)
        up = Uploads()
        stop = threading.Event()
        threads = [threading.Thread(target=_uploader, args=(s, account, container, up, stop, f"r{rnd}/t{i:02d}", rnd * 1000 + i),
                                    daemon=True) for i in range(THREADS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        while up.acks < min_acks or time.monotonic() - t0 < delay:
            assert time.monotonic() - t0 < 60, f"round {rnd}: only {up.acks} uploads acknowledged in 60 s"
            with up.lock:
                early = list(up.errors)
            assert not early, f"round {rnd}: uploads failed before the kill: {early[:3]}\n{s.log_text(40)}"
            time.sleep(0.01)
        with up.lock:
            in_flight = up.in_flight
        killed_at = time.monotonic()
        s.kill()
        stop.set()
        for t in threads:
            t.join(timeout=60)
            assert not t.is_alive(), "an uploader did not stop after the kill"
        assert in_flight > 0, "nothing was in flight at the kill: the round tests nothing"
        before_kill = [e for e in up.errors if e[0] < killed_at]
        assert not before_kill, f"uploads failed before the kill: {before_kill[:3]}"
        totals["acked"] += up.acks

        # What the crash left: objects no record refers to, partial files.
        objects, partials, other = _files(root)
        referenced = _referenced(s)
        assert referenced <= objects, f"records refer to missing objects: {sorted(referenced - objects)[:5]}"
        orphans = objects - referenced
        totals["orphans"] += len(orphans)
        totals["partials"] += len(partials)
        _audit_verify(s)
        audits = _gc_audits(s)

        s.start()
        gc = _gc_report(s)
        assert gc.get("removed_objects") == len(orphans) and gc.get("removed_partials") == len(partials), (
            f"round {rnd}: the crash left {len(orphans)} orphaned objects and {len(partials)} partial files; "
            f"the garbage collection reports {gc}")
        assert gc.get("failed") == 0 and gc.get("unknown_files") == 0, gc
        assert _gc_audits(s) == audits + (1 if orphans or partials else 0)
        objects_after, partials_after, other_after = _files(root)
        assert not partials_after, f"partial files survived the restart: {partials_after[:5]}"
        assert not other_after and not other, f"unexpected files: {(other + other_after)[:5]}"
        assert objects_after == _referenced(s), "object files differ from the objects the records refer to"

        now = _check_contents(s, account, container, up, settled)
        settled.update(now)
        print(f"round {rnd}: {up.acks} acknowledged, {in_flight} in flight at the kill, "
              f"{len(orphans)} orphaned objects and {len(partials)} partial files removed at restart")

    assert totals["orphans"] + totals["partials"] > 0, f"{rnd + 1} crashes left nothing to collect: {totals}"

    # A clean stop and start: nothing to collect, nothing changes.
    objects, _, _ = _files(root)
    assert s.stop() == 0
    s.start()
    gc = _gc_report(s)
    assert gc.get("removed_objects") == 0 and gc.get("removed_partials") == 0, gc
    assert gc.get("kept_objects") == len(objects), gc
    assert _files(root)[0] == objects
    _check_contents(s, account, container, Uploads(), settled)

    # A second server on the same data directory is refused: its collection would take the first
    # one's uploads in progress for garbage.
    second = subprocess.Popen([ciel_bin(), "up", "--data-dir", str(s.data_dir), "--domain", DOMAIN,
                               "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True)
    try:
        out, err = second.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        second.kill()
        out, err = second.communicate()
        raise AssertionError(f"a second `ciel up` on the same data directory kept running\n{out}\n{err}")
    assert second.returncode != 0 and "another `ciel up`" in err, f"{second.returncode}\n{out}\n{err}"
    assert s.stop() == 0
    _audit_verify(s)
    print(f"totals: {totals}")
