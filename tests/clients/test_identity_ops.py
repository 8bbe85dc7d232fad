"""Identity operations beyond the basic flows: signing-key rotation (old keys stay published until
their tokens expire) and the lockout after repeated password failures (SecNumCloud 9.5.b)."""

from __future__ import annotations

import sqlite3
import uuid

import jwt

from cieltest import claims_of, describe, wait_until

RG_API = "2021-04-01"


def _fresh_token(s) -> str:
    """A newly issued token (the helpers cache theirs)."""
    r = s.token_response({"grant_type": "client_credentials", "client_id": s.client_id, "client_secret": s.secret,
                          "scope": s.arm_scope})
    assert r.status_code == 200, describe(r)
    return r.json()["access_token"]


def test_signing_key_rotation(server_factory):
    s = server_factory("rotation")
    old_token = _fresh_token(s)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    assert [k.key_id for k in s.jwks().keys] == [old_kid]

    out = s.cli_raw("keys", "rotate")
    assert out.returncode == 0, out.stderr

    # The running server signs with the new key within seconds, without a restart.
    def new_kid():
        return jwt.get_unverified_header(_fresh_token(s))["kid"]
    wait_until(lambda: new_kid() != old_kid, 15, what="the server to sign with the rotated key")
    kid = new_kid()
    published = [k.key_id for k in s.jwks().keys]
    assert kid in published and old_kid in published, f"JWKS after rotation: {published}"

    # Tokens signed with the retired key keep working until they expire; new ones verify too.
    for tok in (old_token, _fresh_token(s)):
        r = s.request("GET", f"{s.arm}subscriptions/{s.sub}/resourcegroups?api-version={RG_API}", token=tok)
        assert r.status_code == 200, describe(r)
        s.verify_jwt(tok, audience=s.arm)

    # The rotation is on the audit record.
    db = sqlite3.connect(f"file:{s.data_dir}/ciel.db?mode=ro", uri=True)
    actions = [a for (a,) in db.execute("SELECT action FROM audit_log WHERE action LIKE 'identity/signingKeys/%'")]
    db.close()
    assert actions.count("identity/signingKeys/create") == 2 and "identity/signingKeys/retire" in actions, actions


def test_password_lockout(ciel):
    upn = f"lock-{uuid.uuid4().hex[:6]}@{ciel.default_domain()}"
    password = "Right-Password-123"
    ciel.create_user(upn, password=password)
    assert ciel.user_token_response(upn, password).status_code == 200

    for _ in range(5):
        r = ciel.user_token_response(upn, "wrong-password-xyz")
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", describe(r)
        assert "AADSTS50126" in r.json()["error_description"], describe(r)
    # Locked: even the right password is refused, with Entra's lockout code.
    r = ciel.user_token_response(upn, password)
    assert r.status_code == 400, describe(r)
    assert "AADSTS50053" in r.json()["error_description"], describe(r)
    assert "access_token" not in r.json()


def test_unknown_user_and_wrong_password_answer_alike(ciel):
    upn = f"real-{uuid.uuid4().hex[:6]}@{ciel.default_domain()}"
    ciel.create_user(upn, password="Some-Password-456")
    a = ciel.user_token_response(upn, "not-the-password")
    b = ciel.user_token_response(f"ghost-{uuid.uuid4().hex[:6]}@{ciel.default_domain()}", "not-the-password")
    assert a.status_code == b.status_code == 400
    assert a.json()["error"] == b.json()["error"] == "invalid_grant"
    assert a.json()["error_description"] == b.json()["error_description"]


def test_user_token_claims(ciel):
    upn = f"claims-{uuid.uuid4().hex[:6]}@{ciel.default_domain()}"
    u = ciel.create_user(upn, password="Claims-Password-789")
    r = ciel.user_token_response(upn, "Claims-Password-789")
    assert r.status_code == 200, describe(r)
    c = claims_of(r.json()["access_token"])
    assert c["upn"] == upn and c["oid"] == u["objectId"] and c["tid"] == ciel.tenant and c["scp"]
    assert c["idtyp"] == "user"
