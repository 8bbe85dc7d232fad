"""SecNumCloud evidence (`ciel compliance`, GET /providers/Ciel.Compliance/report): the report of a
fresh deployment; breaking things on purpose turns exactly the right requirements red and repairing
them turns them back; attestations count until they expire; the API is the operator's only; the
HTML report prints to PDF in headless Chromium."""

from __future__ import annotations

import datetime
import json
import shutil
import socket
import sqlite3
import ssl
import subprocess
import threading
import time
import uuid
import warnings
from pathlib import Path

import pytest

from cieltest import ciel_bin, describe, expect_arm_error, missing_prerequisite

API = "2026-11-01"
STORAGE_API = "2025-08-01"

# What no configuration can fix today, on every host: client-secret sign-ins have no lockout
# (9.5.b). Clock synchronisation (12.8.a) depends on the host.
ALWAYS_RED = {"9.5.b"}


def report(s, *urls: str, out: Path | None = None) -> dict:
    args = [ciel_bin(), "compliance", "report", "--data-dir", str(s.data_dir), "--format", "json"]
    for u in urls:
        args += ["--url", u]
    if out is not None:
        args += ["--out", str(out)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"ciel compliance report exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return json.loads(out.read_text() if out is not None else p.stdout)


def by_id(r: dict) -> dict[str, dict]:
    return {x["id"]: x for x in r["requirements"]}


def red(r: dict) -> set[str]:
    return {x["id"] for x in r["requirements"] if x["status"] == "fail"}


def check(r: dict, cid: str) -> dict:
    return next(c for c in r["checks"] if c["id"] == cid)


def expected_base(r: dict) -> set[str]:
    host = {"12.8.a"} if check(r, "clock.sync")["status"] == "fail" else set()
    return ALWAYS_RED | host


def db(s) -> sqlite3.Connection:
    return sqlite3.connect(str(s.data_dir / "ciel.db"), timeout=30)


def create_account(s) -> str:
    rg = f"cmp-{uuid.uuid4().hex[:8]}"
    s.create_group(rg)
    name = f"cmp{uuid.uuid4().hex[:12]}"
    path = f"/subscriptions/{s.sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}"
    r = s.arm_call("PUT", path, params={"api-version": STORAGE_API},
                   json_body={"location": "francecentral", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}})
    assert r.status_code in (200, 201, 202), describe(r)
    return path


class WeakTlsFrontEnd:
    """A TLS front end as a misconfigured proxy in front of Ciel would be: Ciel's own certificate,
    but TLS 1.0 and CBC suites allowed. It only completes handshakes (the scan needs no more)."""

    def __init__(self, cert: Path, key: Path):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            with warnings.catch_warnings():
                # Deprecated on purpose: this front end is the weak configuration under test.
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        except (ValueError, ssl.SSLError) as e:
            missing_prerequisite(f"this Python's OpenSSL cannot serve TLS 1.0 for the weak front end: {e}")
        ctx.load_cert_chain(str(cert), str(key))
        self.ctx = ctx
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        try:
            c.settimeout(5)
            t = self.ctx.wrap_socket(c, server_side=True)
            t.close()
        except (OSError, ssl.SSLError):
            c.close()

    def close(self):
        self.stop = True
        self.sock.close()


