"""Reversibility (issue 6): `ciel export` writes everything a tenant has as an open, verifiable
directory (docs/export-format.md), `ciel export verify` names the first bad file, `ciel import`
recreates it all in another Ciel (conflicts refused, or --rename; an interrupted import rolls back
or resumes), an interrupted export resumes, `--since` exports only what changed,
`--to-blob-endpoint` pushes the blobs into Azurite, and `ciel tenant erase` destroys a tenant
after its notice. Populated and compared through the real SDKs."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import socket
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

# Today's Key Vault data-plane SDKs are installed apart from azure-cli's pinned ones (scripts/test).
import sys  # noqa: E402
_LATEST = os.environ.get("CIEL_SDK_LATEST") or str(Path(__file__).resolve().parents[2] / ".venv" / "sdk-latest")
if Path(_LATEST).is_dir():
    sys.path.insert(0, _LATEST)
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.resource import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient
from azure.storage.blob import (AccessPolicy, AccountSasPermissions, BlobServiceClient, ContainerSasPermissions,
                                ContentSettings, ResourceTypes, generate_account_sas)

from azure.keyvault.keys import (KeyClient, KeyCurveName, KeyRotationLifetimeAction, KeyRotationPolicy,  # noqa: E402
                                  KeyRotationPolicyAction)
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm, SignatureAlgorithm  # noqa: E402
from azure.keyvault.secrets import SecretClient  # noqa: E402
from azure.mgmt.keyvault import KeyVaultManagementClient  # noqa: E402

from cieltest import DOMAIN, ciel_bin, claims_of, describe, free_port, missing_prerequisite, wait_until  # noqa: E402

API = "2025-08-01"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"


def _run(*args, check=True, timeout=600):
    p = subprocess.run([ciel_bin(), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if check:
        assert p.returncode == 0, f"ciel {' '.join(map(str, args))} -> {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


class Clients:
    def __init__(self, server):
        self.s = server
        self.cred = ClientSecretCredential(server.tenant, server.client_id, server.secret, authority=server.login,
                                           disable_instance_discovery=True, connection_verify=server.ca)
        kw = dict(base_url=server.arm, credential_scopes=[server.arm_scope], connection_verify=server.ca)
        self.rm = ResourceManagementClient(self.cred, server.sub, **kw)
        self.st = StorageManagementClient(self.cred, server.sub, **kw)
        self.authz = AuthorizationManagementClient(self.cred, server.sub, **kw)

    def blob(self, account: str, rg: str) -> BlobServiceClient:
        # The SDK's models are mappings, whose keys() method hides the `keys` field: index it.
        key = self.st.storage_accounts.list_keys(rg, account)["keys"][0]["value"]
        return BlobServiceClient(f"https://{account}.blob.core.{DOMAIN}:{self.s.port}", credential=key,
                                 connection_verify=self.s.ca)


def _account(c: Clients, rg: str, name: str, public: bool = False):
    return c.st.storage_accounts.begin_create(rg, name, {
        "location": "francecentral", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2", "tags": {"app": "export"},
        "properties": {"allowBlobPublicAccess": public}}).result()


def _populate(c: Clients) -> dict:
    """Two groups, two accounts, three containers, 1,000+ blobs of mixed sizes with metadata,
    content headers, tags and snapshots, append and page blobs, a stored access policy, a
    reader's role assignment."""
    tag = uuid.uuid4().hex[:6]
    rg1, rg2 = f"exp-a-{tag}", f"exp-b-{tag}"
    c.rm.resource_groups.create_or_update(rg1, {"location": "francecentral", "tags": {"team": "one"}})
    c.rm.resource_groups.create_or_update(rg2, {"location": "francesouth"})
    a1, a2 = f"expa{tag}", f"expb{tag}"
    _account(c, rg1, a1, public=True)
    _account(c, rg2, a2)
    b1 = c.blob(a1, rg1)
    docs = b1.create_container("docs", metadata={"owner": "alice"})
    docs.set_container_access_policy(signed_identifiers={
        "readers": AccessPolicy(permission="rl", start=datetime(2026, 1, 1, tzinfo=timezone.utc),
                                expiry=datetime(2030, 1, 1, tzinfo=timezone.utc))}, public_access="blob")
    media = b1.create_container("media")
    logs = c.blob(a2, rg2).create_container("logs", metadata={"kind": "logs"})
    rnd = random.Random(6)

    def up(i):
        size = rnd.choice([0, 1, 100, 4096, 20000, 70000])
        name = f"files/{i // 100:02d}/blob-{i:04d}.bin"
        docs.upload_blob(name, os.urandom(size), metadata={"n": str(i)} if i % 3 == 0 else None,
                         content_settings=ContentSettings(content_type="application/x-test") if i % 5 == 0 else None)
    with cf.ThreadPoolExecutor(8) as ex:
        list(ex.map(up, range(1000)))
    # Names a file system does not take as they are, and a name that is also a folder.
    odd = {"a": b"file a", "a/b": b"under a", "50%:*?.txt": b"odd", "été/ünï code.txt": "é".encode()}
    for n, d in odd.items():
        docs.upload_blob(n, d)
    big = os.urandom(3 * 1024 * 1024 + 7)
    media.upload_blob("big.bin", big, content_settings=ContentSettings(content_type="video/mp4", cache_control="max-age=60",
                                                                       content_disposition="inline"),
                      metadata={"camera": "x1"})
    bc = media.get_blob_client("versioned.txt")
    bc.upload_blob(b"version 1", metadata={"v": "1"})
    bc.create_snapshot()
    bc.upload_blob(b"version 2", overwrite=True, metadata={"v": "2"})
    bc.create_snapshot()
    bc.upload_blob(b"version 3, current", overwrite=True, metadata={"v": "3"})
    bc.set_blob_tags({"stage": "final", "project": "ciel"})
    ab = logs.get_blob_client("app.log")
    ab.create_append_blob()
    for i in range(5):
        ab.append_block(f"line {i}\n".encode())
    pb = logs.get_blob_client("disk.vhd")
    pb.create_page_blob(4096)
    pb.upload_page(b"\x07" * 512, offset=1024, length=512)
    sp = c.s.create_sp(f"export-reader-{tag}")
    scope = f"/subscriptions/{c.s.sub}/resourceGroups/{rg1}"
    c.authz.role_assignments.create(scope, str(uuid.uuid4()), {"properties": {
        "roleDefinitionId": f"/subscriptions/{c.s.sub}/providers/Microsoft.Authorization/roleDefinitions/{READER}",
        "principalId": sp["objectId"], "principalType": "ServicePrincipal"}})
    return {"rg1": rg1, "rg2": rg2, "a1": a1, "a2": a2, "sp_name": f"export-reader-{tag}",
            "count": 1000 + len(odd)}


