"""A tenant's audit export (SecNumCloud 12.6.d): `ciel audit export` writes the tenant's own
entries with the hashes of everyone else's and the signed checkpoints; `ciel audit
verify-export` checks it with nothing but the platform's audit public key."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

from cieltest import ciel_bin


def _run(*args, check=True):
    return subprocess.run([ciel_bin(), *args], capture_output=True, text=True, timeout=120, check=check)


def test_export_proves_the_tenants_entries_and_hides_the_others(ciel, tenant_b, tmp_path):
    rg = f"export-{uuid.uuid4().hex[:8]}"
    ciel.create_group(rg)
    # Another tenant acts too: its token request is on the same chain.
    ciel.client_token(tenant_b["sp"]["appId"], tenant_b["sp"]["password"], tenant=tenant_b["tenantId"])
    time.sleep(11)  # one checkpoint period (audit_checkpoint_secs = 10), so the entries are signed
    out = tmp_path / "export.jsonl"
    r = _run("audit", "export", "--data-dir", str(ciel.data_dir), "--tenant", ciel.tenant)
    out.write_text(r.stdout)
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert lines[0]["type"] == "header" and lines[0]["tenant"] == ciel.tenant
    mine = [l for l in lines if l["type"] == "entry"]
    assert any(l["target"].lower().endswith(f"/resourcegroups/{rg}") for l in mine), mine[-3:]
    assert all(l["tenant_id"] == ciel.tenant for l in mine)
    assert any(l["type"] == "link" for l in lines) and any(l["type"] == "checkpoint" for l in lines)
    assert tenant_b["tenantId"] not in r.stdout, "another tenant's entries leaked into the export"

    pub = ciel.data_dir / "keys" / "audit-signing.pub"
    v = _run("audit", "verify-export", str(out), "--public-key", str(pub))
    summary = json.loads(v.stdout)
    assert summary["entries"] == len(mine) and summary["signed_through"] > 0, summary

    # Any edit is caught: a changed entry, a dropped line.
    edited = tmp_path / "edited.jsonl"
    edited.write_text(r.stdout.replace(rg, rg + "x", 1))
    bad = _run("audit", "verify-export", str(edited), "--public-key", str(pub), check=False)
    assert bad.returncode == 1 and "altered" in bad.stderr, bad.stderr
    dropped = tmp_path / "dropped.jsonl"
    dropped.write_text("\n".join(r.stdout.splitlines()[:2] + r.stdout.splitlines()[3:]) + "\n")
    bad = _run("audit", "verify-export", str(dropped), "--public-key", str(pub), check=False)
    assert bad.returncode == 1, bad.stdout


def test_tenants_export_their_own_audit_through_the_api(ciel, tmp_path):
    import requests

    url = f"{ciel.arm}providers/Ciel.Audit/export"
    r = ciel.arm_call("GET", "/providers/Ciel.Audit/export", params={"api-version": "2026-11-01"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson", r.text[:500]
    out = tmp_path / "api.jsonl"
    out.write_text(r.text)
    first = json.loads(r.text.splitlines()[0])
    assert first["type"] == "header" and first["tenant"] == ciel.tenant
    v = _run("audit", "verify-export", str(out), "--public-key", str(ciel.data_dir / "keys" / "audit-signing.pub"))
    assert json.loads(v.stdout)["entries"] > 0
    # The export itself is audited, and a later export shows it.
    again = ciel.arm_call("GET", "/providers/Ciel.Audit/export", params={"api-version": "2026-11-01"}).text
    assert "Ciel.Audit/export/action" in again
    # Without a token, without a role, or with a bad parameter: refused.
    assert requests.get(url, params={"api-version": "2026-11-01"}, verify=ciel.ca, timeout=30).status_code == 401
    sp = ciel.create_sp(f"noexport-{uuid.uuid4().hex[:6]}")
    tok = ciel.client_token(sp["appId"], sp["password"])
    r = ciel.request("GET", f"{url}?api-version=2026-11-01", token=tok)
    assert r.status_code == 403, r.text
    r = ciel.arm_call("GET", "/providers/Ciel.Audit/export", params={"api-version": "2026-11-01", "from": "0"})
    assert r.status_code == 400, r.text
    r = ciel.arm_call("POST", "/providers/Ciel.Audit/export", params={"api-version": "2026-11-01"}, json_body={})
    assert r.status_code == 405, r.text
