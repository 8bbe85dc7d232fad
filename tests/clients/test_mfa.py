"""Second factor (TOTP) for tenant users, with the real az CLI and raw OAuth2 where az cannot show
a detail: `az login --use-device-code` through the device-login page, the password grant refused
once a user has a factor (AADSTS50076) or must enrol one (AADSTS50079), wrong, replayed and
locked codes, user codes, expiry, the tenant's policy, self-service enrolment and an Owner's
reset (SecNumCloud 9.6.f, 9.5.b)."""

from __future__ import annotations

import html
import json
import re
import sqlite3
import subprocess
import threading
import time
import uuid

import pyotp
import pytest
import requests

from cieltest import AZ_CLI_CLIENT_ID, az_command, ciel_bin, claims_of, expect_arm_error
from test_sovereignty import DOC, _check

API = "2026-11-01"
ID = "/providers/Ciel.Identity"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

class Otp:
    """A user's authenticator app: gives a code of a time step not used yet (each step is
    accepted once), waiting for the next step when the skew window (±1 step) is spent."""

    def __init__(self, secret: str):
        self.t = pyotp.TOTP(secret)
        self.last = -10**9

    def code(self) -> str:
        while True:
            now = int(time.time()) // 30
            step = max(now, self.last + 1)
            if step <= now + 1:
                self.last = step
                return self.t.at(step * 30)
            time.sleep(1)

    @staticmethod
    def wrong(good: str) -> str:
        return "000000" if good != "000000" else "111111"


def _flow_token(page: str) -> str:
    m = re.search(r'name="flow" value="([^"]+)"', page)
    assert m, page
    return html.unescape(m.group(1))


def _error(page: str) -> str:
    m = re.search(r'id="error"[^>]*>([^<]*)<', page)
    return html.unescape(m.group(1)) if m else ""


class Page:
    """The device-login page driven as a browser would (plain form posts)."""

    def __init__(self, ciel):
        self.ciel = ciel
        self.s = requests.Session()
        self.url = f"{ciel.login}/devicelogin"

    def post(self, **form) -> requests.Response:
        r = self.s.post(self.url, data=form, verify=self.ciel.ca, timeout=60, allow_redirects=False)
        assert r.status_code == 200, f"{r.status_code} {r.text[:500]}"
        return r

    def open(self) -> requests.Response:
        r = self.s.get(self.url, verify=self.ciel.ca, timeout=30)
        assert r.status_code == 200, r.text
        csp = r.headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, r.headers
        assert "no-store" in r.headers.get("cache-control", ""), r.headers
        assert "<script" not in r.text.lower()
        return r

    def user_code(self, code: str) -> str:
        self.open()
        return self.post(step="code", otc=code).text

    def password(self, page: str, upn: str, password: str) -> str:
        return self.post(step="password", flow=_flow_token(page), username=upn, password=password).text

    def totp(self, page: str, code: str) -> str:
        return self.post(step="totp", flow=_flow_token(page), totp=code).text