def _snapshot_of(c: Clients, info: dict) -> dict:
    """Everything the SDKs show of the populated tenant, for comparison across servers."""
    out = {"groups": {}, "accounts": {}, "containers": {}, "blobs": {}}
    for rg in (info["rg1"], info["rg2"]):
        g = c.rm.resource_groups.get(rg)
        out["groups"][rg] = (g.location, g.tags or {})
    for rg, a in ((info["rg1"], info["a1"]), (info["rg2"], info["a2"])):
        acc = c.st.storage_accounts.get_properties(rg, a)
        out["accounts"][a] = (acc.location, acc.sku.name, acc.kind, acc.properties.allow_blob_public_access, acc.tags)
        svc = c.blob(a, rg)
        for ct in svc.list_containers(include_metadata=True):
            cc = svc.get_container_client(ct.name)
            pol = cc.get_container_access_policy()
            out["containers"][f"{a}/{ct.name}"] = (ct.metadata, pol["public_access"],
                                                   [(p.id, p.access_policy.permission) for p in pol["signed_identifiers"]])
            items = list(cc.list_blobs(include=["metadata", "snapshots", "tags"]))

            def one(b):
                bc = cc.get_blob_client(b.name, snapshot=b.snapshot)
                data = bc.download_blob().readall()
                cs = b.content_settings
                return (f"{a}/{ct.name}/{b.name}@{b.snapshot or ''}",
                        (hashlib.sha256(data).hexdigest(), b.size, b.blob_type, b.metadata, b.tags,
                         cs.content_type, cs.cache_control, cs.content_disposition,
                         bytes(cs.content_md5 or b"").hex(), b.last_modified))
            with cf.ThreadPoolExecutor(8) as ex:
                out["blobs"].update(dict(ex.map(one, items)))
    return out


