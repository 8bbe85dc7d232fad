"""Operator access only with the tenant's consent (Customer Lockbox; SecNumCloud 9.7.d, 12.13).

Operators live in their own directory (`ciel operator …`), sign in with a password and a mandatory
TOTP code, and hold no standing access: the Azure SDKs, given an operator token, are refused on
Blob and Key Vault until the tenant approves a request (with `az rest`, Azure's
Microsoft.CustomerLockbox/requests shape); then reads within the granted scope and access work,
until the grant expires by itself. The tenant sees every step in its activity log and audit export.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.keyvault.secrets import SecretClient
from azure.storage.blob import BlobServiceClient

from cieltest import DOMAIN, ciel_bin, claims_of, describe, expect_arm_error
from test_sovereignty import _check

LOCKBOX_API = "2018-02-28-preview"
OP_API = "2026-11-01"
DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "ciel.json"
KV_ADMIN = "00482a5a-887f-4fb3-b363-3b7fe8e74483"
STORAGE_API = "2025-08-01"
KV_API = "2026-02-01"


# --- operators --------------------------------------------------------------------------------

def totp(secret_b32: str, at: float) -> str:
    """RFC 6238 (SHA-1, 6 digits, 30 s), computed here independently of the server."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    o = mac[-1] & 0x0F
    return f"{(struct.unpack('>I', mac[o:o + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


def new_operator(ciel) -> dict:
    name = f"op-{uuid.uuid4().hex[:8]}"
    op = ciel.cli("operator", "create", name)
    assert op["name"] == name and op["password"] and op["totp"]["otpauth_uri"].startswith("otpauth://totp/"), op
    op["step"] = 0  # the next code must be of a later 30 s step than this one
    return op


def code(op: dict) -> str:
    """A code the server has not seen: the current step's, or the next one's (accepted within
    the ±1 step window) when the current one was used."""
    now = time.time()
    step = int(now) // 30
    if step <= op["step"]:
        step = op["step"] + 1
        assert step <= int(now) // 30 + 1, "no unused step inside the window"
    op["step"] = step
    return totp(op["totp"]["secret"], step * 30)


def op_login(ciel, op: dict, password: str | None = None, totp_code: str | None = None) -> requests.Response:
    data = {"grant_type": "password", "username": op["name"], "password": password or op["password"]}
    if totp_code is not False:
        data["totp_code"] = totp_code or code(op)
    return requests.post(f"{ciel.login}/operators/oauth2/v2.0/token", data=data, verify=ciel.ca, timeout=30)


def op_token(ciel, op: dict) -> str:
    r = op_login(ciel, op)
    assert r.status_code == 200, describe(r)
    return r.json()["access_token"]


def op_api(ciel, method: str, path: str, token: str | None, body=None, api: str = OP_API) -> requests.Response:
    return ciel.request(method, f"/providers/Ciel.Operator/{path}", token=token, json_body=body,
                        params={"api-version": api})


class OperatorCredential:
    """A token credential for the Azure SDKs that hands over the operator's token as is."""

    def __init__(self, token: str):
        self.token = token

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 1800)