def test_default_report_and_who_may_read_it(server_factory, tmp_path):
    s = server_factory("compliance")
    r = report(s, out=tmp_path / "r.json")
    assert r["format"] == "ciel-compliance-report/1" and r["framework"] == "SecNumCloud 3.2"
    assert r["totals"]["total"] == 278 and len(r["requirements"]) == 278
    assert sum(c["counts"]["total"] for c in r["chapters"]) == 278
    assert [c["number"] for c in r["chapters"]] == list(range(5, 20))
    assert red(r) == expected_base(r), {i: by_id(r)[i]["reason"] for i in red(r)}
    req = by_id(r)
    # Proven by the platform.
    for rid in ("10.1.a", "10.2.c", "10.3.a", "10.6.a", "12.6.c", "19.2.b"):
        assert req[rid]["status"] == "pass", req[rid]
    # Capabilities Ciel does not have yet are never a pass.
    for rid in ("12.5.c", "19.1.h"):
        assert req[rid]["status"] == "not-yet-checkable", req[rid]
    # Operator access (lockbox): the platform's evidence is there, the attestation is not.
    for rid in ("9.7.d", "12.13.a"):
        assert req[rid]["status"] == "missing", req[rid]
    # A fresh deployment's only administrator is the bootstrap service principal (a workload
    # identity): no person administers without a second factor.
    assert req["9.6.f"]["status"] == "pass", req["9.6.f"]
    # Organisational requirements need attestations; assisted ones too, on top of the evidence.
    assert req["5.2.a"]["status"] == "missing" and req["10.5.c"]["status"] == "missing"
    assert all(x["verified"] is False for x in r["requirements"])
    for c in r["checks"]:
        assert c["startedAt"] <= c["finishedAt"], c
    tls = check(r, "tls.protocols")
    assert tls["evidence"]["offered"][0]["offered"] == ["TLSv1.3", "TLSv1.2"], tls
    legacy = {p["what"]: p for p in tls["evidence"]["scans"][0]["legacy"]}
    assert legacy["TLSv1.0"]["accepted"] is False and legacy["TLSv1.1"]["accepted"] is False, legacy
    inv = check(r, "inventory.software")["evidence"]
    assert inv["compiler"].startswith("rustc") and any(p["name"] == "rustls" for p in inv["packages"])

    # The API: the bootstrap tenant's Owner only.
    path = "/providers/Ciel.Compliance/report"
    ok = s.arm_call("GET", path, params={"api-version": API}, timeout=120)
    assert ok.status_code == 200, describe(ok)
    api = ok.json()
    assert api["totals"]["total"] == 278 and red(api) == expected_base(api)
    html = s.arm_call("GET", path, params={"api-version": API, "format": "html"}, timeout=120)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html"), describe(html)
    assert "SecNumCloud 3.2" in html.text and "Synthèse par chapitre" in html.text
    expect_arm_error(s.arm_call("GET", path, params={"api-version": "2020-01-01"}), 400, "InvalidApiVersionParameter")
    expect_arm_error(s.arm_call("GET", path, token=None, params={"api-version": API}), 401)
    no_role = s.create_sp("cmp-reader")
    tok = s.client_token(no_role["appId"], no_role["password"])
    expect_arm_error(s.arm_call("GET", path, token=tok, params={"api-version": API}), 403, "AuthorizationFailed")
    other = s.cli("tenant", "create", "--name", f"Other {uuid.uuid4().hex[:6]}")
    osp = s.create_sp("cmp-other", tenant=other["tenantId"])
    otok = s.client_token(osp["appId"], osp["password"], tenant=other["tenantId"])
    expect_arm_error(s.arm_call("GET", path, token=otok, params={"api-version": API}), 403, "AuthorizationFailed")
    with db(s) as c:
        outcomes = [o for (o,) in c.execute(
            "SELECT outcome FROM audit_log WHERE action = 'Ciel.Compliance/report/action' ORDER BY seq")]
    assert outcomes == ["success", "success", "denied", "denied"], outcomes