def test_export_verify_tamper_import_compare(server_factory, tmp_path):
    src = server_factory("export-src")
    c = Clients(src)
    info = _populate(c)
    before = _snapshot_of(c, info)
    assert sum(1 for k in before["blobs"] if k.startswith(f"{info['a1']}/docs/")) == info["count"]

    out = tmp_path / "export"
    # Beside the running server (it reads the store in WAL mode and immutable objects).
    r = _run("export", "--data-dir", src.data_dir, "--tenant", src.tenant, "--out", out)
    digest = r.stdout.split("manifest sha256 ")[1].split()[0]
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "ciel-export/1" and m["tenant"]["id"] == src.tenant
    assert m["summary"]["blobs"] >= info["count"] + 4 and m["summary"]["snapshots"] == 2, m["summary"]
    paths = {f["path"] for f in m["files"]}
    for p in ("tenant.json", "audit/audit-log.jsonl", "authorization/roleAssignments.json",
              f"subscriptions/{src.sub}/resourceGroups/{info['rg1']}/template.json",
              f"blobs/{info['a1']}/docs/data/files/00/blob-0000.bin", f"blobs/{info['a1']}/docs/data/50%25%3A%2A%3F.txt",
              f"blobs/{info['a1']}/docs/data/été/ünï code.txt"):
        assert p in paths, p
    # Plain files a person can use: bytes as they are, JSON, a deployable template.
    assert (out / f"blobs/{info['a1']}/docs/data/a").read_bytes() == b"file a"
    side = [json.loads(l) for l in (out / f"blobs/{info['a1']}/docs/blobs.jsonl").read_text().splitlines()]
    ab = next(e for e in side if e["name"] == "a/b")
    assert ab["file"].startswith("conflicts/") and (out / f"blobs/{info['a1']}/docs" / ab["file"]).read_bytes() == b"under a"
    snaps = [json.loads(l) for l in (out / f"blobs/{info['a1']}/media/blobs.jsonl").read_text().splitlines()]
    vers = [e for e in snaps if e["name"] == "versioned.txt"]
    assert [(out / f"blobs/{info['a1']}/media" / e["file"]).read_bytes() for e in vers] == [b"version 3, current", b"version 1", b"version 2"]
    assert vers[0]["tags"] == {"stage": "final", "project": "ciel"} and vers[1]["metadata"] == {"v": "1"}
    t = json.loads((out / f"subscriptions/{src.sub}/resourceGroups/{info['rg1']}/template.json").read_text())
    assert t["$schema"].endswith("2019-04-01/deploymentTemplate.json#")
    assert {r["type"] for r in t["resources"]} == {"Microsoft.Storage/storageAccounts",
                                                   "Microsoft.Storage/storageAccounts/blobServices/containers"}
    lines = (out / "audit/audit-log.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["format"] == "ciel-audit-export/1"
    v = _run("audit", "verify-export", out / "audit/audit-log.jsonl", "--public-key", m["source"]["auditPublicKey"])
    assert json.loads(v.stdout)["entries"] > 0

    ok = _run("export", "verify", out, "--manifest-sha256", digest)
    assert "export ok" in ok.stdout
    # Tampering: one byte of one blob; verify names the file and fails.
    bad = tmp_path / "tampered"
    shutil.copytree(out, bad)
    victim = bad / f"blobs/{info['a1']}/docs/data/files/05/blob-0512.bin"
    data = bytearray(victim.read_bytes() or b"\0")
    data[0] ^= 1
    victim.write_bytes(bytes(data))
    p = _run("export", "verify", bad, check=False)
    assert p.returncode == 1 and "blobs/" in p.stderr and "blob-0512.bin" in p.stderr, p.stderr
    # A manifest rewritten to match is caught by the digest kept apart.
    (bad / "manifest.json").write_text((bad / "manifest.json").read_text().replace('"createdAt"', '"createdAt" ', 1))
    p = _run("export", "verify", bad, "--manifest-sha256", digest, check=False)
    assert p.returncode == 1 and "manifest.json" in p.stderr, p.stderr

    # Import into a fresh Ciel with another data directory (its own tenant and subscription).
    dst = server_factory("export-dst")
    dst.create_sp(info["sp_name"])  # principals are not exported with credentials: the target has its own
    dst.stop()
    # A tampered export is refused before anything is written.
    p = _run("import", "--data-dir", dst.data_dir, "--from", bad, "--tenant", dst.tenant,
             "--subscription", f"{src.sub}={dst.sub}", check=False)
    assert p.returncode != 0 and "does not verify" in p.stderr, p.stderr
    r = _run("import", "--data-dir", dst.data_dir, "--from", out, "--tenant", dst.tenant,
             "--subscription", f"{src.sub}={dst.sub}")
    assert f"{info['count'] + 4} blobs, 2 snapshots" in r.stdout, r.stdout
    # Again: refused (already imported).
    p = _run("import", "--data-dir", dst.data_dir, "--from", out, "--tenant", dst.tenant,
             "--subscription", f"{src.sub}={dst.sub}", check=False)
    assert p.returncode != 0 and "already imported" in p.stderr, p.stderr
    dst.start()
    d = Clients(dst)
    after = _snapshot_of(d, info)
    assert after["groups"] == before["groups"]
    assert after["accounts"] == before["accounts"]
    assert after["containers"] == before["containers"]
    assert after.keys() == before.keys() and set(after["blobs"]) == set(before["blobs"])
    # Page blobs come back whole (unwritten pages as written zeros): same bytes.
    for k, v in before["blobs"].items():
        assert after["blobs"][k] == v, k
    # New keys: the source's keys do not open the imported account.
    assert d.st.storage_accounts.list_keys(info["rg1"], info["a1"])["keys"][0]["value"] != \
        c.st.storage_accounts.list_keys(info["rg1"], info["a1"])["keys"][0]["value"]
    ras = [ra for ra in d.authz.role_assignments.list_for_scope(f"/subscriptions/{dst.sub}/resourceGroups/{info['rg1']}")
           if ra.properties.role_definition_id.endswith(READER)]
    sps = {sp["objectId"] for sp in dst.cli("sp", "list", "--tenant", dst.tenant) if sp["displayName"] == info["sp_name"]}
    assert len(ras) == 1 and ras[0].properties.principal_id in sps, ras

    # Names are unique in a cloud: a second import (another tenant) collides before writing anything,
    # and --rename imports it under new names.
    other = dst.cli("tenant", "create", "--name", "Other")
    dst.stop()
    p = _run("import", "--data-dir", dst.data_dir, "--from", out, "--tenant", other["tenantId"],
             "--subscription", f"{src.sub}={other['subscriptionId']}", check=False)
    assert p.returncode != 0 and "name conflict" in p.stderr and info["a1"] in p.stderr, p.stderr
    r = _run("import", "--data-dir", dst.data_dir, "--from", out, "--tenant", other["tenantId"],
             "--subscription", f"{src.sub}={other['subscriptionId']}", "--rename")
    assert f"renamed: storage account {info['a1']} -> " in r.stdout, r.stdout
    dst.start()


def _big_tenant(c: Clients, n: int, size: int):
    tag = uuid.uuid4().hex[:6]
    rg, a = f"exp-r-{tag}", f"expr{tag}"
    c.rm.resource_groups.create_or_update(rg, {"location": "francecentral"})
    _account(c, rg, a)
    cc = c.blob(a, rg).create_container("big")
    for i in range(n):
        cc.upload_blob(f"part-{i:02d}.bin", os.urandom(size), max_concurrency=4)
    return rg, a, cc


def test_export_killed_midway_resumes_and_increments(server_factory, tmp_path):
    src = server_factory("export-resume")
    c = Clients(src)
    rg, a, cc = _big_tenant(c, 12, 12 * 1024 * 1024)
    out = tmp_path / "resumed"
    journal = out / ".ciel-export-journal.jsonl"
    proc = subprocess.Popen([ciel_bin(), "export", "--data-dir", str(src.data_dir), "--tenant", src.tenant, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: journal.exists() and journal.read_text().count("/data/part-") >= 2, 120, interval=0.005,
                   what="two blobs exported")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "manifest.json").exists()
    p = _run("export", "--data-dir", src.data_dir, "--tenant", src.tenant, "--out", out, check=False)
    assert p.returncode != 0 and "--resume" in p.stderr, p.stderr
    r = _run("export", "--data-dir", src.data_dir, "--tenant", src.tenant, "--out", out, "--resume")
    assert "kept from the interrupted run" in r.stdout, r.stdout
    _run("export", "verify", out)
    assert not journal.exists()
    m = json.loads((out / "manifest.json").read_text())
    for i in range(12):
        f = next(f for f in m["files"] if f["path"].endswith(f"/data/part-{i:02d}.bin"))
        assert f["sha256"] == hashlib.sha256(cc.download_blob(f"part-{i:02d}.bin").readall()).hexdigest()

    # Incremental: one blob changed, one added; the rest is listed as in the base.
    cc.upload_blob("part-03.bin", b"changed", overwrite=True)
    cc.upload_blob("new.bin", b"new")
    inc = tmp_path / "incremental"
    _run("export", "--data-dir", src.data_dir, "--tenant", src.tenant, "--out", inc, "--since", out / "manifest.json")
    _run("export", "verify", inc)
    mi = json.loads((inc / "manifest.json").read_text())
    assert mi["since"]["manifestSha256"] == hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    data = sorted(f["path"].rsplit("/", 1)[1] for f in mi["files"] if "/data/" in f["path"])
    assert data == ["new.bin", "part-03.bin"], data
    side = [json.loads(l) for l in (inc / f"blobs/{a}/big/blobs.jsonl").read_text().splitlines()]
    assert sum(1 for e in side if e.get("inBase")) == 11 and len(side) == 13

    # An import killed midway never stays half-done silently: --rollback removes what it created
    # (a second run then finds no leftover name), and a run after another kill resumes.
    dst = server_factory("export-import-kill")
    dst.stop()
    imports = dst.data_dir / "imports"

    def killed_import():
        p = subprocess.Popen([ciel_bin(), "import", "--data-dir", str(dst.data_dir), "--from", str(out), "--tenant", dst.tenant,
                              "--subscription", f"{src.sub}={dst.sub}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            wait_until(lambda: any("account:" in f.read_text() for f in imports.glob("*.json")), 120, interval=0.002,
                       what="the import's account in its journal")
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        assert '"status": "in-progress"' in next(imports.glob("*.json")).read_text()

    killed_import()
    r = _run("import", "--data-dir", dst.data_dir, "--from", out, "--tenant", dst.tenant, "--rollback")
    assert "account:" in r.stdout and not list(imports.glob("*.json")), r.stdout
    killed_import()
    r = _run("import", "--data-dir", dst.data_dir, "--from", out, "--tenant", dst.tenant,
             "--subscription", f"{src.sub}={dst.sub}")
    assert "resumed" in r.stdout, r.stdout
    dst.start()
    there = Clients(dst).blob(a, rg).get_container_client("big")
    assert sorted(b.name for b in there.list_blobs()) == [f"part-{i:02d}.bin" for i in range(12)]
    for i in (0, 7, 11):
        want = next(f["sha256"] for f in m["files"] if f["path"].endswith(f"/data/part-{i:02d}.bin"))
        assert hashlib.sha256(there.download_blob(f"part-{i:02d}.bin").readall()).hexdigest() == want

    # Erasure: refused without notice, then before the period, done with --now (drills).
    p = _run("tenant", "erase", src.tenant, "--data-dir", src.data_dir, check=False)
    assert p.returncode != 0 and "--notice" in p.stderr, p.stderr
    _run("tenant", "erase", src.tenant, "--notice", "--data-dir", src.data_dir)
    p = _run("tenant", "erase", src.tenant, "--data-dir", src.data_dir, check=False)
    assert p.returncode != 0 and "notice period is not over" in p.stderr, p.stderr
    objects_before = sum(1 for _ in (src.data_dir / "blobs").rglob("*") if _.is_file())
    assert objects_before > 0
    r = _run("tenant", "erase", src.tenant, "--now", "--data-dir", src.data_dir)
    assert "1 storage accounts" in r.stdout, r.stdout
    assert sum(1 for _ in (src.data_dir / "blobs").rglob("*") if _.is_file()) == 0
    audit = _run("audit", "export", "--data-dir", src.data_dir, "--tenant", src.tenant).stdout
    assert "Ciel.Tenant/erase/action" in audit and "Ciel.Tenant/erase/notice/action" in audit


AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _azurite() -> str:
    exe = os.environ.get("CIEL_AZURITE") or shutil.which("azurite-blob")
    if not exe or not os.access(exe, os.X_OK):
        pytest.fail("Azurite is missing: scripts/test installs it from npm (azurite); set CIEL_AZURITE")
    return exe


def test_export_to_azurite_blob_endpoint(server_factory, tmp_path):
    exe = _azurite()
    src = server_factory("export-push")
    c = Clients(src)
    tag = uuid.uuid4().hex[:6]
    rg, a = f"exp-p-{tag}", f"expp{tag}"
    c.rm.resource_groups.create_or_update(rg, {"location": "francecentral"})
    _account(c, rg, a)
    cc = c.blob(a, rg).create_container("outbound", metadata={"dest": "azurite"})
    blobs = {"small.txt": b"hello azurite", "dir/été.bin": os.urandom(70000), "empty": b"",
             "large.bin": os.urandom(20 * 1024 * 1024 + 3)}  # three 8 MiB blocks
    for n, d in blobs.items():
        cc.upload_blob(n, d, metadata={"k": n.replace("/", "_").replace(".", "_").encode("ascii", "ignore").decode() or "x"},
                       content_settings=ContentSettings(content_type="application/x-ciel"))
    # Snapshots: recreated at the destination (new times), oldest first, before the current content.
    sb = cc.get_blob_client("small.txt")
    sb.upload_blob(b"first", overwrite=True, metadata={"k": "v1"}, content_settings=ContentSettings(content_type="application/x-ciel"))
    sb.create_snapshot()
    sb.upload_blob(b"second", overwrite=True, metadata={"k": "v2"}, content_settings=ContentSettings(content_type="application/x-ciel"))
    sb.create_snapshot()
    sb.upload_blob(blobs["small.txt"], overwrite=True, metadata={"k": "small_txt"},
                   content_settings=ContentSettings(content_type="application/x-ciel"))
    port = free_port()
    loc = tmp_path / "azurite"
    loc.mkdir()
    az = subprocess.Popen([exe, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(loc),
                           "--skipApiVersionCheck", "--loose", "--silent"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        def up():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_until(up, 60, what="Azurite listening")
        endpoint = f"http://127.0.0.1:{port}/devstoreaccount1"
        sas = generate_account_sas("devstoreaccount1", AZURITE_KEY, ResourceTypes(container=True, object=True),
                                   AccountSasPermissions(read=True, write=True, list=True, create=True),
                                   expiry=datetime.now(timezone.utc) + timedelta(hours=1))
        r = _run("export", "--data-dir", src.data_dir, "--tenant", src.tenant, "--to-blob-endpoint", endpoint, "--sas", sas)
        assert f"pushed {len(blobs)} blobs and 2 snapshots" in r.stdout, r.stdout
        there = BlobServiceClient(endpoint, credential={"account_name": "devstoreaccount1", "account_key": AZURITE_KEY})
        dc = there.get_container_client("outbound")
        assert dc.get_container_properties().metadata == {"dest": "azurite"}
        listed = list(dc.list_blobs(include=["metadata", "snapshots"]))
        snaps = [b for b in listed if b.snapshot]
        assert [(b.name, dc.get_blob_client(b.name, snapshot=b.snapshot).download_blob().readall(), b.metadata) for b in snaps] == \
            [("small.txt", b"first", {"k": "v1"}), ("small.txt", b"second", {"k": "v2"})], snaps
        got = {b.name: b for b in listed if not b.snapshot}
        assert set(got) == set(blobs)
        for n, d in blobs.items():
            assert dc.download_blob(n).readall() == d, n
            assert got[n].content_settings.content_type == "application/x-ciel"
            assert got[n].metadata == cc.get_blob_client(n).get_blob_properties().metadata
    finally:
        az.terminate()
        az.wait(timeout=20)


# --------------------------------------------------------------------------------------------
# Key Vault in the export (docs/export-format.md, "Key Vault")
# --------------------------------------------------------------------------------------------

KV_ADMIN = "00482a5a-887f-4fb3-b363-3b7fe8e74483"
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


def open_jwe(jwe: str, private_key_pem: bytes) -> bytes:
    """The snippet of docs/export-format.md, as it is there: a compact JWE (RSA-OAEP-256 +
    A256GCM) opened with the `cryptography` package alone, no Ciel code."""
    import base64
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    def b64(s: str) -> bytes:
        return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

    header, ek, iv, ct, tag = jwe.split(".")
    assert json.loads(b64(header))["alg"] == "RSA-OAEP-256" and json.loads(b64(header))["enc"] == "A256GCM"
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    cek = key.decrypt(b64(ek), padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    return AESGCM(cek).decrypt(b64(iv), b64(ct) + b64(tag), header.encode("ascii"))


def _b64u(s: str) -> bytes:
    import base64
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _recipient(tmp_path: Path, name: str = "recipient") -> tuple[Path, Path]:
    """A recipient key pair made with the standard tool: openssl."""
    key, pub = tmp_path / f"{name}-key.pem", tmp_path / f"{name}.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072", "-out", str(key)],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True)
    return key, pub


class Vaults:
    """A vault of a server with the admin as Key Vault Administrator, and its SDK clients."""

    def __init__(self, server, rg: str, name: str | None = None, create: bool = True, **props):
        self.s = server
        self.cred = ClientSecretCredential(server.tenant, server.client_id, server.secret, authority=server.login,
                                           disable_instance_discovery=True, connection_verify=server.ca)
        self.mgmt = KeyVaultManagementClient(self.cred, server.sub, base_url=server.arm,
                                             credential_scopes=[server.arm_scope], connection_verify=server.ca)
        self.name = name or f"kv{uuid.uuid4().hex[:12]}"
        self.rg = rg
        if create:
            p = {"tenantId": server.tenant, "sku": {"family": "A", "name": "standard"}}
            p.update(props)
            self.mgmt.vaults.begin_create_or_update(rg, self.name, {"location": "francecentral", "properties": p,
                                                                    "tags": {"app": "export"}}).result()
        v = self.mgmt.vaults.get(rg, self.name)
        self.id, self.uri = v.id, v.properties.vault_uri
        oid = claims_of(server.admin_token())["oid"]
        try:
            server.assign_role(self.id, f"/subscriptions/{server.sub}/providers/Microsoft.Authorization/roleDefinitions/{KV_ADMIN}", oid)
        except AssertionError:
            pass  # the imported role assignment already gives it
        self.secrets = SecretClient(self.uri, self.cred, connection_verify=server.ca)
        self.keys = KeyClient(self.uri, self.cred, connection_verify=server.ca)

    def crypto(self, key_id: str) -> CryptographyClient:
        return CryptographyClient(key_id, self.cred, connection_verify=self.s.ca)


def _kv_snapshot(v: Vaults) -> dict:
    """Every secret version (value, attributes, tags, content type) and key version (public part,
    attributes, tags) as the SDKs show them."""
    out = {"secrets": {}, "keys": {}, "deleted_secrets": sorted(d.name for d in v.secrets.list_deleted_secrets()),
           "deleted_keys": sorted(d.name for d in v.keys.list_deleted_keys())}
    for p in v.secrets.list_properties_of_secrets():
        for vp in v.secrets.list_properties_of_secret_versions(p.name):
            value = v.secrets.get_secret(p.name, vp.version).value if vp.enabled else None
            out["secrets"][f"{p.name}/{vp.version}"] = (value, vp.enabled, vp.content_type, vp.tags, vp.expires_on,
                                                        vp.created_on)
    for p in v.keys.list_properties_of_keys():
        for vp in v.keys.list_properties_of_key_versions(p.name):
            k = v.keys.get_key(p.name, vp.version)
            out["keys"][f"{p.name}/{vp.version}"] = (k.key_type, sorted(k.key_operations or []), k.key.n, k.key.e, k.key.x,
                                                     k.key.y, vp.enabled, vp.tags, vp.created_on)
    pol = v.keys.get_key_rotation_policy("rsa-k")
    out["policy"] = (pol.expires_in, [(a.action, a.time_after_create) for a in pol.lifetime_actions])
    return out


def test_keyvault_export_to_a_recipient_and_import(server_factory, tmp_path):
    src = server_factory("export-kv-src")
    rg = f"exp-kv-{uuid.uuid4().hex[:6]}"
    src.create_group(rg)
    v = Vaults(src, rg)
    # Three versions of one secret (the middle one disabled), a soft-deleted secret.
    v.secrets.set_secret("db-pass", "first value", content_type="text/plain", tags={"env": "prod"})
    v.secrets.set_secret("db-pass", "s3cr\u00e9t second \U0001f511")
    third = v.secrets.set_secret("db-pass", "third-" + "x" * 20000, expires_on=datetime(2031, 1, 1, tzinfo=timezone.utc))
    versions = [p.version for p in v.secrets.list_properties_of_secret_versions("db-pass")]
    middle = next(x for x in versions if x != third.properties.version and
                  v.secrets.get_secret("db-pass", x).value.startswith("s3cr"))
    v.secrets.update_secret_properties("db-pass", middle, enabled=False)
    v.secrets.set_secret("gone", "deleted but recoverable")
    v.secrets.begin_delete_secret("gone").result()
    # Keys: RSA with two versions and a rotation policy, EC P-256.
    v.keys.create_rsa_key("rsa-k", size=2048, tags={"use": "sign"})
    v.keys.update_key_rotation_policy("rsa-k", KeyRotationPolicy(expires_in="P90D", lifetime_actions=[
        KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")]))
    rsa_k = v.keys.rotate_key("rsa-k")
    ec_k = v.keys.create_ec_key("ec-k", curve=KeyCurveName.p_256)
    digest = hashlib.sha256(b"signed before the export").digest()
    rsa_sig = v.crypto(rsa_k.id).sign(SignatureAlgorithm.rs256, digest).signature
    ec_sig = v.crypto(ec_k.id).sign(SignatureAlgorithm.es256, digest).signature
    ciphertext = v.crypto(rsa_k.id).encrypt(EncryptionAlgorithm.rsa_oaep_256, b"encrypted before the export").ciphertext
    # A deleted vault (recoverable) with a secret.
    dv = Vaults(src, rg)
    dv.secrets.set_secret("in-deleted-vault", "still recoverable")
    dv.mgmt.vaults.delete(rg, dv.name)
    before = _kv_snapshot(v)
    assert len(before["secrets"]) == 3 and len(before["keys"]) == 3 and before["deleted_secrets"] == ["gone"]

    key_pem, pub_pem = _recipient(tmp_path)
    out = tmp_path / "kv-export"
    # Without a recipient: refused, nothing written.
    p = _run("export", "--data-dir", src.data_dir, "--tenant", src.tenant, "--out", out, check=False)
    assert p.returncode != 0 and "--recipient" in p.stderr, p.stderr
    assert not out.exists() or not any(out.iterdir())
    _run("export", "--data-dir", src.data_dir, "--tenant", src.tenant, "--out", out, "--recipient", pub_pem)
    m = json.loads((out / "manifest.json").read_text())
    assert m["keyvault"]["recipient"]["alg"] == "RSA-OAEP-256" and m["keyvault"]["recipient"]["enc"] == "A256GCM"
    assert m["summary"]["vaults"] == 2 and m["summary"]["secretVersions"] == 5 and m["summary"]["keyVersions"] == 3, m["summary"]
    # Never a value in clear, anywhere in the export.
    for f in out.rglob("*"):
        if f.is_file():
            assert b"first value" not in f.read_bytes() and b"still recoverable" not in f.read_bytes(), f
    kvdir = out / "keyvault" / v.name
    lines = [json.loads(x) for x in (kvdir / "secrets.jsonl").read_text().splitlines()]
    first = next(x for x in lines if x["name"] == "db-pass" and x["contentType"] == "text/plain")
    # A person opens a value with standard tools only: the documented snippet.
    assert open_jwe(first["value"], key_pem.read_bytes()) == b"first value"
    assert first["tags"] == {"env": "prod"}
    gone = next(x for x in lines if x["name"] == "gone")
    assert gone["deleted"]["deletedDate"] > 0 and open_jwe(gone["value"], key_pem.read_bytes()) == b"deleted but recoverable"
    keys = [json.loads(x) for x in (kvdir / "keys.jsonl").read_text().splitlines()]
    assert {k["exportable"] for k in keys} == {True} and all("private" in k for k in keys)
    priv = json.loads(open_jwe(next(k for k in keys if k["name"] == "ec-k")["private"], key_pem.read_bytes()))
    assert priv["kty"] == "EC" and priv["crv"] == "P-256" and _b64u(priv["x"]) == ec_k.key.x and len(_b64u(priv["d"])) == 32
    dvault = json.loads((out / "keyvault" / dv.name / "vault.json").read_text())
    assert dvault["deleted"]["deletionDate"] > 0
    _run("export", "verify", out)
    # One byte of a Key Vault file changed: verify names it.
    bad = tmp_path / "kv-tampered"
    shutil.copytree(out, bad)
    f = bad / "keyvault" / v.name / "secrets.jsonl"
    f.write_text(f.read_text().replace('"env":"prod"', '"env":"prud"'))
    p = _run("export", "verify", bad, check=False)
    assert p.returncode == 1 and f"keyvault/{v.name}/secrets.jsonl" in p.stderr, p.stderr

    # Import into a fresh Ciel (another data directory): without the identity refused, then done.
    dst = server_factory("export-kv-dst")
    dst.stop()
    args = ["import", "--data-dir", dst.data_dir, "--from", out, "--tenant", dst.tenant, "--subscription", f"{src.sub}={dst.sub}"]
    p = _run(*args, check=False)
    assert p.returncode != 0 and "--identity" in p.stderr, p.stderr
    other_key, _ = _recipient(tmp_path, "other")
    p = _run(*args, "--identity", other_key, check=False)
    assert p.returncode != 0 and "encrypted to key" in p.stderr, p.stderr
    r = _run(*args, "--identity", key_pem)
    assert "imported 2 key vaults: 5 secret versions, 3 key versions" in r.stdout, r.stdout
    dst.start()
    w = Vaults(dst, rg, name=v.name, create=False)
    after = _kv_snapshot(w)
    assert after == before
    assert w.uri.startswith(f"https://{v.name}.vault.") and str(dst.port) in w.uri
    # Same key material: an old signature verifies with the imported key, and it decrypts an old ciphertext.
    assert w.crypto(f"{w.uri}keys/rsa-k/{rsa_k.properties.version}").verify(SignatureAlgorithm.rs256, digest, rsa_sig).is_valid
    assert w.crypto(f"{w.uri}keys/ec-k/{ec_k.properties.version}").verify(SignatureAlgorithm.es256, digest, ec_sig).is_valid
    assert w.crypto(f"{w.uri}keys/rsa-k/{rsa_k.properties.version}").decrypt(
        EncryptionAlgorithm.rsa_oaep_256, ciphertext).plaintext == b"encrypted before the export"
    # The deleted secret and the deleted vault come back deleted, and recover.
    assert w.secrets.begin_recover_deleted_secret("gone").result().name == "gone"
    assert w.secrets.get_secret("gone").value == "deleted but recoverable"
    deleted = w.mgmt.vaults.get_deleted(dv.name, "francecentral")
    assert deleted.name == dv.name
    w.mgmt.vaults.begin_create_or_update(rg, dv.name, {"location": "francecentral", "properties": {
        "tenantId": dst.tenant, "sku": {"family": "A", "name": "standard"}, "createMode": "recover"}}).result()
    assert Vaults(dst, rg, name=dv.name, create=False).secrets.get_secret("in-deleted-vault").value == "still recoverable"


def test_keyvault_export_lists_hsm_keys_as_not_exportable(server_factory, tmp_path):
    if not Path(SOFTHSM).exists() or not shutil.which("softhsm2-util"):
        if os.environ.get("CIEL_SKIP_HSM_TESTS") == "1":
            pytest.skip("CIEL_SKIP_HSM_TESTS=1 and SoftHSM2 is not installed")
        missing_prerequisite("SoftHSM2 (Debian package softhsm2) is needed for the PKCS#11 custody tests")
    hsm = tmp_path / "hsm"
    (hsm / "tokens").mkdir(parents=True)
    conf = hsm / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {hsm / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {"SOFTHSM2_CONF": str(conf), "CIEL_TEST_HSM_PIN": "ciel-user-pin"}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "ciel", "--pin", "ciel-user-pin",
                    "--so-pin", "ciel-so-pin"], check=True, capture_output=True, env={**os.environ, **env})
    src = server_factory("export-kv-hsm", env, start=False)
    src.data_dir.mkdir(parents=True, exist_ok=True)
    (src.data_dir / "ciel.toml").write_text(
        f'[keyvault.custody]\nbackend = "pkcs11"\nmodule = "{SOFTHSM}"\ntoken_label = "ciel"\npin_env = "CIEL_TEST_HSM_PIN"\n')
    src.start()
    rg = f"exp-hsm-{uuid.uuid4().hex[:6]}"
    src.create_group(rg)
    v = Vaults(src, rg, sku={"family": "A", "name": "premium"})
    v.secrets.set_secret("in-hsm-vault", "secret under an HSM-wrapped vault key")
    k = v.keys.create_rsa_key("hsm-k", size=2048, hardware_protected=True)
    key_pem, pub_pem = _recipient(tmp_path)
    out = tmp_path / "hsm-export"
    p = subprocess.run([ciel_bin(), "export", "--data-dir", str(src.data_dir), "--tenant", src.tenant, "--out", str(out),
                        "--recipient", str(pub_pem)], capture_output=True, text=True, timeout=300,
                       stdin=subprocess.DEVNULL, env={**os.environ, **env})
    assert p.returncode == 0, p.stderr
    kvdir = out / "keyvault" / v.name
    keys = [json.loads(x) for x in (kvdir / "keys.jsonl").read_text().splitlines()]
    assert len(keys) == 1 and keys[0]["exportable"] is False and "private" not in keys[0], keys
    assert keys[0]["key"]["kty"] == "RSA-HSM" and _b64u(keys[0]["key"]["n"]) == k.key.n
    secrets = [json.loads(x) for x in (kvdir / "secrets.jsonl").read_text().splitlines()]
    assert open_jwe(secrets[0]["value"], key_pem.read_bytes()) == b"secret under an HSM-wrapped vault key"
    assert json.loads((out / "manifest.json").read_text())["summary"]["keyVersionsNotExportable"] == 1
    # Imported into a software deployment: the secret comes, the HSM key is reported, not imported.
    dst = server_factory("export-kv-hsm-dst")
    dst.stop()
    r = _run("import", "--data-dir", dst.data_dir, "--from", out, "--tenant", dst.tenant,
             "--subscription", f"{src.sub}={dst.sub}", "--identity", key_pem)
    assert f"key {v.name}/hsm-k version" in r.stdout and "not exportable, so not imported" in r.stdout, r.stdout
    dst.start()
    w = Vaults(dst, rg, name=v.name, create=False)
    assert w.secrets.get_secret("in-hsm-vault").value == "secret under an HSM-wrapped vault key"
    assert [p.name for p in w.keys.list_properties_of_keys()] == []


# --------------------------------------------------------------------------------------------
# The tenant administrator's export API (POST /providers/Ciel.Export/exports)
# --------------------------------------------------------------------------------------------

EXPORTS = "/providers/Ciel.Export/exports"


def test_export_api_pushes_into_the_tenants_container(server_factory, tmp_path):
    from test_sovereignty import DOC, _check
    from azure.storage.blob import generate_container_sas
    doc = json.loads(DOC.read_text())
    schemas = doc["components"]["schemas"]
    post = doc["paths"][EXPORTS]["post"]
    version = post["parameters"][0]["schema"]["const"]
    src = server_factory("export-api")
    c = Clients(src)
    tag = uuid.uuid4().hex[:6]
    rg, a = f"exp-api-{tag}", f"expapi{tag}"
    c.rm.resource_groups.create_or_update(rg, {"location": "francecentral"})
    _account(c, rg, a)
    svc = c.blob(a, rg)
    svc.create_container("data").upload_blob("hello.txt", b"hello from the API export")
    svc.create_container("exports")
    v = Vaults(src, rg)
    v.secrets.set_secret("api-secret", "only for the recipient")
    key_pem, pub_pem = _recipient(tmp_path)
    key = c.st.storage_accounts.list_keys(rg, a)["keys"][0]["value"]
    sas = generate_container_sas(a, "exports", account_key=key, permission=ContainerSasPermissions(
        read=True, write=True, create=True, list=True), expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    dest = f"https://{a}.blob.core.{DOMAIN}:{src.port}/exports?{sas}"
    body = {"properties": {"destination": {"containerSasUri": dest}, "recipient": pub_pem.read_text(), "prefix": "leaving/2026"}}

    def call(method, path, token="admin", json_body=None, api=version):
        return src.arm_call(method, path, token=token, params={"api-version": api}, json_body=json_body)

    # Refusals first: nothing started, each with Azure's error envelope.
    r = requests.post(f"{src.arm}{EXPORTS.lstrip('/')}", params={"api-version": version}, json=body, verify=src.ca, timeout=30)
    assert r.status_code == 401, describe(r)
    _check(r.json(), post["responses"]["401"]["content"]["application/json"]["schema"], schemas)
    stranger = src.create_sp(f"export-stranger-{tag}")
    tok = src.client_token(stranger["appId"], stranger["password"], src.tenant, src.arm_scope)
    r = call("POST", EXPORTS, token=tok, json_body=body)
    assert r.status_code == 403 and r.json()["error"]["code"] == "AuthorizationFailed", describe(r)
    db = sqlite3.connect(f"file:{src.data_dir}/ciel.db?mode=ro", uri=True, timeout=10)
    denied = db.execute("SELECT actor FROM audit_log WHERE action = 'Ciel.Export/exports/write' AND outcome = 'denied'").fetchall()
    db.close()
    assert any(stranger["appId"] in a[0] or stranger["objectId"] in a[0] for a in denied), denied
    for bad in ({}, {"properties": {"destination": {}}},
                {"properties": {"destination": {"containerSasUri": f"https://{a}.blob.core.{DOMAIN}/exports"}}},
                {"properties": {"destination": {"containerSasUri": dest}, "recipient": "not a key"}},
                {"properties": {"destination": {"containerSasUri": dest}}},  # the vault holds a secret
                # No outbound connection: only this deployment's own accounts are destinations.
                {"properties": {"destination": {"containerSasUri": f"https://{a}.blob.core.windows.net/exports?{sas}"},
                                "recipient": pub_pem.read_text()}},
                {"properties": {"destination": {"containerSasUri": f"http://127.0.0.1:10000/devstoreaccount1/exports?{sas}"},
                                "recipient": pub_pem.read_text()}}):
        r = call("POST", EXPORTS, json_body=bad)
        assert r.status_code == 400, (bad, describe(r))
        _check(r.json(), post["responses"]["400"]["content"]["application/json"]["schema"], schemas)
    r = call("POST", EXPORTS, json_body=body, api="2020-01-01")
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidApiVersionParameter", describe(r)
    assert list(svc.get_container_client("exports").list_blobs()) == []

    # Started: 202 with the polling headers, then polled to Succeeded.
    r = call("POST", EXPORTS, json_body=body)
    assert r.status_code == 202, describe(r)
    _check(r.json(), post["responses"]["202"]["content"]["application/json"]["schema"], schemas, "202")
    loc = r.headers["Location"]
    assert r.headers["Azure-AsyncOperation"] == loc and r.headers["Retry-After"] == "1"
    get = doc["paths"][EXPORTS + "/{exportId}"]["get"]
    status = {}

    def finished():
        nonlocal status
        g = src.request("GET", loc, token=src.admin_token())
        assert g.status_code == 200, describe(g)
        status = g.json()
        _check(status, get["responses"]["200"]["content"]["application/json"]["schema"], schemas, "status")
        return status["status"] != "InProgress"
    wait_until(finished, 120, interval=0.5, what="the export operation")
    assert status["status"] == "Succeeded", status
    # It landed in the chosen container, verifies, and its secret opens with the recipient's key only.
    got = tmp_path / "from-container"
    cc = svc.get_container_client("exports")
    names = [b.name for b in cc.list_blobs(name_starts_with="leaving/2026/")]
    assert "leaving/2026/manifest.json" in names and status["properties"]["files"] == len(names)
    for n in names:
        f = got / n[len("leaving/2026/"):]
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(cc.download_blob(n).readall())
    ok = _run("export", "verify", got, "--manifest-sha256", status["properties"]["manifestSha256"])
    assert "export ok" in ok.stdout
    assert (got / f"blobs/{a}/data/data/hello.txt").read_bytes() == b"hello from the API export"
    line = json.loads((got / "keyvault" / v.name / "secrets.jsonl").read_text().splitlines()[0])
    assert open_jwe(line["value"], key_pem.read_bytes()) == b"only for the recipient"
    # The working directory is gone from the server; another tenant's caller does not see the export.
    assert not any((src.data_dir / "exports").iterdir())
    r = call("GET", f"{EXPORTS}/{uuid.uuid4()}")
    assert r.status_code == 404, describe(r)


def test_export_reads_an_account_under_a_customer_managed_key_while_the_key_allows(server_factory, tmp_path):
    from azure.mgmt.storage.models import Encryption, KeyVaultProperties, StorageAccountUpdateParameters
    crypto_service_user = "e147488a-f6f5-4113-8e2d-b22465e65bf6"
    src = server_factory("export-cmk")
    c = Clients(src)
    tag = uuid.uuid4().hex[:6]
    rg, a = f"exp-cmk-{tag}", f"expcmk{tag}"
    c.rm.resource_groups.create_or_update(rg, {"location": "francecentral"})
    v = Vaults(src, rg)
    key = v.keys.create_rsa_key("cmk", size=2048)
    acct = c.st.storage_accounts.begin_create(rg, a, {"location": "francecentral", "sku": {"name": "Standard_LRS"},
                                                      "kind": "StorageV2", "identity": {"type": "SystemAssigned"}}).result()
    src.assign_role(v.id, f"/subscriptions/{src.sub}/providers/Microsoft.Authorization/roleDefinitions/{crypto_service_user}",
                    acct.identity.principal_id)
    c.st.storage_accounts.update(rg, a, StorageAccountUpdateParameters(encryption=Encryption(
        key_source="Microsoft.Keyvault", key_vault_properties=KeyVaultProperties(key_name="cmk", key_vault_uri=v.uri))))
    c.blob(a, rg).create_container("sealed").upload_blob("doc.txt", b"under the customer's key")
    key_pem, pub_pem = _recipient(tmp_path)
    out = tmp_path / "cmk-export"
    _run("export", "--data-dir", src.data_dir, "--tenant", src.tenant, "--out", out, "--recipient", pub_pem)
    assert (out / f"blobs/{a}/sealed/data/doc.txt").read_bytes() == b"under the customer's key"
    db = sqlite3.connect(f"file:{src.data_dir}/ciel.db?mode=ro", uri=True, timeout=10)
    rows = db.execute("SELECT actor, details FROM audit_log WHERE action = 'Microsoft.KeyVault/vaults/keys/unwrap/action'"
                      " AND actor = 'operator:export'").fetchall()
    db.close()
    assert rows and a in rows[0][1], rows
    # The customer disables its key: the offline export does not get around it.
    v.keys.update_key_properties("cmk", version=key.properties.version, enabled=False)
    p = _run("export", "--data-dir", src.data_dir, "--tenant", src.tenant, "--out", tmp_path / "refused",
             "--recipient", pub_pem, check=False)
    assert p.returncode != 0 and "refuses unwrapKey" in p.stderr and a in p.stderr, p.stderr
