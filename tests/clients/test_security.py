"""Every ARM route, unauthorized: no token (401), another tenant's token (403/404, nothing of this
tenant visible), a Reader's token on writes (403 AuthorizationFailed); forged and invalid tokens
(401); malformed input (4xx, nothing created); and the audit log records the denials."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
import uuid
from types import SimpleNamespace

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cieltest import (assert_request_ids, b64url, claims_of, describe, expect_arm_error, faketime_library,
                      is_authn_code, missing_prerequisite, wait_until)

RG_API = "2021-04-01"
SUB_API = "2022-12-01"
AUTHZ_API = "2022-04-01"
KV_API = "2026-02-01"
POLICY_API = "2023-04-01"
INSIGHTS_API = "2019-10-01"
LOCKBOX_API = "2018-02-28-preview"
MARKER = "tenant-a-secret-marker-7f3c"

# (id, method, path, body, kind). kind: "read" / "write" for subscription-scoped routes;
# "tenant-list" for the tenant-level lists (/subscriptions, /tenants) that answer 200 with only the
# caller's own data; "public" for catalogue routes holding no tenant data; "operation" for the
# status URL of a long-running operation.
ROUTES = [
    ("list-subscriptions", "GET", f"/subscriptions?api-version={SUB_API}", None, "tenant-list"),
    ("list-tenants", "GET", f"/tenants?api-version={SUB_API}", None, "tenant-list"),
    ("list-providers-tenant", "GET", f"/providers?api-version={RG_API}", None, "public"),
    ("get-subscription", "GET", f"/subscriptions/{{sub}}?api-version={SUB_API}", None, "read"),
    ("list-locations", "GET", f"/subscriptions/{{sub}}/locations?api-version={SUB_API}", None, "read"),
    ("list-providers", "GET", f"/subscriptions/{{sub}}/providers?api-version={RG_API}", None, "read"),
    ("list-groups", "GET", f"/subscriptions/{{sub}}/resourcegroups?api-version={RG_API}", None, "read"),
    ("get-group", "GET", f"/subscriptions/{{sub}}/resourcegroups/{{rg}}?api-version={RG_API}", None, "read"),
    ("head-group", "HEAD", f"/subscriptions/{{sub}}/resourcegroups/{{rg}}?api-version={RG_API}", None, "read"),
    ("create-group", "PUT", f"/subscriptions/{{sub}}/resourcegroups/{{new_rg}}?api-version={RG_API}",
     {"location": "francecentral", "tags": {"pwned": "yes"}}, "write"),
    ("overwrite-group", "PUT", f"/subscriptions/{{sub}}/resourcegroups/{{rg}}?api-version={RG_API}",
     {"location": "francecentral", "tags": {"pwned": "yes"}}, "write"),
    ("patch-group", "PATCH", f"/subscriptions/{{sub}}/resourcegroups/{{rg}}?api-version={RG_API}",
     {"tags": {"pwned": "yes"}}, "write"),
    ("delete-group", "DELETE", f"/subscriptions/{{sub}}/resourcegroups/{{rg}}?api-version={RG_API}", None, "write"),
    ("list-resources", "GET", f"/subscriptions/{{sub}}/resources?api-version={RG_API}", None, "read"),
    ("list-group-resources", "GET", f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/resources?api-version={RG_API}",
     None, "read"),
    ("list-role-assignments-sub", "GET",
     f"/subscriptions/{{sub}}/providers/Microsoft.Authorization/roleAssignments?api-version={AUTHZ_API}", None, "read"),
    ("list-role-assignments-rg", "GET",
     f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.Authorization/roleAssignments"
     f"?api-version={AUTHZ_API}", None, "read"),
    ("get-role-assignment", "GET",
     f"/subscriptions/{{sub}}/providers/Microsoft.Authorization/roleAssignments/{{ra}}?api-version={AUTHZ_API}",
     None, "read"),
    ("create-role-assignment-sub", "PUT",
     f"/subscriptions/{{sub}}/providers/Microsoft.Authorization/roleAssignments/{{new_ra}}?api-version={AUTHZ_API}",
     {"properties": {"roleDefinitionId": "{owner_id}", "principalId": "{attacker_oid}",
                     "principalType": "ServicePrincipal"}}, "write"),
    ("create-role-assignment-rg", "PUT",
     f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.Authorization/roleAssignments/{{new_ra}}"
     f"?api-version={AUTHZ_API}",
     {"properties": {"roleDefinitionId": "{owner_id}", "principalId": "{attacker_oid}",
                     "principalType": "ServicePrincipal"}}, "write"),
    ("delete-role-assignment", "DELETE",
     f"/subscriptions/{{sub}}/providers/Microsoft.Authorization/roleAssignments/{{ra}}?api-version={AUTHZ_API}",
     None, "write"),
    ("list-role-definitions", "GET",
     f"/subscriptions/{{sub}}/providers/Microsoft.Authorization/roleDefinitions?api-version={AUTHZ_API}", None, "read"),
    ("list-role-definitions-rg", "GET",
     f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.Authorization/roleDefinitions"
     f"?api-version={AUTHZ_API}", None, "read"),
    ("get-role-definition", "GET",
     f"/subscriptions/{{sub}}/providers/Microsoft.Authorization/roleDefinitions/{{reader_guid}}"
     f"?api-version={AUTHZ_API}", None, "read"),
    # Azure Policy (Microsoft.Authorization policy objects, Microsoft.PolicyInsights states).
    ("list-policy-definitions-tenant", "GET",
     f"/providers/Microsoft.Authorization/policyDefinitions?api-version={POLICY_API}", None, "public"),
    ("list-policy-definitions", "GET",
     f"/subscriptions/{{sub}}/providers/Microsoft.Authorization/policyDefinitions?api-version={POLICY_API}", None, "read"),
    ("create-policy-definition", "PUT",
     f"/subscriptions/{{sub}}/providers/Microsoft.Authorization/policyDefinitions/sec-probe?api-version={POLICY_API}",
     {"properties": {"mode": "All", "policyRule": {"if": {"field": "type", "equals": "x/y"},
                                                   "then": {"effect": "audit"}}}}, "write"),
    ("list-policy-set-definitions", "GET",
     f"/subscriptions/{{sub}}/providers/Microsoft.Authorization/policySetDefinitions?api-version={POLICY_API}",
     None, "read"),
    ("list-policy-assignments-sub", "GET",
     f"/subscriptions/{{sub}}/providers/Microsoft.Authorization/policyAssignments?api-version={POLICY_API}",
     None, "read"),
    ("list-policy-assignments-rg", "GET",
     f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.Authorization/policyAssignments"
     f"?api-version={POLICY_API}", None, "read"),
    ("create-policy-assignment-rg", "PUT",
     f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.Authorization/policyAssignments/sec-probe"
     f"?api-version={POLICY_API}",
     {"properties": {"policyDefinitionId": "/providers/Microsoft.Authorization/policyDefinitions/"
                                           "6c112d4e-5bc7-47ae-a041-ea2d9dccd749",
                     "parameters": {"listOfResourceTypesNotAllowed": {"value": ["x/y"]}}}}, "write"),
    ("delete-policy-assignment-sub", "DELETE",
     f"/subscriptions/{{sub}}/providers/Microsoft.Authorization/policyAssignments/sec-probe?api-version={POLICY_API}",
     None, "write"),
    ("query-policy-states", "POST",
     f"/subscriptions/{{sub}}/providers/Microsoft.PolicyInsights/policyStates/latest/queryResults"
     f"?api-version={INSIGHTS_API}", None, "read"),
    ("trigger-policy-evaluation", "POST",
     f"/subscriptions/{{sub}}/providers/Microsoft.PolicyInsights/policyStates/latest/triggerEvaluation"
     f"?api-version={INSIGHTS_API}", None, "write"),
    ("get-operation-status", "GET", "{operation_url}", None, "operation"),
    # Key Vault's control plane (a provider behind the same router).
    ("get-vault", "GET", f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.KeyVault/vaults/{{vault}}"
     f"?api-version={KV_API}", None, "read"),
    ("list-vaults-rg", "GET", f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.KeyVault/vaults"
     f"?api-version={KV_API}", None, "read"),
    ("list-vaults-sub", "GET", f"/subscriptions/{{sub}}/providers/Microsoft.KeyVault/vaults?api-version={KV_API}",
     None, "read"),
    ("list-deleted-vaults", "GET", f"/subscriptions/{{sub}}/providers/Microsoft.KeyVault/deletedVaults"
     f"?api-version={KV_API}", None, "read"),
    ("create-vault", "PUT", f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.KeyVault/vaults/{{new_vault}}"
     f"?api-version={KV_API}", {"location": "francecentral", "properties": {"tenantId": "{tenant}",
                                 "sku": {"family": "A", "name": "standard"}}}, "write"),
    ("patch-vault", "PATCH", f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.KeyVault/vaults/{{vault}}"
     f"?api-version={KV_API}", {"tags": {"pwned": "yes"}}, "write"),
    ("vault-access-policy", "PUT", f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.KeyVault/vaults/{{vault}}"
     f"/accessPolicies/add?api-version={KV_API}", {"properties": {"accessPolicies": [
         {"tenantId": "{tenant}", "objectId": "{attacker_oid}", "permissions": {"secrets": ["all"]}}]}}, "write"),
    ("delete-vault", "DELETE", f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.KeyVault/vaults/{{vault}}"
     f"?api-version={KV_API}", None, "write"),
    # Customer Lockbox (the tenant's side of operator access): a Reader lists, only a role holding
    # requests/updateApproval/action decides.
    ("list-lockbox-requests", "GET",
     f"/subscriptions/{{sub}}/providers/Microsoft.CustomerLockbox/requests?api-version={LOCKBOX_API}", None, "read"),
    ("approve-lockbox-request", "POST",
     f"/subscriptions/{{sub}}/providers/Microsoft.CustomerLockbox/requests/{{new_ra}}/updateApproval"
     f"?api-version={LOCKBOX_API}", {"status": "Approve", "reason": "pwned"}, "write"),
]
ROUTE_IDS = [r[0] for r in ROUTES]
WRITE_IDS = [r[0] for r in ROUTES if r[4] == "write"]

GRAPH_ROUTES = [
    ("graph-service-principals", "GET", "v1.0/servicePrincipals?$filter=appId eq '{admin_app}'", None),
    ("graph-users", "GET", "v1.0/users", None),
    ("graph-me", "GET", "v1.0/me", None),
    ("graph-get-by-ids", "POST", "v1.0/directoryObjects/getByIds", {"ids": ["{admin_oid}"]}),
]


def _fmt(value, facts: dict):
    if isinstance(value, str):
        return value.format(**facts)
    if isinstance(value, dict):
        return {k: _fmt(v, facts) for k, v in value.items()}
    if isinstance(value, list):
        return [_fmt(v, facts) for v in value]
    return value


@pytest.fixture(scope="module")
def world(ciel, tenant_b, role_ids):
    """Tenant A's objects the attacks aim at, and the attackers' tokens."""
    w = SimpleNamespace()
    w.rg = f"sec-rg-{uuid.uuid4().hex[:8]}"
    ciel.create_group(w.rg, tags={"marker": MARKER})
    w.new_rg = f"sec-new-{uuid.uuid4().hex[:8]}"

    admin_sp = [s for s in ciel.cli("sp", "list", "--tenant", ciel.tenant) if s["appId"] == ciel.client_id]
    assert len(admin_sp) == 1
    w.admin_oid = admin_sp[0]["objectId"]

    w.reader = ciel.create_sp(f"sec-reader-{uuid.uuid4().hex[:6]}")
    w.reader_ra = ciel.assign_role(f"/subscriptions/{ciel.sub}", role_ids["Reader"], w.reader["objectId"])
    w.reader_token = ciel.client_token(w.reader["appId"], w.reader["password"])

    b = tenant_b["sp"]
    w.b_oid = b["objectId"]
    w.b_token = ciel.client_token(b["appId"], b["password"], tenant=tenant_b["tenantId"])
    w.b_graph_token = ciel.client_token(b["appId"], b["password"], tenant=tenant_b["tenantId"], scope=ciel.graph_scope)

    # A finished long-running operation of tenant A, for its status URL.
    tmp = f"sec-op-{uuid.uuid4().hex[:8]}"
    ciel.create_group(tmp)
    r = ciel.arm_call("DELETE", f"/subscriptions/{ciel.sub}/resourcegroups/{tmp}", params={"api-version": RG_API})
    assert r.status_code in (200, 202), describe(r)
    # Quick deletes finish synchronously (200); then the status route is probed with an operation
    # id of tenant A's subscription, which must still refuse the anonymous and the foreign caller.
    w.operation_url = (r.headers.get("Location") if r.status_code == 202 else
                       f"{ciel.arm}subscriptions/{ciel.sub}/operationresults/{uuid.uuid4()}?api-version={RG_API}")
    wait_until(lambda: ciel.get_group(tmp).status_code == 404, 30, what="the delete to finish")

    # A vault of tenant A.
    w.vault = f"sec{uuid.uuid4().hex[:12]}"
    r = ciel.arm_call("PUT", f"/subscriptions/{ciel.sub}/resourceGroups/{w.rg}/providers/Microsoft.KeyVault/vaults/{w.vault}",
                      params={"api-version": KV_API}, json_body={"location": "francecentral", "tags": {"marker": MARKER},
                      "properties": {"tenantId": ciel.tenant, "sku": {"family": "A", "name": "standard"}}})
    assert r.status_code in (200, 201), describe(r)

    w.facts = {
        "vault": w.vault, "new_vault": f"sec{uuid.uuid4().hex[:12]}", "tenant": ciel.tenant,
        "sub": ciel.sub, "rg": w.rg, "new_rg": w.new_rg, "ra": w.reader_ra, "new_ra": str(uuid.uuid4()),
        "owner_id": role_ids["Owner"], "reader_guid": role_ids["Reader"].rsplit("/", 1)[-1],
        "operation_url": w.operation_url, "admin_app": ciel.client_id, "admin_oid": w.admin_oid,
    }
    w.denied_request_ids = []  # request ids of 401/403 answers, checked in the audit log at the end
    return w


def _call(ciel, w, route_id, token, attacker_oid=None, routes=ROUTES):
    _, method, path, body, kind = next(r for r in routes if r[0] == route_id)
    facts = dict(w.facts, attacker_oid=attacker_oid or str(uuid.uuid4()))
    r = ciel.request(method, _fmt(path, facts), token=token, json_body=_fmt(body, facts))
    return r, kind


def _no_leak(r: requests.Response, ciel, w):
    if r.request.method == "HEAD":
        return
    text = r.text
    body = r.request.body or b""
    sent = requests.utils.unquote(r.request.url) + (body.decode() if isinstance(body, bytes) else body)
    for secret in (MARKER, ciel.client_id, w.admin_oid, w.reader["appId"]):
        if secret in sent:
            continue  # an echo of the request is no leak
        assert secret not in text, f"response leaks tenant A data {secret!r}\n{describe(r)}"


# ---------------------------------------------------------------------------------------------
# (a) no token
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("route_id", ROUTE_IDS)
def test_no_token_is_401(ciel, world, route_id):
    r, _ = _call(ciel, world, route_id, token=None)
    expect_arm_error(r, 401, is_authn_code)
    world.denied_request_ids.append(r.headers["x-ms-request-id"])
    _no_leak(r, ciel, world)


# Ciel.Operator (the operators' own API, docs/openapi/ciel.json): an operator token only; no token
# and a tenant's token (even the admin's) are both 401, and both are audited.
OPERATOR_ROUTES = [
    ("operator-list-requests", "GET", "/providers/Ciel.Operator/lockboxRequests?api-version=2026-11-01", None),
    ("operator-get-request", "GET", "/providers/Ciel.Operator/lockboxRequests/{new_ra}?api-version=2026-11-01", None),
    ("operator-create-request", "POST", "/providers/Ciel.Operator/lockboxRequests?api-version=2026-11-01",
     {"tenantId": "{tenant}", "subscriptionId": "{sub}", "justification": "x", "accessTypes": ["blob.read"],
      "durationSeconds": 60}),
]


@pytest.mark.parametrize("route", OPERATOR_ROUTES, ids=[o[0] for o in OPERATOR_ROUTES])
@pytest.mark.parametrize("who", ["anonymous", "tenant-admin"])
def test_operator_api_needs_an_operator_token(ciel, world, route, who):
    _, method, path, body = route
    token = None if who == "anonymous" else ciel.admin_token()
    r = ciel.request(method, _fmt(path, world.facts), token=token, json_body=_fmt(body, world.facts))
    expect_arm_error(r, 401, is_authn_code)
    world.denied_request_ids.append(r.headers["x-ms-request-id"])
    _no_leak(r, ciel, world)


# Ciel's own identity APIs (docs/openapi/ciel.json): (id, method, path, body).
CIEL_IDENTITY_ROUTES = [
    ("get-own-mfa", "GET", "/providers/Ciel.Identity/mfa", None),
    ("enroll-own-mfa", "POST", "/providers/Ciel.Identity/mfa/enroll", None),
    ("confirm-own-mfa", "POST", "/providers/Ciel.Identity/mfa/confirm", {"code": "123456"}),
    ("remove-own-mfa", "POST", "/providers/Ciel.Identity/mfa/remove", {"code": "123456"}),
    ("get-mfa-policy", "GET", "/providers/Ciel.Identity/mfaPolicy", None),
    ("put-mfa-policy", "PUT", "/providers/Ciel.Identity/mfaPolicy", {"requireMfa": "off"}),
    ("reset-user-mfa", "POST", "/providers/Ciel.Identity/users/{oid}/mfa/reset", None),
]


@pytest.mark.parametrize("route", CIEL_IDENTITY_ROUTES, ids=[r[0] for r in CIEL_IDENTITY_ROUTES])
def test_ciel_identity_no_token_is_401(ciel, route):
    _, method, path, body = route
    r = ciel.request(method, path.replace("{oid}", str(uuid.uuid4())), token=None, json_body=body,
                     params={"api-version": "2026-11-01"})
    expect_arm_error(r, 401, is_authn_code)


@pytest.mark.parametrize("route", GRAPH_ROUTES, ids=[g[0] for g in GRAPH_ROUTES])
def test_graph_no_token_is_401(ciel, world, route):
    _, method, path, body = route
    r = requests.request(method, ciel.graph + _fmt(path, world.facts), json=_fmt(body, world.facts),
                         verify=ciel.ca, timeout=30)
    assert r.status_code == 401, describe(r)
    _no_leak(r, ciel, world)


# ---------------------------------------------------------------------------------------------
# (b) another tenant's token
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("route_id", ROUTE_IDS)
def test_other_tenant_sees_nothing(ciel, world, tenant_b, route_id):
    r, kind = _call(ciel, world, route_id, token=world.b_token, attacker_oid=world.b_oid)
    assert_request_ids(r)
    if kind == "tenant-list":
        assert r.status_code == 200, describe(r)
        ids = json.dumps(r.json())
        assert ciel.sub not in ids and ciel.tenant not in ids, f"tenant B sees tenant A\n{describe(r)}"
        if route_id == "list-tenants":
            assert tenant_b["tenantId"] in [t["tenantId"] for t in r.json()["value"]], describe(r)
    elif kind == "public":
        assert r.status_code in (200, 403), describe(r)
        assert ciel.sub not in r.text and ciel.tenant not in r.text, describe(r)
    else:
        expect_arm_error(r, (403, 404))
        world.denied_request_ids.append(r.headers["x-ms-request-id"])
    _no_leak(r, ciel, world)


def test_role_for_a_foreign_principal_grants_nothing(ciel, world, tenant_b, role_ids):
    """Tenant A's Owner names tenant B's principal in a role assignment. Azure refuses it
    (PrincipalNotFound: the principal is not in A's directory); whatever Ciel answers, B's token
    must still see nothing of A."""
    name = str(uuid.uuid4())
    path = f"/subscriptions/{ciel.sub}/providers/Microsoft.Authorization/roleAssignments/{name}"
    put = ciel.arm_call("PUT", path, params={"api-version": AUTHZ_API}, json_body={"properties": {
        "roleDefinitionId": role_ids["Reader"], "principalId": world.b_oid, "principalType": "ServicePrincipal"}})
    try:
        for route_id in ("get-subscription", "list-groups", "get-group"):
            r, _ = _call(ciel, world, route_id, token=world.b_token)
            expect_arm_error(r, (403, 404))
            _no_leak(r, ciel, world)
        r = ciel.request("GET", f"/subscriptions?api-version={SUB_API}", token=world.b_token)
        assert ciel.sub not in r.text, f"tenant B lists tenant A's subscription\n{describe(r)}"
    finally:
        if put.status_code in (200, 201):
            ciel.arm_call("DELETE", path, params={"api-version": AUTHZ_API})
    expect_arm_error(put, (400, 404))


def test_other_tenant_sp_cannot_get_token_from_this_tenant(ciel, tenant_b):
    b = tenant_b["sp"]
    r = ciel.token_response({"grant_type": "client_credentials", "client_id": b["appId"], "client_secret": b["password"],
                             "scope": ciel.arm_scope}, tenant=ciel.tenant)
    assert r.status_code in (400, 401), describe(r)
    assert "access_token" not in r.json() and r.json().get("error"), r.text


@pytest.mark.parametrize("route", GRAPH_ROUTES, ids=[g[0] for g in GRAPH_ROUTES])
def test_graph_other_tenant_sees_nothing(ciel, world, route):
    _, method, path, body = route
    r = requests.request(method, ciel.graph + _fmt(path, world.facts), json=_fmt(body, world.facts),
                         headers={"Authorization": f"Bearer {world.b_graph_token}"}, verify=ciel.ca, timeout=30)
    assert r.status_code in (200, 400, 403, 404), describe(r)
    if r.status_code == 200:
        assert ciel.tenant not in r.text, describe(r)
    _no_leak(r, ciel, world)


# ---------------------------------------------------------------------------------------------
# (c) a Reader
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("route_id", WRITE_IDS)
def test_reader_cannot_write(ciel, world, route_id):
    r, _ = _call(ciel, world, route_id, token=world.reader_token, attacker_oid=world.reader["objectId"])
    expect_arm_error(r, 403, "AuthorizationFailed")
    world.denied_request_ids.append(r.headers["x-ms-request-id"])


@pytest.mark.parametrize("route_id", [r[0] for r in ROUTES if r[4] in ("read", "tenant-list")])
def test_reader_can_read(ciel, world, route_id):
    """The positive control of the Reader tests: the same token does read."""
    r, _ = _call(ciel, world, route_id, token=world.reader_token)
    assert r.status_code in (200, 204), describe(r)
    if route_id == "list-subscriptions":
        assert ciel.sub in [s["subscriptionId"] for s in r.json()["value"]], describe(r)


def test_principal_without_role_is_forbidden(ciel, world):
    sp = ciel.create_sp(f"sec-norole-{uuid.uuid4().hex[:6]}")
    tok = ciel.client_token(sp["appId"], sp["password"])
    expect_arm_error(ciel.get_group(world.rg, token=tok), 403, "AuthorizationFailed")
    r = ciel.arm_call("GET", "/subscriptions", token=tok, params={"api-version": SUB_API})
    assert r.status_code == 200 and r.json()["value"] == [], describe(r)


def test_denied_calls_changed_nothing(ciel, world, role_ids):
    g = ciel.get_group(world.rg)
    assert g.status_code == 200, describe(g)
    assert g.json()["tags"] == {"marker": MARKER}, g.json()
    assert ciel.get_group(world.new_rg).status_code == 404
    r = ciel.arm_call("GET", f"/subscriptions/{ciel.sub}/providers/Microsoft.Authorization/roleAssignments",
                      params={"api-version": AUTHZ_API})
    assert r.status_code == 200, describe(r)
    assignments = r.json()["value"]
    principals = {a["properties"]["principalId"] for a in assignments}
    assert world.b_oid not in principals, "tenant B's principal got a role in tenant A"
    reader_roles = {a["properties"]["roleDefinitionId"].lower() for a in assignments
                    if a["properties"]["principalId"] == world.reader["objectId"]}
    assert reader_roles == {role_ids["Reader"].lower()}, reader_roles
    assert world.reader_ra in [a["name"] for a in assignments]
    v = ciel.arm_call("GET", f"/subscriptions/{ciel.sub}/resourceGroups/{world.rg}/providers/Microsoft.KeyVault/vaults/"
                      f"{world.vault}", params={"api-version": KV_API})
    assert v.status_code == 200, describe(v)
    assert v.json()["tags"] == {"marker": MARKER} and v.json()["properties"]["accessPolicies"] == [], v.json()
    n = ciel.arm_call("GET", f"/subscriptions/{ciel.sub}/resourceGroups/{world.rg}/providers/Microsoft.KeyVault/vaults/"
                      f"{world.facts['new_vault']}", params={"api-version": KV_API})
    assert n.status_code == 404, describe(n)


# ---------------------------------------------------------------------------------------------
# Bad tokens
# ---------------------------------------------------------------------------------------------

def _sign_rs256(claims: dict, kid: str | None) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    headers = {"kid": kid} if kid else {}
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


def _unsigned(header: dict, claims: dict, signature: str = "") -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}.{signature}"


def _bad_tokens(ciel) -> dict[str, str]:
    good = ciel.admin_token()
    header = jwt.get_unverified_header(good)
    claims = claims_of(good)
    kid = header["kid"]
    now = int(time.time())
    h, p, s = good.split(".")
    other_tenant = str(uuid.uuid4())

    tampered_claims = dict(claims, oid=str(uuid.uuid4()))
    jwks_pem = ciel.jwks().keys[0].key.public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    hs_body = b64url(json.dumps(claims).encode())
    hs_sig = b64url(hmac.new(jwks_pem, f"{hs_header}.{hs_body}".encode(), hashlib.sha256).digest())

    return {
        "other-rsa-key-same-kid": _sign_rs256(claims, kid),
        "other-rsa-key-no-kid": _sign_rs256(claims, None),
        "forged-expired": _sign_rs256(dict(claims, iat=now - 7200, nbf=now - 7200, exp=now - 3600), kid),
        "forged-wrong-audience": _sign_rs256(dict(claims, aud="https://management.azure.com/"), kid),
        "forged-wrong-issuer": _sign_rs256(dict(claims, iss=f"{ciel.login}/{other_tenant}/v2.0", tid=other_tenant), kid),
        "alg-none": _unsigned({"alg": "none", "typ": "JWT", "kid": kid}, claims),
        "alg-none-keeping-signature": _unsigned({"alg": "none", "typ": "JWT", "kid": kid}, claims, s),
        "hs256-with-public-key": f"{hs_header}.{hs_body}.{hs_sig}",
        "payload-tampered": f"{h}.{b64url(json.dumps(tampered_claims).encode())}.{s}",
        "signature-stripped": f"{h}.{p}.",
        "truncated": good[: len(good) // 2],
        "garbage": "garbage",
        "three-dots": "a.b.c",
        "empty": "",
    }


BAD_TOKEN_KINDS = ["other-rsa-key-same-kid", "other-rsa-key-no-kid", "forged-expired", "forged-wrong-audience",
                   "forged-wrong-issuer", "alg-none", "alg-none-keeping-signature", "hs256-with-public-key",
                   "payload-tampered", "signature-stripped", "truncated", "garbage", "three-dots", "empty"]


@pytest.fixture(scope="module")
def bad_tokens(ciel):
    return _bad_tokens(ciel)


@pytest.mark.parametrize("kind", BAD_TOKEN_KINDS)
def test_bad_token_is_401(ciel, world, bad_tokens, kind):
    path = f"/subscriptions/{ciel.sub}/resourcegroups"
    r = ciel.request("GET", path, token=bad_tokens[kind], params={"api-version": RG_API})
    expect_arm_error(r, 401, is_authn_code)
    world.denied_request_ids.append(r.headers["x-ms-request-id"])
    # and never on a write either
    r = ciel.request("PUT", f"{path}/{world.new_rg}", token=bad_tokens[kind], params={"api-version": RG_API},
                     json_body={"location": "francecentral"})
    expect_arm_error(r, 401, is_authn_code)


@pytest.mark.parametrize("header", ["Basic YWRtaW46YWRtaW4=", "Bearer", "bearer ", "Token abc", "Bearer  a b c"])
def test_malformed_authorization_header_is_401(ciel, header):
    r = ciel.request("GET", f"/subscriptions/{ciel.sub}/resourcegroups", params={"api-version": RG_API},
                     headers={"Authorization": header})
    expect_arm_error(r, 401, is_authn_code)


def test_graph_token_is_refused_by_arm(ciel):
    tok = ciel.admin_token(scope=ciel.graph_scope)
    assert claims_of(tok)["aud"].rstrip("/") != ciel.arm.rstrip("/")
    r = ciel.request("GET", f"/subscriptions/{ciel.sub}/resourcegroups", token=tok, params={"api-version": RG_API})
    expect_arm_error(r, 401, is_authn_code)


@pytest.fixture(scope="module")
def clock_server(servers):
    """A second deployment whose clock the test can move (libfaketime), to get genuinely signed
    tokens that are expired or not yet valid."""
    lib = faketime_library()
    if not lib:
        missing_prerequisite("libfaketime is not installed (apt-get install libfaketime)")
    s = servers.new("clock")
    clock = s.base / "faketime"
    s.base.mkdir(parents=True, exist_ok=True)
    clock.write_text("+0\n")
    s.extra_env.update({"LD_PRELOAD": lib, "FAKETIME_TIMESTAMP_FILE": str(clock), "FAKETIME_NO_CACHE": "1",
                        "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    s.start()
    s.clock = clock
    yield s
    s.stop()


def _token_at_offset(s, offset: str, check) -> str:
    s.clock.write_text(offset + "\n")
    try:
        def attempt():
            r = s.token_response({"grant_type": "client_credentials", "client_id": s.client_id,
                                  "client_secret": s.secret, "scope": s.arm_scope})
            assert r.status_code == 200, describe(r)
            tok = r.json()["access_token"]
            return tok if check(claims_of(tok)) else None
        return wait_until(attempt, 15, what=f"a token issued under clock offset {offset}")
    finally:
        s.clock.write_text("+0\n")


def test_expired_and_not_yet_valid_tokens_are_401(clock_server):
    s = clock_server
    now = time.time()
    expired = _token_at_offset(s, "-2d", lambda c: c["exp"] < now - 600)
    future = _token_at_offset(s, "+2d", lambda c: c["nbf"] > now + 600)
    path = f"/subscriptions/{s.sub}/resourcegroups"
    fresh = s.token_response({"grant_type": "client_credentials", "client_id": s.client_id, "client_secret": s.secret,
                              "scope": s.arm_scope}).json()["access_token"]
    # Positive control: the clock is back and a fresh token works.
    assert s.request("GET", path, token=fresh, params={"api-version": RG_API}).status_code == 200
    for name, tok in (("expired", expired), ("not-yet-valid", future)):
        r = s.request("GET", path, token=tok, params={"api-version": RG_API})
        assert r.status_code == 401, f"{name} token accepted\n{describe(r)}"
        expect_arm_error(r, 401, is_authn_code)


def test_token_of_another_deployment_is_401(ciel, clock_server):
    foreign = clock_server.admin_token()
    r = ciel.request("GET", f"/subscriptions/{ciel.sub}/resourcegroups", token=foreign, params={"api-version": RG_API})
    expect_arm_error(r, 401, is_authn_code)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

def test_missing_api_version(ciel):
    r = ciel.arm_call("GET", f"/subscriptions/{ciel.sub}/resourcegroups")
    expect_arm_error(r, 400, "MissingApiVersionParameter")


def test_unknown_api_version(ciel):
    r = ciel.arm_call("GET", f"/subscriptions/{ciel.sub}/resourcegroups", params={"api-version": "1999-01-01"})
    expect_arm_error(r, 400, "InvalidApiVersionParameter")
    name = f"badver-{uuid.uuid4().hex[:6]}"
    r = ciel.arm_call("PUT", f"/subscriptions/{ciel.sub}/resourcegroups/{name}", params={"api-version": "not-a-version"},
                      json_body={"location": "francecentral"})
    expect_arm_error(r, 400, "InvalidApiVersionParameter")
    assert ciel.get_group(name).status_code == 404


@pytest.mark.parametrize("body", ['{"location": ', "not json", '["francecentral"]', '{"location": 42}'],
                         ids=["truncated", "not-json", "array", "wrong-type"])
def test_malformed_body(ciel, body):
    name = f"badjson-{uuid.uuid4().hex[:6]}"
    r = ciel.arm_call("PUT", f"/subscriptions/{ciel.sub}/resourcegroups/{name}", params={"api-version": RG_API},
                      data=body, headers={"Content-Type": "application/json"})
    err = expect_arm_error(r, 400)
    if body in ('{"location": ', "not json"):
        assert err["code"] == "InvalidRequestContent", describe(r)
    assert ciel.get_group(name).status_code == 404


@pytest.mark.parametrize("name", ["rg.", "a" * 91, "a b", "rg%23x", "rg<x>"], ids=["trailing-period", "91-chars",
                                                                                   "space", "hash", "angle"])
def test_invalid_group_name(ciel, name):
    r = ciel.arm_call("PUT", f"/subscriptions/{ciel.sub}/resourcegroups/{name}", params={"api-version": RG_API},
                      json_body={"location": "francecentral"})
    expect_arm_error(r, 400, lambda c: "resourcegroup" in c.lower() and "invalid" in c.lower())
    listed = ciel.arm_call("GET", f"/subscriptions/{ciel.sub}/resourcegroups", params={"api-version": RG_API})
    bare = requests.utils.unquote(name)
    assert bare not in [g["name"] for g in listed.json()["value"]]


def test_location_outside_france(ciel):
    name = f"we-{uuid.uuid4().hex[:6]}"
    r = ciel.arm_call("PUT", f"/subscriptions/{ciel.sub}/resourcegroups/{name}", params={"api-version": RG_API},
                      json_body={"location": "westeurope"})
    err = expect_arm_error(r, 400, "LocationNotAvailableForResourceGroup")
    assert "francecentral" in err["message"] and "francesouth" in err["message"], err
    assert ciel.get_group(name).status_code == 404


def test_oversized_body(ciel):
    name = f"big-{uuid.uuid4().hex[:6]}"
    body = json.dumps({"location": "francecentral", "tags": {"x": "a" * (5 * 1024 * 1024)}})
    try:
        r = ciel.arm_call("PUT", f"/subscriptions/{ciel.sub}/resourcegroups/{name}", params={"api-version": RG_API},
                          data=body, headers={"Content-Type": "application/json"})
    except requests.ConnectionError as e:
        pytest.fail(f"the server dropped the connection instead of answering 413/400: {e}")
    expect_arm_error(r, (400, 413))
    assert ciel.get_group(name).status_code == 404


def test_bad_tag_rejected(ciel):
    name = f"tags-{uuid.uuid4().hex[:6]}"
    r = ciel.arm_call("PUT", f"/subscriptions/{ciel.sub}/resourcegroups/{name}", params={"api-version": RG_API},
                      json_body={"location": "francecentral", "tags": {f"t{i}": "v" for i in range(51)}})
    expect_arm_error(r, 400)
    assert ciel.get_group(name).status_code == 404


def test_not_found_shapes(ciel):
    r = ciel.get_group(f"absent-{uuid.uuid4().hex[:6]}")
    expect_arm_error(r, 404, "ResourceGroupNotFound")
    r = ciel.arm_call("HEAD", f"/subscriptions/{ciel.sub}/resourcegroups/absent-{uuid.uuid4().hex[:6]}",
                      params={"api-version": RG_API})
    assert r.status_code == 404, describe(r)
    assert_request_ids(r)


# ---------------------------------------------------------------------------------------------
# Audit
# ---------------------------------------------------------------------------------------------

def _audit_rows(ciel, request_ids) -> dict[str, list]:
    db = ciel.data_dir / "ciel.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        marks = ",".join("?" * len(request_ids))
        rows = conn.execute(f"SELECT request_id, outcome, action, actor FROM audit_log WHERE request_id IN ({marks})",
                            list(request_ids)).fetchall()
    finally:
        conn.close()
    out: dict[str, list] = {}
    for rid, outcome, action, actor in rows:
        out.setdefault(rid, []).append((outcome, action, actor))
    return out


def test_audit_records_denials_and_chain_verifies(ciel, world, tenant_b):
    # Denials made here, so that this test stands alone; those of the tests above are checked too.
    path = f"/subscriptions/{ciel.sub}/resourcegroups/{world.rg}"
    no_token = ciel.request("PATCH", path, params={"api-version": RG_API}, json_body={"tags": {"x": "1"}})
    bad_sig = ciel.request("PATCH", path, token=_sign_rs256(claims_of(ciel.admin_token()), None),
                           params={"api-version": RG_API}, json_body={"tags": {"x": "1"}})
    reader = ciel.request("PATCH", path, token=world.reader_token, params={"api-version": RG_API},
                          json_body={"tags": {"x": "1"}})
    other = ciel.request("PATCH", path, token=world.b_token, params={"api-version": RG_API},
                         json_body={"tags": {"x": "1"}})
    bad_secret = ciel.token_response({"grant_type": "client_credentials", "client_id": ciel.client_id,
                                      "client_secret": "not-the-secret", "scope": ciel.arm_scope})
    expect_arm_error(no_token, 401)
    expect_arm_error(bad_sig, 401)
    expect_arm_error(reader, 403, "AuthorizationFailed")
    expect_arm_error(other, (403, 404))
    assert bad_secret.status_code in (400, 401)

    authz_denials = {r.headers["x-ms-request-id"] for r in (reader, other)}
    authn_denials = {r.headers["x-ms-request-id"] for r in (no_token, bad_sig)}
    login_denial = bad_secret.headers.get("x-ms-request-id") or bad_secret.json().get("correlation_id")
    assert login_denial, describe(bad_secret)

    def recorded():
        rows = _audit_rows(ciel, authz_denials | authn_denials | {login_denial})
        return rows if all(rid in rows for rid in authz_denials) and authn_denials & rows.keys() \
            and login_denial in rows else None

    try:
        rows = wait_until(recorded, 10, what="the denials in audit_log")
    except AssertionError:
        rows = _audit_rows(ciel, authz_denials | authn_denials | {login_denial})
        raise AssertionError(f"denials missing from audit_log: authorization {authz_denials - rows.keys()}, "
                             f"authentication {authn_denials - rows.keys()} (one is enough), "
                             f"login {[login_denial] if login_denial not in rows else []}; found {rows}")
    for rid in authz_denials | (authn_denials & rows.keys()):
        assert any(o == "denied" for o, _, _ in rows[rid]), (rid, rows[rid])
    assert any(o in ("denied", "failure") for o, _, _ in rows[login_denial]), rows[login_denial]

    # The authorization denials of the route table above (when those tests ran in this session).
    earlier = [rid for rid in world.denied_request_ids]
    if earlier:
        got = _audit_rows(ciel, earlier)
        assert got, "none of the route-table denials reached audit_log"

    with sqlite3.connect(f"file:{ciel.data_dir / 'ciel.db'}?mode=ro", uri=True, timeout=10) as conn:
        denied = conn.execute("SELECT count(*) FROM audit_log WHERE outcome = 'denied'").fetchone()[0]
    assert denied >= 3

    p = ciel.cli_raw("audit", "verify")
    assert p.returncode == 0 and "ok" in p.stdout.lower(), f"audit verify failed: {p.returncode}\n{p.stdout}\n{p.stderr}"