def test_breaking_turns_exactly_the_right_requirements_red(server_factory, tmp_path):
    s = server_factory("compliance-break")
    account = create_account(s)
    base = report(s)
    assert red(base) == expected_base(base), {i: by_id(base)[i]["reason"] for i in red(base)}
    assert "1 storage account" in check(base, "storage.encryption_at_rest")["summary"]

    def delta(r: dict) -> set[str]:
        return red(r) - red(base)

    # 1. A tampered audit entry.
    with db(s) as c:
        seq, actor = c.execute("SELECT seq, actor FROM audit_log ORDER BY seq LIMIT 1 OFFSET 3").fetchone()
        c.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = ?", (seq,))
    r = report(s)
    assert delta(r) == {"12.6.b", "12.6.c", "12.7.a"}, {i: by_id(r)[i]["reason"] for i in red(r)}
    assert red(r) >= red(base)
    assert check(r, "audit.chain")["evidence"]["entry"] == seq
    with db(s) as c:
        c.execute("UPDATE audit_log SET actor = ? WHERE seq = ?", (actor, seq))
    assert red(report(s)) == red(base)

    # 2. A storage account whose record says its blobs are not encrypted. The API refuses to
    # switch encryption off (Azure does not allow it either), so the store is edited directly.
    with db(s) as c:
        (body,) = c.execute("SELECT body FROM resources WHERE lower(id) = lower(?)", (account,)).fetchone()
        broken = json.loads(body)
        broken["properties"]["encryption"]["services"]["blob"]["enabled"] = False
        c.execute("UPDATE resources SET body = ? WHERE lower(id) = lower(?)", (json.dumps(broken), account))
    r = report(s)
    assert delta(r) == {"10.1.a"}, {i: by_id(r)[i]["reason"] for i in red(r)}
    with db(s) as c:
        c.execute("UPDATE resources SET body = ? WHERE lower(id) = lower(?)", (body, account))
    # ... and one whose sealed key material is gone.
    with db(s) as c:
        (sealed,) = c.execute("SELECT sealed FROM resources WHERE lower(id) = lower(?)", (account,)).fetchone()
        c.execute("UPDATE resources SET sealed = NULL WHERE lower(id) = lower(?)", (account,))
    r = report(s)
    assert delta(r) == {"10.1.a"}
    with db(s) as c:
        c.execute("UPDATE resources SET sealed = ? WHERE lower(id) = lower(?)", (sealed, account))
    assert red(report(s)) == red(base)

    # 3. A resource outside France (no API accepts one: injected into the store).
    with db(s) as c:
        c.execute("UPDATE resources SET location = 'eastus' WHERE lower(id) = lower(?)", (account,))
    r = report(s)
    assert delta(r) == {"19.2.b", "19.2.d"}, {i: by_id(r)[i]["reason"] for i in red(r)}
    with db(s) as c:
        c.execute("UPDATE resources SET location = 'francecentral' WHERE lower(id) = lower(?)", (account,))
    assert red(report(s)) == red(base)

    # 4. A weak TLS front end (TLS 1.0 and CBC suites) with Ciel's own certificate.
    tls_dir = s.data_dir / "tls"
    front = WeakTlsFrontEnd(tls_dir / "server.pem", tls_dir / "server.key")
    try:
        r = report(s, f"https://127.0.0.1:{front.port}")
    finally:
        front.close()
    assert delta(r) == {"9.6.e", "10.2.a", "10.2.c"}, {i: by_id(r)[i]["reason"] for i in red(r)}
    assert "accepts TLSv1.0" in check(r, "tls.protocols")["summary"]
    assert "without AEAD" in check(r, "tls.cipher_suites")["summary"]
    assert check(r, "tls.certificates")["status"] == "pass"
    assert red(report(s, f"https://127.0.0.1:{s.port}")) == red(base)

    # 5. Tenant isolation results: produced here by real cross-tenant probes.
    other = s.cli("tenant", "create", "--name", f"Iso {uuid.uuid4().hex[:6]}")
    osp = s.create_sp("iso", tenant=other["tenantId"])
    otok = s.client_token(osp["appId"], osp["password"], tenant=other["tenantId"])
    rg = account.split("/resourceGroups/")[1].split("/")[0]
    probes = {
        "subscription": f"/subscriptions/{s.sub}",
        "resource group": f"/subscriptions/{s.sub}/resourcegroups/{rg}",
        "storage account": account,
        "storage account keys": account + "/listKeys",
    }
    tests = []
    for what, p in probes.items():
        method = "POST" if p.endswith("/listKeys") else "GET"
        api = STORAGE_API if "storageAccounts" in p else "2021-04-01"
        resp = s.arm_call(method, p, token=otok, params={"api-version": api})
        tests.append({"name": f"another tenant reads the {what}", "status": resp.status_code,
                      "passed": resp.status_code in (403, 404)})
    results = s.data_dir / "compliance" / "tenant-isolation.json"
    results.parent.mkdir(parents=True, exist_ok=True)

    def write_results(items):
        results.write_text(json.dumps({
            "generatedAt": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "suite": "tests/clients/test_compliance.py", "tests": items,
            "passed": sum(t["passed"] for t in items), "failed": sum(not t["passed"] for t in items)}))

    write_results(tests)
    r = report(s)
    assert check(r, "isolation.tenant_tests")["status"] == "pass", check(r, "isolation.tenant_tests")
    assert by_id(r)["9.7.a"]["status"] == "missing"  # evidence there; the operator's attestation is not
    write_results(tests + [{"name": "a simulated leak", "passed": False}])
    r = report(s)
    assert delta(r) == {"9.7.a"}
    results.unlink()

    # 6. Administrators without a second factor (9.6.f). An operator whose factor is not confirmed
    # (also the operator-access check, 9.7.d and 12.13.a); disabling it repairs all three.
    op = s.cli("operator", "create", f"cmp-op-{uuid.uuid4().hex[:6]}")
    r = report(s)
    assert delta(r) == {"9.6.f", "9.7.d", "12.13.a"}, {i: by_id(r)[i]["reason"] for i in delta(r)}
    assert op["name"] in check(r, "identity.admin_mfa")["summary"], check(r, "identity.admin_mfa")
    s.cli("operator", "disable", op["name"])
    assert red(report(s)) == red(base)
    # A user holding Owner without a factor; enrolling and confirming one repairs it.
    import pyotp
    u = s.create_user()
    s.assign_role(f"/subscriptions/{s.sub}", f"/subscriptions/{s.sub}/providers/Microsoft.Authorization/roleDefinitions/"
                  "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", u["objectId"], principal_type="User")
    r = report(s)
    assert delta(r) == {"9.6.f"}, {i: by_id(r)[i]["reason"] for i in delta(r)}
    assert u["objectId"] in check(r, "identity.admin_mfa")["summary"]
    e = s.cli("user", "mfa", "enroll", "--upn", u["userPrincipalName"])
    assert delta(report(s)) == {"9.6.f"}, "an unconfirmed factor is not a second factor yet"
    s.cli("user", "mfa", "confirm", "--upn", u["userPrincipalName"], "--code", pyotp.TOTP(e["secret"]).now())
    assert red(report(s)) == red(base)

    # 7. The export drill (19.1.h/i): the export recorded in the audit log is its evidence.
    assert check(base, "drill.export")["status"] == "not-yet-checkable", check(base, "drill.export")
    p = s.cli_raw("export", "--tenant", s.tenant, "--out", str(tmp_path / "drill"))
    assert p.returncode == 0, p.stdout + p.stderr
    r = report(s)
    drill = check(r, "drill.export")
    assert drill["status"] == "pass" and drill["evidence"]["lastExport"]["tenant"] == s.tenant, drill
    assert red(r) == red(base)