def audit_rows(ciel, sql: str, *args) -> list[tuple]:
    db = sqlite3.connect(f"file:{ciel.data_dir}/ciel.db?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


# --- the tenant's data ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(ciel):
    """Tenant A's data: a group with a storage account (container + blob) and a vault (secret),
    and a second group with another account, outside any grant."""
    out = {}
    for key in ("in", "out"):
        rg = f"lb-{key}-{uuid.uuid4().hex[:6]}"
        ciel.create_group(rg)
        acct = f"lb{uuid.uuid4().hex[:12]}"
        r = ciel.arm_call("PUT", f"/subscriptions/{ciel.sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{acct}",
                          params={"api-version": STORAGE_API},
                          json_body={"location": "francecentral", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"})
        assert r.status_code == 200, describe(r)
        aid = r.json()["id"]
        k = ciel.arm_call("POST", f"{aid}/listKeys", params={"api-version": STORAGE_API}).json()["keys"][0]["value"]
        url = f"https://{acct}.blob.core.{DOMAIN}:{ciel.port}"
        svc = BlobServiceClient(url, credential=k, connection_verify=ciel.ca)
        svc.create_container("evidence").upload_blob("report.txt", f"confidential-{key}".encode())
        out[key] = {"rg": rg, "account": acct, "id": aid, "url": url,
                    "container_id": f"{aid}/blobServices/default/containers/evidence"}
    vault = f"lb{uuid.uuid4().hex[:12]}"
    rg = out["in"]["rg"]
    r = ciel.arm_call("PUT", f"/subscriptions/{ciel.sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{vault}",
                      params={"api-version": KV_API}, json_body={"location": "francecentral", "properties": {
                          "tenantId": ciel.tenant, "sku": {"family": "A", "name": "standard"}}})
    assert r.status_code in (200, 201), describe(r)
    vid = r.json()["id"]
    admin_oid = claims_of(ciel.admin_token())["oid"]
    ciel.assign_role(vid, f"/subscriptions/{ciel.sub}/providers/Microsoft.Authorization/roleDefinitions/{KV_ADMIN}", admin_oid)
    vault_url = f"https://{vault}.vault.{DOMAIN}:{ciel.port}"
    from azure.identity import ClientSecretCredential
    admin = ClientSecretCredential(ciel.tenant, ciel.client_id, ciel.secret, authority=ciel.login,
                                   disable_instance_discovery=True, connection_verify=ciel.ca)
    SecretClient(vault_url, admin, connection_verify=ciel.ca).set_secret("db-password", "s3cr3t-value")
    out["vault"] = {"id": vid, "url": vault_url}
    return out


def blob_read(ciel, d: dict, token: str) -> bytes:
    svc = BlobServiceClient(d["url"], credential=OperatorCredential(token), connection_verify=ciel.ca)
    return svc.get_blob_client("evidence", "report.txt").download_blob().readall()


def secret_read(ciel, data, token: str) -> str:
    return SecretClient(data["vault"]["url"], OperatorCredential(token), connection_verify=ciel.ca).get_secret("db-password").value


def file_request(ciel, token: str, scope: str, access: list[str], seconds: int = 3600) -> dict:
    r = op_api(ciel, "POST", "lockboxRequests", token, {
        "tenantId": ciel.tenant, "subscriptionId": ciel.sub, "scope": scope, "accessTypes": access,
        "justification": "Support case 4242: customer reports corrupted report.txt", "durationSeconds": seconds,
        "supportRequest": "CASE-4242"})
    assert r.status_code == 201, describe(r)
    return r.json()


def lockbox_url(ciel, rid: str | None = None, action: str | None = None) -> str:
    u = f"{ciel.arm}subscriptions/{ciel.sub}/providers/Microsoft.CustomerLockbox/requests"
    if rid:
        u += f"/{rid}"
    if action:
        u += f"/{action}"
    return u + f"?api-version={LOCKBOX_API}"


def az_decide(az, ciel, rid: str, status: str, reason: str = "ok") -> dict:
    return az("rest", "--method", "post", "--url", lockbox_url(ciel, rid, "updateApproval"),
              "--body", json.dumps({"status": status, "reason": reason}))


# --- tests ------------------------------------------------------------------------------------

def test_operator_sign_in_needs_the_code_refuses_replays_and_locks_out(ciel):
    op = new_operator(ciel)
    listed = {o["name"]: o for o in ciel.cli("operator", "list")}
    assert listed[op["name"]]["mfa"] == {"enrolled": True, "confirmed": False, "locked_until": None}
    # No code, a wrong code: refused.
    r = op_login(ciel, op, totp_code=False)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", describe(r)
    good = totp(op["totp"]["secret"], time.time())
    wrong = "000000" if good != "000000" else "111111"
    r = op_login(ciel, op, totp_code=wrong)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", describe(r)
    # The right code: a token of the operator issuer, not usable as a tenant token.
    c = code(op)
    r = op_login(ciel, op, totp_code=c)
    assert r.status_code == 200, describe(r)
    _check(r.json(), {"$ref": "#/components/schemas/OperatorToken"}, json.loads(DOC.read_text())["components"]["schemas"])
    claims = claims_of(r.json()["access_token"])
    assert claims["iss"] == f"{ciel.login}/operators/v2.0" and claims["idtyp"] == "operator", claims
    assert claims["aud"] == f"{ciel.login}/operators" and "tid" not in claims and claims["amr"] == ["pwd", "otp"], claims
    assert 3000 <= claims["exp"] - claims["iat"] <= 3600
    assert {o["name"]: o for o in ciel.cli("operator", "list")}[op["name"]]["mfa"]["confirmed"] is True
    # The same code again, within its window: a replay.
    r = op_login(ciel, op, totp_code=c)
    assert r.status_code == 400 and "already used" in r.json()["error_description"], describe(r)
    # Five wrong passwords lock the account: then even the right password and code are refused.
    for _ in range(5):
        r = op_login(ciel, op, password="Wrong-password-1", totp_code="123456")
        assert r.status_code == 400, describe(r)
    r = op_login(ciel, op)
    assert r.status_code == 400 and "locked" in r.json()["error_description"], describe(r)
    # Every attempt is audited, outside any tenant.
    rows = audit_rows(ciel, "SELECT outcome, tenant_id FROM audit_log WHERE action = 'Ciel.Operator/token/issue' AND actor = ?",
                      f"operator:{op['name']}")
    assert [o for o, _ in rows].count("success") == 1 and [o for o, _ in rows].count("denied") >= 8, rows
    assert all(t is None for _, t in rows)
    replays = audit_rows(ciel, "SELECT details FROM audit_log WHERE action = 'identity/mfa/verify' AND target = ? AND outcome = 'denied'",
                         f"operator:{op['name']}")
    assert any("replayed" in d for (d,) in replays), replays
    # A disabled operator's token is dead at once.
    op2 = new_operator(ciel)
    tok = op_token(ciel, op2)
    assert op_api(ciel, "GET", "lockboxRequests", tok).status_code == 200
    ciel.cli("operator", "disable", op2["name"])
    assert op_api(ciel, "GET", "lockboxRequests", tok).status_code == 401


def test_ciel_operator_login_is_a_client_of_the_token_endpoint(ciel):
    op = new_operator(ciel)
    base = [ciel_bin(), "operator", "login", "--url", ciel.login, "--name", op["name"], "--ca", ciel.ca]
    p = subprocess.run(base + ["--code", "000000" if totp(op["totp"]["secret"], time.time()) != "000000" else "000001"],
                       input=op["password"] + "\n", capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "wrong" in p.stderr, p.stderr
    p = subprocess.run(base + ["--password", op["password"]], input=code(op) + "\n", capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    tok = p.stdout.strip()
    assert claims_of(tok)["idtyp"] == "operator"
    assert op_api(ciel, "GET", "lockboxRequests", tok).status_code == 200


def test_lockbox_end_to_end(ciel, az, data, tenant_b, role_ids):
    op = new_operator(ciel)
    tok = op_token(ciel, op)
    doc = json.loads(DOC.read_text())
    schemas = doc["components"]["schemas"]
    # 1. No standing access: the SDKs are refused on Blob and Key Vault, ARM refuses the token.
    with pytest.raises(HttpResponseError) as e:
        blob_read(ciel, data["in"], tok)
    assert e.value.status_code == 403
    with pytest.raises(HttpResponseError) as e:
        secret_read(ciel, data, tok)
    assert e.value.status_code == 403
    expect_arm_error(ciel.get_group(data["in"]["rg"], token=tok), 401)
    # 2. The operator files a request for the group: blob reads and secret reads, 25 s.
    req = file_request(ciel, tok, f"/subscriptions/{ciel.sub}/resourceGroups/{data['in']['rg']}",
                       ["blob.read", "secret.read"], seconds=25)
    _check(req, {"$ref": "#/components/schemas/LockboxRequest"}, schemas)
    rid = req["name"]
    assert req["properties"]["status"] == "Pending" and req["properties"]["tenantId"] == ciel.tenant
    # 3. The tenant sees it with az rest, in Azure's shape.
    listed = az("rest", "--method", "get", "--url", lockbox_url(ciel))["value"]
    mine = [x for x in listed if x["name"] == rid]
    assert mine and mine[0]["properties"]["status"] == "Pending", listed
    assert mine[0]["properties"]["requestor"] == f"operator:{op['name']}"
    assert mine[0]["type"] == "Microsoft.CustomerLockbox/requests"
    # Another tenant sees nothing of it; a Reader cannot decide; an operator cannot decide.
    btok = ciel.client_token(tenant_b["sp"]["appId"], tenant_b["sp"]["password"], tenant=tenant_b["tenantId"])
    r = ciel.request("GET", lockbox_url(ciel, rid), token=btok)
    expect_arm_error(r, (403, 404))
    r = ciel.request("GET", f"{ciel.arm}subscriptions/{tenant_b['subscriptionId']}/providers/Microsoft.CustomerLockbox/requests"
                            f"?api-version={LOCKBOX_API}", token=btok)
    assert r.status_code in (200, 403) and rid not in r.text, describe(r)
    reader = ciel.create_sp(f"lb-reader-{uuid.uuid4().hex[:6]}")
    ciel.assign_role(f"/subscriptions/{ciel.sub}", role_ids["Reader"], reader["objectId"])
    rtok = ciel.client_token(reader["appId"], reader["password"])
    assert rid in ciel.request("GET", lockbox_url(ciel), token=rtok).text
    expect_arm_error(ciel.request("POST", lockbox_url(ciel, rid, "updateApproval"), token=rtok,
                                  json_body={"status": "Approve"}), 403, "AuthorizationFailed")
    expect_arm_error(ciel.request("POST", lockbox_url(ciel, rid, "updateApproval"), token=tok,
                                  json_body={"status": "Approve"}), 401)
    assert op_api(ciel, "POST", f"lockboxRequests/{rid}", tok, {"status": "Approve"}).status_code == 405
    # A forged id, a bad decision: refused, nothing changes.
    expect_arm_error(ciel.arm_call("POST", lockbox_url(ciel, str(uuid.uuid4()), "updateApproval"),
                                   json_body={"status": "Approve"}), 404, "LockboxRequestNotFound")
    expect_arm_error(ciel.arm_call("POST", lockbox_url(ciel, rid, "updateApproval"), json_body={"status": "Maybe"}), 400)
    with pytest.raises(HttpResponseError):
        blob_read(ciel, data["in"], tok)
    # 4. The tenant's Owner approves with az rest; the access window starts now.
    out = az_decide(az, ciel, rid, "Approve", "case 4242 confirmed")
    assert out["status"] == "Approved", out
    got = az("rest", "--method", "get", "--url", lockbox_url(ciel, rid))["properties"]
    assert got["status"] == "Approved" and got["decision"]["reason"] == "case 4242 confirmed", got
    # 5. Reads within the scope work with the SDKs; nothing else does.
    assert blob_read(ciel, data["in"], tok) == b"confidential-in"
    names = [b.name for b in BlobServiceClient(data["in"]["url"], credential=OperatorCredential(tok), connection_verify=ciel.ca)
             .get_container_client("evidence").list_blobs()]
    assert names == ["report.txt"]
    assert secret_read(ciel, data, tok) == "s3cr3t-value"
    with pytest.raises(HttpResponseError) as e:
        blob_read(ciel, data["out"], tok)  # another group: outside the scope
    assert e.value.status_code == 403
    with pytest.raises(HttpResponseError) as e:
        BlobServiceClient(data["in"]["url"], credential=OperatorCredential(tok), connection_verify=ciel.ca) \
            .get_blob_client("evidence", "planted.txt").upload_blob(b"x")  # no write access exists
    assert e.value.status_code == 403
    with pytest.raises(HttpResponseError) as e:
        SecretClient(data["vault"]["url"], OperatorCredential(tok), connection_verify=ciel.ca).set_secret("x", "y")
    assert e.value.status_code == 403
    expect_arm_error(ciel.request("PUT", f"/subscriptions/{ciel.sub}/resourcegroups/lb-pwned", token=tok,
                                  params={"api-version": "2021-04-01"}, json_body={"location": "francecentral"}), 401)
    # 6. The grant expires by itself: denied again, status Expired.
    end = time.mktime(time.strptime(got["expirationDateTime"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    time.sleep(max(0.0, end - time.time()) + 1.5)
    with pytest.raises(HttpResponseError) as e:
        blob_read(ciel, data["in"], tok)
    assert e.value.status_code == 403
    with pytest.raises(HttpResponseError) as e:
        secret_read(ciel, data, tok)
    assert e.value.status_code == 403
    assert az("rest", "--method", "get", "--url", lockbox_url(ciel, rid))["properties"]["status"] == "Expired"
    assert op_api(ciel, "GET", f"lockboxRequests/{rid}", tok).json()["properties"]["status"] == "Expired"
    expect_arm_error(ciel.arm_call("POST", lockbox_url(ciel, rid, "updateApproval"), json_body={"status": "Revoke"}), 409)
    # 7. The tenant sees the whole trail: activity log (az) and audit export.
    events = az("monitor", "activity-log", "list", "--max-events", "1000", "--offset", "1h")
    trail = [e for e in events if rid in json.dumps(e)]
    ops = {(e["operationName"]["value"], e["status"]["value"]) for e in trail}
    assert ("Microsoft.CustomerLockbox/requests/write", "Succeeded") in ops, ops
    assert ("Microsoft.CustomerLockbox/requests/updateApproval/action", "Succeeded") in ops, ops
    assert ("Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read", "Succeeded") in ops, ops
    assert ("Microsoft.KeyVault/vaults/secrets/getSecret/action", "Succeeded") in ops, ops
    callers = {e["caller"] for e in trail}
    assert {f"operator:{op['name']}", ciel.client_id} <= callers, callers
    # The Reader's attempt to approve is on the trail too, as a failure.
    assert any(e["caller"] == reader["appId"] and e["status"]["value"] == "Failed" for e in trail), callers
    denied = [e for e in events if e["caller"] == f"operator:{op['name']}" and e["status"]["value"] == "Failed"]
    reasons = {e["properties"].get("reason") for e in denied}
    assert {"LockboxNoApprovedGrant", "LockboxGrantExpired", "LockboxNoSuchAccess"} <= reasons, reasons
    export = ciel.arm_call("GET", "/providers/Ciel.Audit/export", params={"api-version": "2026-11-01"}).text
    assert rid in export and "LockboxGrantExpired" in export and f"operator:{op['name']}" in export
    # Another tenant's export holds none of it.
    b_export = ciel.request("GET", f"{ciel.arm}providers/Ciel.Audit/export?api-version=2026-11-01",
                            token=btok)
    assert rid not in b_export.text


def test_deny_and_revoke(ciel, az, data):
    op = new_operator(ciel)
    tok = op_token(ciel, op)
    cont = data["in"]["container_id"]
    denied = file_request(ciel, tok, cont, ["blob.read"])["name"]
    assert az_decide(az, ciel, denied, "Deny", "not justified")["status"] == "Denied"
    with pytest.raises(HttpResponseError):
        blob_read(ciel, data["in"], tok)
    expect_arm_error(ciel.arm_call("POST", lockbox_url(ciel, denied, "updateApproval"), json_body={"status": "Approve"}), 409)
    assert op_api(ciel, "GET", f"lockboxRequests/{denied}", tok).json()["properties"]["status"] == "Denied"
    # Approved, used, then revoked by the tenant before its end.
    rid = file_request(ciel, tok, cont, ["blob.read"])["name"]
    az_decide(az, ciel, rid, "Approve")
    assert blob_read(ciel, data["in"], tok) == b"confidential-in"
    assert az_decide(az, ciel, rid, "Revoke", "done")["status"] == "Revoked"
    with pytest.raises(HttpResponseError) as e:
        blob_read(ciel, data["in"], tok)
    assert e.value.status_code == 403
    # The grant of one operator is not another's.
    other = new_operator(ciel)
    otok = op_token(ciel, other)
    rid2 = file_request(ciel, tok, cont, ["blob.read"])["name"]
    az_decide(az, ciel, rid2, "Approve")
    with pytest.raises(HttpResponseError):
        blob_read(ciel, data["in"], otok)
    assert op_api(ciel, "GET", f"lockboxRequests/{rid2}", otok).status_code == 404
    assert rid2 not in op_api(ciel, "GET", "lockboxRequests", otok).text


def test_operator_api_bad_input(ciel):
    op = new_operator(ciel)
    tok = op_token(ciel, op)
    base = {"tenantId": ciel.tenant, "subscriptionId": ciel.sub, "justification": "x", "accessTypes": ["blob.read"],
            "durationSeconds": 60}
    assert op_api(ciel, "GET", "lockboxRequests", None).status_code == 401
    assert op_api(ciel, "GET", "lockboxRequests", ciel.admin_token()).status_code == 401  # a tenant token is no operator token
    assert op_api(ciel, "GET", "lockboxRequests", tok, api="2020-01-01").status_code == 400
    for bad in ({"accessTypes": ["blob.write"]}, {"accessTypes": []}, {"durationSeconds": 9 * 3600},
                {"durationSeconds": 1}, {"justification": ""}, {"scope": "/subscriptions/00000000-0000-0000-0000-000000000000"},
                {"scope": "not-an-id"}):
        r = op_api(ciel, "POST", "lockboxRequests", tok, {**base, **bad})
        expect_arm_error(r, 400, "InvalidRequestContent")
    r = op_api(ciel, "POST", "lockboxRequests", tok, {**base, "tenantId": str(uuid.uuid4())})
    expect_arm_error(r, 404, "SubscriptionNotFound")
    assert op_api(ciel, "GET", "lockboxRequests", tok).json()["value"] == []
    r = op_api(ciel, "GET", f"lockboxRequests/{uuid.uuid4()}", tok)
    expect_arm_error(r, 404, "LockboxRequestNotFound")
    r = op_api(ciel, "GET", "lockboxRequests", tok)
    _check(r.json(), {"$ref": "#/components/schemas/LockboxRequestList"}, json.loads(DOC.read_text())["components"]["schemas"])


def rows_of_break_glass(ciel) -> int:
    return audit_rows(ciel, "SELECT COUNT(*) FROM audit_log WHERE action = 'Microsoft.CustomerLockbox/requests/breakGlass/action'"
                            " AND details LIKE ?", "%INC-2026-0042%")[0][0]


def test_break_glass_is_loud_and_visible_to_the_tenant(ciel, az, data):
    a, b = new_operator(ciel), new_operator(ciel)
    args = ["operator", "break-glass", "--tenant", ciel.tenant, "--subscription", ciel.sub,
            "--scope", data["in"]["container_id"], "--reason", "tenant unreachable, data corruption spreading",
            "--duration", "600", "--access", "blob.read", "--incident", "INC-2026-0042", "--operator", a["name"]]
    # One operator alone, or a wrong second code: refused, nothing granted.
    p = ciel.cli_raw(*args, "--code", "000000", "--second-operator", a["name"], "--second-code", "000000")
    assert p.returncode != 0 and "two distinct" in p.stderr, p.stderr
    wrong = "000001" if totp(a["totp"]["secret"], time.time()) != "000001" else "000002"
    p = ciel.cli_raw(*args, "--code", wrong, "--second-operator", b["name"], "--second-code", code(b))
    assert p.returncode != 0 and "wrong" in p.stderr, p.stderr
    assert rows_of_break_glass(ciel) == 0
    p = ciel.cli_raw(*args, "--code", code(a), "--second-operator", b["name"], "--second-code", code(b), output_json=True)
    assert p.returncode == 0, p.stderr
    assert "BREAK-GLASS" in p.stderr and rows_of_break_glass(ciel) == 1
    g = json.loads(p.stdout)
    rid = g["name"]
    assert g["properties"]["breakGlass"] is True and g["properties"]["status"] == "Approved"
    tok = op_token(ciel, a)
    assert blob_read(ciel, data["in"], tok) == b"confidential-in"
    # The tenant sees it: in its lockbox list (marked) and its activity log (breakGlass action).
    got = az("rest", "--method", "get", "--url", lockbox_url(ciel, rid))["properties"]
    assert got["breakGlass"] is True and got["supportRequest"] == "INC-2026-0042", got
    events = az("monitor", "activity-log", "list", "--max-events", "1000", "--offset", "1h")
    bg = [e for e in events if e["operationName"]["value"] == "Microsoft.CustomerLockbox/requests/breakGlass/action"
          and rid in json.dumps(e)]
    assert bg and bg[0]["properties"]["BREAK_GLASS"] == "true", bg
    reads = [e for e in events if e["caller"] == f"operator:{a['name']}" and rid in json.dumps(e)
             and e["status"]["value"] == "Succeeded"]
    assert reads and reads[0]["properties"]["breakGlass"] == "true", reads
    # The tenant can end it at once.
    assert az_decide(az, ciel, rid, "Revoke", "we are reachable")["status"] == "Revoked"
    with pytest.raises(HttpResponseError):
        blob_read(ciel, data["in"], tok)