def _device_start(ciel, tenant: str = "organizations", v1: bool = False) -> dict:
    path = "oauth2/devicecode" if v1 else "oauth2/v2.0/devicecode"
    data = {"client_id": AZ_CLI_CLIENT_ID}
    if v1:
        data["resource"] = ciel.arm
    else:
        data["scope"] = f"{ciel.arm_scope} openid profile offline_access"
    r = requests.post(f"{ciel.login}/{tenant}/{path}", data=data, verify=ciel.ca, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _poll(ciel, device_code: str, tenant: str = "organizations") -> requests.Response:
    return requests.post(f"{ciel.login}/{tenant}/oauth2/v2.0/token", data={
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": AZ_CLI_CLIENT_ID,
        "device_code": device_code, "client_info": "1"}, verify=ciel.ca, timeout=30)


def _password_grant(ciel, upn: str, password: str) -> requests.Response:
    return ciel.user_token_response(upn, password, tenant=ciel.tenant)


def _aadsts(r: requests.Response) -> list:
    return r.json().get("error_codes", [])


def _enrolled_user(ciel, role: str | None = "Reader"):
    """A user with a confirmed factor (enrolled and confirmed by the operator's CLI)."""
    u = ciel.create_user()
    if role:
        ciel.assign_role(f"/subscriptions/{ciel.sub}", _role_id(ciel, role), u["objectId"], principal_type="User")
    e = ciel.cli("user", "mfa", "enroll", "--upn", u["userPrincipalName"])
    assert e["secret"] and e["otpauthUri"].startswith("otpauth://totp/") and e["confirmed"] is False, e
    assert f"secret={e['secret']}" in e["otpauthUri"]
    otp = Otp(e["secret"])
    ciel.cli("user", "mfa", "confirm", "--upn", u["userPrincipalName"], "--code", otp.code())
    st = ciel.cli("user", "mfa", "status", "--upn", u["userPrincipalName"])
    assert st["enrolled"] and st["confirmed"] and st["lockedUntil"] is None, st
    return u, otp


_ROLE_IDS: dict = {}


def _role_id(ciel, name: str) -> str:
    if not _ROLE_IDS:
        r = ciel.arm_call("GET", f"/subscriptions/{ciel.sub}/providers/Microsoft.Authorization/roleDefinitions",
                          params={"api-version": "2022-04-01"})
        assert r.status_code == 200, r.text
        for d in r.json()["value"]:
            _ROLE_IDS[d["properties"]["roleName"]] = d["id"]
    return _ROLE_IDS[name]


def _audit(ciel, tenant: str | None = None) -> list[dict]:
    r = subprocess.run([ciel_bin(), "audit", "export", "--data-dir", str(ciel.data_dir), "--tenant",
                        tenant or ciel.tenant], capture_output=True, text=True, timeout=120, check=True)
    out = []
    for x in map(json.loads, r.stdout.splitlines()):
        if x.get("type") == "entry":
            if isinstance(x.get("details"), str):
                x["details"] = json.loads(x["details"] or "{}")
            out.append(x)
    return out


def _audit_without_tenant(ciel, action: str) -> list[tuple]:
    """Entries that belong to no tenant (a wrong user code names no one), read from the store."""
    db = sqlite3.connect(f"file:{ciel.data_dir / 'ciel.db'}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT actor, action, outcome, details FROM audit_log WHERE tenant_id IS NULL AND action = ?",
                          (action,)).fetchall()
    finally:
        db.close()


def _entries(entries, action, target=None, outcome=None):
    return [e for e in entries if e["action"] == action and (target is None or e["target"] == target)
            and (outcome is None or e["outcome"] == outcome)]


def _id_call(ciel, method, path, token, body=None):
    r = ciel.request(method, f"{ciel.arm.rstrip('/')}{ID}/{path}", token=token, json_body=body,
                     params={"api-version": API})
    if r.status_code == 200:
        # Live answers match docs/openapi/ciel.json.
        doc = json.loads(DOC.read_text())
        key = f"{ID}/{path}" if not path.startswith("users/") else f"{ID}/users/{{objectId}}/mfa/reset"
        op = doc["paths"][key][method.lower()]
        _check(r.json(), op["responses"]["200"]["content"]["application/json"]["schema"],
               doc["components"]["schemas"], f"{method} {path}")
    return r


# ---------------------------------------------------------------------------------------------
# az login --use-device-code
# ---------------------------------------------------------------------------------------------

def test_az_login_with_device_code_and_mfa(ciel, make_az):
    u, otp = _enrolled_user(ciel)
    upn = u["userPrincipalName"]
    a = make_az(ciel, "mfa-device")
    a.register_cloud()

    proc = subprocess.Popen(az_command() + ["login", "--use-device-code", "--output", "json"], env=a.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    err_lines: list[str] = []
    found = threading.Event()
    code_holder = {}

    def read_stderr():
        for line in proc.stderr:
            err_lines.append(line)
            m = re.search(r"open the page (\S+) and enter the code (\S+) to authenticate", line)
            if m:
                code_holder["uri"], code_holder["code"] = m.group(1), m.group(2)
                found.set()

    t = threading.Thread(target=read_stderr, daemon=True)
    t.start()
    try:
        assert found.wait(120), "az did not print a device code:\n" + "".join(err_lines)
        assert code_holder["uri"] == f"{ciel.login}/devicelogin", code_holder
        p = Page(ciel)
        page = p.user_code(code_holder["code"])
        page = p.password(page, upn, u["password"])
        assert "authenticator app" in page and upn in page, page
        done = p.totp(page, otp.code())
        assert 'id="done"' in done, done
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    t.join(5)
    assert proc.returncode == 0, "".join(err_lines)
    subs = json.loads(out)
    assert any(s["id"] == ciel.sub for s in subs), subs

    assert isinstance(a("group", "list"), list)
    claims = claims_of(a("account", "get-access-token")["accessToken"])
    assert claims["oid"] == u["objectId"] and claims["amr"] == ["pwd", "mfa"], claims
    # A token for another resource comes from the refresh token: it keeps `mfa`.
    g = claims_of(a("account", "get-access-token", "--resource", ciel.graph)["accessToken"])
    assert g["aud"].rstrip("/") == ciel.graph.rstrip("/") and "mfa" in g["amr"], g

    entries = _audit(ciel)
    assert _entries(entries, "identity/devicelogin/approve", u["objectId"], "success"), entries[-5:]
    assert _entries(entries, "identity/mfa/verify", u["objectId"], "success")


def test_password_grant_refused_for_a_user_with_mfa(ciel, make_az):
    u, _ = _enrolled_user(ciel)
    r = _password_grant(ciel, u["userPrincipalName"], u["password"])
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "invalid_grant" and 50076 in body["error_codes"], body
    assert body["suberror"] == "basic_action" and "AADSTS50076" in body["error_description"], body
    # A wrong password is still a wrong password (no hint that the account has a factor).
    bad = _password_grant(ciel, u["userPrincipalName"], "not-the-password-123")
    assert 50126 in _aadsts(bad), bad.text
    denied = _entries(_audit(ciel), "identity/token/issue", outcome="denied")
    assert any(e["details"].get("error") == "AADSTS50076" and e["actor"] == u["userPrincipalName"] for e in denied)

    if ciel.port == 443:  # MSAL's username/password flow asks https://login.D/common/userrealm/ on 443
        a = make_az(ciel, "mfa-pwd")
        a.register_cloud()
        p = a.fails("login", "-u", u["userPrincipalName"], "-p", u["password"])
        assert "AADSTS50076" in p.stderr, p.stderr


# ---------------------------------------------------------------------------------------------
# the device-login page and the device grant, step by step
# ---------------------------------------------------------------------------------------------

def test_device_flow_wrong_replayed_and_locked_codes(ciel):
    u, otp = _enrolled_user(ciel)
    upn = u["userPrincipalName"]

    # v2 flow: pending until the page completes.
    f = _device_start(ciel)
    assert f["verification_uri"] == f"{ciel.login}/devicelogin" and f["expires_in"] == 900 and f["interval"] == 5, f
    assert f["user_code"] in f["message"] and len(f["device_code"]) > 40, f
    r = _poll(ciel, f["device_code"])
    assert r.status_code == 400 and r.json()["error"] == "authorization_pending", r.text
    r = _poll(ciel, f["device_code"])  # at once again: too fast
    assert r.json()["error"] == "slow_down", r.text

    p = Page(ciel)
    page = p.user_code(f["user_code"].lower())  # case and separators do not matter
    wrong_pw = p.password(page, upn, "wrong-password-123")
    assert "incorrect" in _error(wrong_pw), wrong_pw
    page = p.password(wrong_pw, upn, u["password"])
    good = otp.code()
    page2 = p.totp(page, Otp.wrong(good))
    assert "not right" in _error(page2), page2
    # The token of a page is good once: replaying the previous form does nothing.
    stale = p.post(step="totp", flow=_flow_token(page), totp=good).text
    assert "expired" in _error(stale), stale
    done = p.totp(page2, good)
    assert 'id="done"' in done, done
    time.sleep(5)
    r = _poll(ciel, f["device_code"])
    assert r.status_code == 200, r.text
    tok = r.json()
    for k in ("access_token", "id_token", "refresh_token", "client_info"):
        assert tok.get(k), tok
    assert claims_of(tok["access_token"])["amr"] == ["pwd", "mfa"]
    assert claims_of(tok["id_token"])["amr"] == ["pwd", "mfa"]
    # Single use.
    again = _poll(ciel, f["device_code"])
    assert again.json()["error"] == "bad_verification_code", again.text
    # The refresh token remembers the second factor.
    rr = requests.post(f"{ciel.login}/{ciel.tenant}/oauth2/v2.0/token", data={
        "grant_type": "refresh_token", "client_id": AZ_CLI_CLIENT_ID, "refresh_token": tok["refresh_token"],
        "scope": f"{ciel.graph_scope} offline_access"}, verify=ciel.ca, timeout=30)
    assert rr.status_code == 200 and claims_of(rr.json()["access_token"])["amr"] == ["pwd", "mfa"], rr.text

    # The same code again, on a new sign-in: a replay.
    f2 = _device_start(ciel, tenant=ciel.tenant, v1=True)
    assert f2["verification_url"] == f"{ciel.login}/devicelogin", f2
    p2 = Page(ciel)
    page = p2.password(p2.user_code(f2["user_code"]), upn, u["password"])
    replay = p2.totp(page, good)
    assert "already used" in _error(replay), replay

    # Lockout: 5 wrong codes (the replay counted as one), then even the right code is refused.
    page = replay
    for _ in range(4):
        page = p2.totp(page, Otp.wrong(good))
    locked = p2.totp(page, otp.code())
    assert "locked" in _error(locked), locked
    time.sleep(5)
    r = _poll(ciel, f2["device_code"], tenant=ciel.tenant)
    assert r.json()["error"] == "authorization_declined", r.text
    st = ciel.cli("user", "mfa", "status", "--upn", upn)
    assert st["lockedUntil"] and st["lockedUntil"] > time.time() + 800, st

    reasons = [e["details"].get("reason") for e in _entries(_audit(ciel), "identity/mfa/verify", u["objectId"], "denied")]
    assert "wrong code" in reasons and "replayed" in reasons and "locked" in reasons, reasons


def test_wrong_user_code_and_cross_origin_post(ciel):
    p = Page(ciel)
    page = p.user_code("BBBB-CCCC-D")
    assert "not valid" in _error(page), page
    assert _audit_without_tenant(ciel, "identity/devicelogin/usercode"), "a wrong user code was not audited"
    r = requests.post(f"{ciel.login}/devicelogin", data={"step": "code", "otc": "BBBBCCCCD"},
                      headers={"Origin": "https://evil.example"}, verify=ciel.ca, timeout=30)
    assert r.status_code == 403, r.text
    # Only public clients may start a device flow; unknown tenants are refused.
    r = requests.post(f"{ciel.login}/organizations/oauth2/v2.0/devicecode", data={"client_id": ciel.client_id,
                      "scope": ciel.arm_scope}, verify=ciel.ca, timeout=30)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    r = requests.post(f"{ciel.login}/{uuid.uuid4()}/oauth2/v2.0/devicecode", data={"client_id": AZ_CLI_CLIENT_ID,
                      "scope": ciel.arm_scope}, verify=ciel.ca, timeout=30)
    assert r.status_code == 400 and 90002 in _aadsts(r), r.text


def test_expired_device_code_and_user_code_throttle(server_factory):
    s = server_factory("mfa-expiry", extra_env={"CIEL_DEVICE_CODE_LIFETIME_SECS": "2"})
    f = _device_start(s)
    assert f["expires_in"] == 2, f
    time.sleep(3.5)
    r = _poll(s, f["device_code"])
    assert r.status_code == 400 and r.json()["error"] == "expired_token" and 70020 in _aadsts(r), r.text
    p = Page(s)
    assert "not valid" in _error(p.user_code(f["user_code"]))
    # Wrong user codes count per address: after 10 in 15 minutes, even a good one waits.
    for _ in range(9):
        p.user_code("BBBBBBBBB")
    f2 = _device_start(s)
    page = p.user_code(f2["user_code"])
    assert "Too many" in _error(page), page


# ---------------------------------------------------------------------------------------------
# tenant policy
# ---------------------------------------------------------------------------------------------

def test_tenant_requires_mfa_for_administrators(ciel):
    owner = ciel.create_user()
    ciel.assign_role(f"/subscriptions/{ciel.sub}", _role_id(ciel, "Owner"), owner["objectId"], principal_type="User")
    plain = ciel.create_user()
    # A refresh token from before the policy.
    before = _password_grant(ciel, owner["userPrincipalName"], owner["password"])
    assert before.status_code == 200, before.text
    plain_tok = _password_grant(ciel, plain["userPrincipalName"], plain["password"]).json()["access_token"]

    # Who may set the policy: not anonymous, not a user without a role.
    body = {"requireMfa": "admins"}
    expect_arm_error(_id_call(ciel, "PUT", "mfaPolicy", None, body), 401)
    expect_arm_error(_id_call(ciel, "PUT", "mfaPolicy", plain_tok, body), 403, "AuthorizationFailed")
    expect_arm_error(_id_call(ciel, "PUT", "mfaPolicy", ciel.admin_token(), {"requireMfa": "some"}), 400)
    assert _id_call(ciel, "GET", "mfaPolicy", plain_tok).json()["requireMfa"] == "off"
    try:
        r = _id_call(ciel, "PUT", "mfaPolicy", ciel.admin_token(), body)
        assert r.status_code == 200 and r.json()["requireMfa"] == "admins", r.text
        assert _id_call(ciel, "GET", "mfaPolicy", plain_tok).json()["requireMfa"] == "admins"

        r = _password_grant(ciel, owner["userPrincipalName"], owner["password"])
        assert r.status_code == 400 and 50079 in _aadsts(r) and r.json()["suberror"] == "additional_action", r.text
        # The old refresh token does not outlive the policy.
        rr = requests.post(f"{ciel.login}/{ciel.tenant}/oauth2/v2.0/token", data={
            "grant_type": "refresh_token", "client_id": AZ_CLI_CLIENT_ID,
            "refresh_token": before.json()["refresh_token"], "scope": ciel.arm_scope}, verify=ciel.ca, timeout=30)
        assert rr.status_code == 400 and 50079 in _aadsts(rr), rr.text
        # A user without an administrator role is unaffected.
        assert _password_grant(ciel, plain["userPrincipalName"], plain["password"]).status_code == 200

        # The Owner enrols on the device-login page.
        f = _device_start(ciel, tenant=ciel.tenant)
        p = Page(ciel)
        page = p.password(p.user_code(f["user_code"]), owner["userPrincipalName"], owner["password"])
        m = re.search(r'id="secret">([A-Z2-7]+)<', page)
        assert m and 'id="otpauth">otpauth://totp/' in page, page
        otp = Otp(m.group(1))
        assert 'id="done"' in p.totp(page, otp.code())
        time.sleep(5)
        tok = _poll(ciel, f["device_code"], tenant=ciel.tenant)
        assert tok.status_code == 200 and claims_of(tok.json()["access_token"])["amr"] == ["pwd", "mfa"], tok.text
        r = _password_grant(ciel, owner["userPrincipalName"], owner["password"])
        assert 50076 in _aadsts(r), r.text
        entries = _audit(ciel)
        assert _entries(entries, "identity/mfa/policy/write", ciel.tenant, "success")
        assert _entries(entries, "Ciel.Identity/mfaPolicy/write", ciel.tenant, "denied")
        assert _entries(entries, "identity/mfa/enroll", owner["objectId"], "success")
    finally:
        off = ciel.cli("tenant", "update", "--tenant", ciel.tenant, "--require-mfa", "off")
        assert off["requireMfa"] == "off"
    assert _password_grant(ciel, plain["userPrincipalName"], plain["password"]).status_code == 200


# ---------------------------------------------------------------------------------------------
# self-service enrolment and the Owner's reset
# ---------------------------------------------------------------------------------------------

def test_self_service_enrolment_and_owner_reset(ciel, tenant_b):
    u = ciel.create_user()
    upn = u["userPrincipalName"]
    tok = _password_grant(ciel, upn, u["password"]).json()["access_token"]
    stranger = ciel.create_user()
    stranger_tok = _password_grant(ciel, stranger["userPrincipalName"], stranger["password"]).json()["access_token"]

    expect_arm_error(_id_call(ciel, "GET", "mfa", None), 401)
    st = _id_call(ciel, "GET", "mfa", tok)
    assert st.status_code == 200 and st.json() == {"enrolled": False, "confirmed": False, "lockedUntil": None}, st.text
    expect_arm_error(_id_call(ciel, "GET", "mfa", ciel.admin_token()), 400, "UserRequired")

    e = _id_call(ciel, "POST", "mfa/enroll", tok)
    assert e.status_code == 200, e.text
    otp = Otp(e.json()["secret"])
    good = otp.code()
    expect_arm_error(_id_call(ciel, "POST", "mfa/confirm", tok, {"code": Otp.wrong(good)}), 400, "InvalidMfaCode")
    expect_arm_error(_id_call(ciel, "POST", "mfa/confirm", tok, {}), 400)
    c = _id_call(ciel, "POST", "mfa/confirm", tok, {"code": good})
    assert c.status_code == 200 and c.json()["confirmed"] is True, c.text
    # A confirmed factor is not replaced by a token alone.
    expect_arm_error(_id_call(ciel, "POST", "mfa/enroll", tok), 409, "MfaAlreadyEnrolled")
    assert 50076 in _aadsts(_password_grant(ciel, upn, u["password"]))

    # Reset of another's factor: Owners of the tenant only; another tenant's caller sees nothing.
    reset = f"users/{u['objectId']}/mfa/reset"
    expect_arm_error(_id_call(ciel, "POST", reset, None), 401)
    expect_arm_error(_id_call(ciel, "POST", reset, stranger_tok), 403, "AuthorizationFailed")
    b_tok = ciel.client_token(tenant_b["sp"]["appId"], tenant_b["sp"]["password"], tenant=tenant_b["tenantId"])
    expect_arm_error(_id_call(ciel, "POST", reset, b_tok), 403)
    assert ciel.cli("user", "mfa", "status", "--upn", upn)["confirmed"] is True
    r = _id_call(ciel, "POST", reset, ciel.admin_token())
    assert r.status_code == 204, r.text
    expect_arm_error(_id_call(ciel, "POST", f"users/{uuid.uuid4()}/mfa/reset", ciel.admin_token()), 404)
    assert _password_grant(ciel, upn, u["password"]).status_code == 200
    entries = _audit(ciel)
    assert _entries(entries, "identity/mfa/reset", u["objectId"], "success")
    assert _entries(entries, "Ciel.Identity/users/mfa/reset/action", u["objectId"], "denied")

    # Removal by the user needs a current code.
    e = _id_call(ciel, "POST", "mfa/enroll", tok)
    otp = Otp(e.json()["secret"])
    assert _id_call(ciel, "POST", "mfa/confirm", tok, {"code": otp.code()}).status_code == 200
    expect_arm_error(_id_call(ciel, "POST", "mfa/remove", tok, {"code": "123456" if otp.t.now() != "123456" else "654321"}),
                     400, "InvalidMfaCode")
    assert _id_call(ciel, "POST", "mfa/remove", tok, {"code": otp.code()}).status_code == 204
    assert _id_call(ciel, "GET", "mfa", tok).json()["enrolled"] is False

    # The operator's reset on the host.
    e = _id_call(ciel, "POST", "mfa/enroll", tok)
    assert ciel.cli("user", "mfa", "reset", "--upn", upn)["enrolled"] is False