def test_attestations_count_until_they_expire(server_factory, tmp_path):
    s = server_factory("compliance-attest")
    evidence = tmp_path / "politique-securite.pdf"
    evidence.write_bytes(b"%PDF-1.4 politique de securite v3\n")
    a_json = tmp_path / "a.json"
    before = report(s, out=a_json)
    assert by_id(before)["5.2.a"]["status"] == "missing"
    expires = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    att = s.cli("compliance", "attest", "5.2.a", "--evidence", str(evidence), "--by", "Alice Martin",
                "--expires", expires)
    assert att["requirement"] == "5.2.a" and att["attested_by"] == "Alice Martin", att
    copy = s.data_dir / att["evidence_copy"]
    assert copy.read_bytes() == evidence.read_bytes()
    b_json = tmp_path / "b.json"
    r = report(s, out=b_json)
    assert by_id(r)["5.2.a"]["status"] == "attested", by_id(r)["5.2.a"]
    assert by_id(r)["5.2.a"]["attestation"]["copyIntact"] is True
    diff = subprocess.run([ciel_bin(), "compliance", "diff", str(a_json), str(b_json)], capture_output=True, text=True,
                          timeout=60)
    assert diff.returncode == 0, diff.stderr
    changed = json.loads(diff.stdout)["changed"]
    assert [(c["id"], c["from"], c["to"]) for c in changed] == [("5.2.a", "missing", "attested")], changed

    # Expiry: the same attestation, later, counts as missing.
    time.sleep(max(0.0, datetime.datetime.strptime(expires, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp() - time.time()) + 1)
    r = report(s)
    assert by_id(r)["5.2.a"]["status"] == "missing" and "expired" in by_id(r)["5.2.a"]["reason"], by_id(r)["5.2.a"]
    s.cli("compliance", "attest", "5.2.a", "--evidence", str(evidence), "--by", "Alice Martin", "--expires", "2099-12-31")
    assert by_id(report(s))["5.2.a"]["status"] == "attested"

    # A drill that the platform cannot run yet is attested: the report shows its date.
    s.cli("compliance", "attest", "12.5.c", "--evidence", str(evidence), "--by", "Bruno Petit", "--expires", "2099-12-31",
          "--note", "restore test of 2026-11-20")
    r = report(s)
    assert by_id(r)["12.5.c"]["status"] == "attested"
    assert check(r, "drill.restore_test")["evidence"]["lastAttested"]
    # Refusals: unknown requirement, past expiry.
    p = s.cli_raw("compliance", "attest", "99.9.z", "--evidence", str(evidence), "--by", "X", "--expires", "2099-01-01")
    assert p.returncode != 0 and "not a SecNumCloud" in p.stderr
    p = s.cli_raw("compliance", "attest", "5.2.b", "--evidence", str(evidence), "--by", "X", "--expires", "2001-01-01")
    assert p.returncode != 0 and "past" in p.stderr
    with db(s) as c:
        n = c.execute("SELECT count(*) FROM audit_log WHERE action = 'Ciel.Compliance/attestations/write'").fetchone()[0]
    assert n == 3
    listed = s.cli("compliance", "attestations")
    assert [a["requirement"] for a in listed] == ["5.2.a", "5.2.a", "12.5.c"]


def test_tls_min_version_13_is_what_the_listener_offers(server_factory, tmp_path):
    s = server_factory("compliance-tls13", start=False)
    # In ciel.toml, so that the server and the operator's CLI read the same configuration.
    s.data_dir.mkdir(parents=True, exist_ok=True)
    (s.data_dir / "ciel.toml").write_text('[tls]\nmin_version = "1.3"\n')
    s.start()
    r = report(s)
    tls = check(r, "tls.protocols")
    assert tls["status"] == "pass", tls["summary"]
    assert tls["evidence"]["configuredMinimum"] == "1.3"
    assert tls["evidence"]["offered"][0]["offered"] == ["TLSv1.3"], tls["evidence"]["offered"]
    suites = check(r, "tls.cipher_suites")["evidence"]["accepted"][0]["accepted"]
    assert suites and all("TLSv1.3" in x for x in suites), suites
    assert by_id(r)["10.2.c"]["status"] == "pass"
    # The server's own report scans itself with its own configuration.
    api = s.arm_call("GET", "/providers/Ciel.Compliance/report", params={"api-version": API}, timeout=120)
    assert api.status_code == 200, describe(api)
    assert check(api.json(), "tls.protocols")["evidence"]["offered"][0]["offered"] == ["TLSv1.3"]
    # Older versions cannot be configured at all.
    p = subprocess.run([ciel_bin(), "sovereignty", "--data-dir", str(tmp_path / "none")], capture_output=True,
                       text=True, timeout=30, env={"CIEL_TLS_MIN_VERSION": "1.0", "PATH": "/usr/bin:/bin"})
    assert p.returncode != 0 and "min_version" in p.stderr, p.stderr


def test_html_report_prints_to_pdf_in_chromium(server_factory, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        missing_prerequisite("chromium is not installed (Debian package chromium)")
    s = server_factory("compliance-pdf")
    html = tmp_path / "report.html"
    p = subprocess.run([ciel_bin(), "compliance", "report", "--data-dir", str(s.data_dir), "--format", "html",
                        "--out", str(html)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    text = html.read_text()
    for needle in ("Rapport de conformité SecNumCloud 3.2", "SecNumCloud 3.2 compliance report", "Summary by chapter",
                   "Preuves des contrôles", "@page", "19.6.f", "inventory.software"):
        assert needle in text, needle
    pdf = tmp_path / "report.pdf"
    p = subprocess.run([ciel_bin(), "compliance", "report", "--data-dir", str(s.data_dir), "--format", "pdf",
                        "--out", str(pdf)], capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 20_000, len(data)
