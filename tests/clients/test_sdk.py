"""The Azure SDK for Python, unmodified, against Ciel: azure-identity credentials (Entra and ADFS
authorities), the resource, authorization and subscription management clients, and the tokens
themselves (claims and signatures checked against the published JWKS)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential, UsernamePasswordCredential

try:
    from azure.mgmt.resource.resources import ResourceManagementClient
except ImportError:  # older azure-mgmt-resource layouts
    from azure.mgmt.resource import ResourceManagementClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.resource.subscriptions import SubscriptionClient

from cieltest import (AZ_CLI_CLIENT_ID, b64url_decode, claims_of, describe, expect_arm_error, is_guid)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def cred(ciel):
    return ClientSecretCredential(ciel.tenant, ciel.client_id, ciel.secret, authority=ciel.login,
                                  disable_instance_discovery=True, connection_verify=ciel.ca)


def _rm(ciel, cred, subscription=None):
    return ResourceManagementClient(cred, subscription or ciel.sub, base_url=ciel.arm,
                                    credential_scopes=[ciel.arm_scope], connection_verify=ciel.ca)


@pytest.fixture(scope="module")
def rm(ciel, cred):
    return _rm(ciel, cred)


@pytest.fixture(scope="module")
def authz(ciel, cred):
    return AuthorizationManagementClient(cred, ciel.sub, base_url=ciel.arm, credential_scopes=[ciel.arm_scope],
                                         connection_verify=ciel.ca)


@pytest.fixture(scope="module")
def subs_client(ciel, cred):
    return SubscriptionClient(cred, base_url=ciel.arm, credential_scopes=[ciel.arm_scope], connection_verify=ciel.ca)


def _admin_oid(ciel) -> str:
    for sp in ciel.cli("sp", "list", "--tenant", ciel.tenant):
        if sp["appId"] == ciel.client_id:
            return sp["objectId"]
    raise AssertionError("admin SP not in `ciel sp list`")


# ---------------------------------------------------------------------------------------------
# Identity
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["tenant", "organizations", "common"])
def test_openid_discovery(ciel, which):
    tenant = ciel.tenant if which == "tenant" else which
    doc = ciel.discovery(tenant)
    for k in ("issuer", "token_endpoint", "jwks_uri", "authorization_endpoint"):
        assert isinstance(doc.get(k), str) and doc[k].startswith("https://"), (k, doc)
    assert doc["token_endpoint"].startswith(ciel.login + "/"), doc
    assert doc["jwks_uri"].startswith(ciel.login + "/"), doc
    if which == "tenant":
        assert doc["issuer"] == f"{ciel.login}/{ciel.tenant}/v2.0", doc
        assert doc["token_endpoint"] == f"{ciel.login}/{ciel.tenant}/oauth2/v2.0/token", doc
    assert "RS256" in doc.get("id_token_signing_alg_values_supported", ["RS256"]), doc
    keys = ciel.jwks(tenant)
    assert keys.keys, "JWKS is empty"
    for k in keys.keys:
        assert k.key_id and k.key_type == "RSA", k._jwk_data


def test_client_secret_credential_token(ciel, cred):
    t0 = int(time.time())
    at = cred.get_token(ciel.arm_scope)
    assert at.expires_on > t0 + 300
    doc = ciel.discovery()
    claims = ciel.verify_jwt(at.token, audience=ciel.arm, issuer=doc["issuer"])
    assert claims["aud"] == ciel.arm, claims
    assert claims["tid"] == ciel.tenant, claims
    assert claims["appid"] == ciel.client_id, claims
    assert claims["oid"] == _admin_oid(ciel), claims
    assert claims["iat"] <= t0 + 60 and claims["nbf"] <= t0 + 60, claims
    assert 300 <= claims["exp"] - claims["iat"] <= 86400, claims
    assert "upn" not in claims, claims
    # The token opens ARM.
    r = ciel.arm_call("GET", f"/subscriptions/{ciel.sub}", token=at.token, params={"api-version": "2022-12-01"})
    assert r.status_code == 200, describe(r)


def test_adfs_authority(ciel):
    r = requests.get(f"{ciel.login}/adfs/.well-known/openid-configuration", verify=ciel.ca, timeout=30)
    assert r.status_code == 200, describe(r)
    assert r.json()["token_endpoint"].startswith(f"{ciel.login}/adfs/"), r.json()
    cred = ClientSecretCredential("adfs", ciel.client_id, ciel.secret, authority=ciel.login, connection_verify=ciel.ca)
    at = cred.get_token(ciel.arm_scope)
    claims = ciel.verify_jwt(at.token, audience=ciel.arm)
    assert claims["tid"] == ciel.tenant and claims["appid"] == ciel.client_id, claims
    rm = ResourceManagementClient(cred, ciel.sub, base_url=ciel.arm, credential_scopes=[ciel.arm_scope],
                                  connection_verify=ciel.ca)
    assert isinstance(list(rm.resource_groups.list()), list)


@pytest.mark.parametrize("scope_kind", ["double-slash", "no-slash", "azure-alias"])
def test_arm_scope_spellings(ciel, scope_kind):
    scope = {
        "double-slash": ciel.arm + "/.default",            # what az builds from "https://management.D:P/"
        "no-slash": ciel.arm.rstrip("/") + "/.default",
        "azure-alias": "https://management.azure.com/.default",
    }[scope_kind]
    tok = ciel.client_token(ciel.client_id, ciel.secret, scope=scope)
    r = ciel.arm_call("GET", f"/subscriptions/{ciel.sub}/resourcegroups", token=tok, params={"api-version": "2021-04-01"})
    assert r.status_code == 200, describe(r)


def test_token_errors(ciel):
    r = ciel.token_response({"grant_type": "client_credentials", "client_id": ciel.client_id,
                             "client_secret": "wrong-" + ciel.secret, "scope": ciel.arm_scope})
    assert r.status_code in (400, 401), describe(r)
    body = r.json()
    assert body.get("error") == "invalid_client" and body.get("error_description"), body
    assert "access_token" not in body

    r = ciel.token_response({"grant_type": "client_credentials", "client_id": str(uuid.uuid4()),
                             "client_secret": "x", "scope": ciel.arm_scope})
    assert r.status_code in (400, 401), describe(r)
    assert r.json().get("error") in ("invalid_client", "unauthorized_client"), r.text

    r = ciel.token_response({"grant_type": "urn:nonsense", "client_id": ciel.client_id, "scope": ciel.arm_scope})
    assert r.status_code == 400 and r.json().get("error"), describe(r)


def test_reset_secret_invalidates_old_secret(ciel):
    sp = ciel.create_sp(_name("reset"))
    old = sp["password"]
    ciel.client_token(sp["appId"], old)
    new = ciel.cli("sp", "reset-secret", "--tenant", ciel.tenant, "--id", sp["appId"])
    assert new["appId"] == sp["appId"] and new["password"] and new["password"] != old, new
    r = ciel.token_response({"grant_type": "client_credentials", "client_id": sp["appId"], "client_secret": old,
                             "scope": ciel.arm_scope})
    assert r.status_code in (400, 401) and r.json().get("error") == "invalid_client", describe(r)
    assert ciel.client_token(sp["appId"], new["password"])


@pytest.fixture(scope="module")
def user(ciel):
    return ciel.create_user()


def test_user_password_grant_tokens(ciel, user):
    r = ciel.user_token_response(user["userPrincipalName"], user["password"])
    assert r.status_code == 200, describe(r)
    body = r.json()
    for k in ("access_token", "id_token", "refresh_token", "client_info"):
        assert body.get(k), f"{k} missing from {sorted(body)}"
    assert body.get("token_type", "").lower() == "bearer", body

    at = ciel.verify_jwt(body["access_token"], audience=ciel.arm, issuer=ciel.discovery()["issuer"])
    assert at["tid"] == ciel.tenant and at["oid"] == user["objectId"], at
    assert at["upn"].lower() == user["userPrincipalName"].lower(), at
    assert at.get("scp"), at
    assert at["appid"] == AZ_CLI_CLIENT_ID, at

    idt = ciel.verify_jwt(body["id_token"], audience=AZ_CLI_CLIENT_ID)
    assert idt["tid"] == ciel.tenant and idt["oid"] == user["objectId"], idt
    assert idt["preferred_username"].lower() == user["userPrincipalName"].lower(), idt

    info = json.loads(b64url_decode(body["client_info"]))
    assert info == {"uid": user["objectId"], "utid": ciel.tenant} or (
        info.get("uid") == user["objectId"] and info.get("utid") == ciel.tenant), info


def test_user_wrong_password_is_refused(ciel):
    u = ciel.create_user()  # its own user, so that failed attempts lock nobody else out
    r = ciel.user_token_response(u["userPrincipalName"], "not-" + u["password"])
    assert r.status_code in (400, 401), describe(r)
    body = r.json()
    assert body.get("error") and "access_token" not in body, body


def test_refresh_token_is_single_use(ciel, user):
    first = ciel.user_token_response(user["userPrincipalName"], user["password"]).json()
    rt1 = first["refresh_token"]

    def refresh(rt):
        return ciel.token_response({"grant_type": "refresh_token", "client_id": AZ_CLI_CLIENT_ID, "refresh_token": rt,
                                    "scope": f"{ciel.arm_scope} openid profile offline_access", "client_info": "1"})

    r = refresh(rt1)
    assert r.status_code == 200, describe(r)
    second = r.json()
    assert second.get("access_token") and second.get("refresh_token"), second
    assert second["refresh_token"] != rt1
    claims = ciel.verify_jwt(second["access_token"], audience=ciel.arm)
    assert claims["oid"] == user["objectId"], claims

    replay = refresh(rt1)
    assert replay.status_code in (400, 401), f"a used refresh token was accepted again\n{describe(replay)}"
    assert replay.json().get("error") == "invalid_grant", replay.text

    assert refresh(second["refresh_token"]).status_code == 200


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_username_password_credential(ciel, user):
    ciel.require_port_443("MSAL's username/password flow asks https://login.D/common/userrealm/ on port 443")
    cred = UsernamePasswordCredential(AZ_CLI_CLIENT_ID, user["userPrincipalName"], user["password"],
                                      tenant_id=ciel.tenant, authority=ciel.login, disable_instance_discovery=True,
                                      connection_verify=ciel.ca)
    at = cred.get_token(ciel.arm_scope)
    claims = ciel.verify_jwt(at.token, audience=ciel.arm)
    assert claims["oid"] == user["objectId"], claims


# ---------------------------------------------------------------------------------------------
# Resource groups
# ---------------------------------------------------------------------------------------------

def test_resource_group_crud(rm, ciel):
    name = _name("sdk-rg")
    g = rm.resource_groups.create_or_update(name, {"location": "francecentral", "tags": {"env": "test"}})
    assert g.name == name and g.location == "francecentral" and g.tags == {"env": "test"}
    assert g.properties.provisioning_state == "Succeeded"
    assert g.id.lower() == f"/subscriptions/{ciel.sub}/resourcegroups/{name}".lower()

    assert rm.resource_groups.get(name).tags == {"env": "test"}
    assert rm.resource_groups.check_existence(name) is True
    assert rm.resource_groups.check_existence(name + "-absent") is False
    assert name in [x.name for x in rm.resource_groups.list()]

    upd = rm.resource_groups.update(name, {"tags": {"env": "prod", "team": "ciel"}})
    assert upd.tags == {"env": "prod", "team": "ciel"}
    assert rm.resource_groups.get(name).tags == {"env": "prod", "team": "ciel"}

    # Idempotent PUT keeps the group (200, not 201).
    r = ciel.arm_call("PUT", f"/subscriptions/{ciel.sub}/resourcegroups/{name}", params={"api-version": "2021-04-01"},
                      json_body={"location": "francecentral", "tags": {"env": "prod", "team": "ciel"}})
    assert r.status_code == 200, describe(r)

    t0 = time.monotonic()
    poller = rm.resource_groups.begin_delete(name)
    poller.result(timeout=60)
    elapsed = time.monotonic() - t0
    assert poller.done()
    assert elapsed < 10, f"begin_delete took {elapsed:.1f}s (Retry-After missing or too long?)"
    assert rm.resource_groups.check_existence(name) is False
    with pytest.raises(ResourceNotFoundError) as ei:
        rm.resource_groups.get(name)
    assert ei.value.error is not None and ei.value.error.code == "ResourceGroupNotFound"


def test_delete_long_running_operation_protocol(ciel):
    """Deleting a group is a long-running operation in ARM's protocol. Ciel finishes quick work
    synchronously (200, the group is gone at once, so clients never sleep); slow work (groups whose
    resources hold provider data) answers 202 with Location and Retry-After >= 1 and is polled."""
    name = _name("lro")
    ciel.create_group(name)
    r = ciel.arm_call("DELETE", f"/subscriptions/{ciel.sub}/resourcegroups/{name}", params={"api-version": "2021-04-01"})
    assert r.status_code in (200, 202, 204), describe(r)
    if r.status_code == 202:
        loc = r.headers.get("Location")
        assert loc and loc.startswith("https://"), describe(r)
        assert int(r.headers.get("Retry-After", "0")) >= 1, describe(r)
        deadline = time.monotonic() + 30
        while True:
            p = ciel.arm_call("GET", loc)
            assert p.status_code in (200, 202, 204), describe(p)
            if p.status_code in (200, 204):
                break
            assert int(p.headers.get("Retry-After", "0")) >= 1, describe(p)
            assert time.monotonic() < deadline, "delete operation did not finish in 30 s"
            time.sleep(1)
    assert ciel.get_group(name).status_code == 404
    # A second delete of the same group is a 404, not a silent success.
    r = ciel.arm_call("DELETE", f"/subscriptions/{ciel.sub}/resourcegroups/{name}", params={"api-version": "2021-04-01"})
    assert r.status_code == 404, describe(r)
    assert r.json()["error"]["code"] == "ResourceGroupNotFound"


def test_resource_group_paging(rm, ciel):
    prefix = f"page-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-{i:02d}" for i in range(30)]
    for n in names:
        rm.resource_groups.create_or_update(n, {"location": "francesouth"})

    # Raw: $top is the page size, nextLink leads to the rest, nothing twice.
    seen, pages = [], 0
    url, params = f"/subscriptions/{ciel.sub}/resourcegroups", {"api-version": "2021-04-01", "$top": "7"}
    while url:
        r = ciel.arm_call("GET", url, params=params)
        assert r.status_code == 200, describe(r)
        body = r.json()
        assert len(body["value"]) <= 7, f"page has {len(body['value'])} items with $top=7"
        seen += [g["name"] for g in body["value"]]
        pages += 1
        assert pages < 200, "paging does not end"
        url, params = body.get("nextLink"), None
        if url:
            assert url.startswith(ciel.arm.rstrip("/")), url
    assert len(seen) == len(set(seen)), f"duplicates across pages: {sorted(seen)}"
    assert set(names) <= set(seen), f"missing from pages: {sorted(set(names) - set(seen))}"
    assert pages >= 5, f"30+ groups with $top=7 came in {pages} pages"

    # SDK: follows nextLink transparently.
    sdk_pages = list(rm.resource_groups.list(top=7).by_page())
    sdk_names = [g.name for page in sdk_pages for g in page]
    assert set(names) <= set(sdk_names) and len(sdk_names) == len(set(sdk_names))
    assert len(sdk_pages) >= 5
    assert set(names) <= {g.name for g in rm.resource_groups.list()}


def test_location_outside_france_refused_by_sdk(rm):
    with pytest.raises(HttpResponseError) as ei:
        rm.resource_groups.create_or_update(_name("sdk-we"), {"location": "westeurope"})
    assert ei.value.status_code == 400
    assert ei.value.error.code == "LocationNotAvailableForResourceGroup"
    assert "francecentral" in ei.value.error.message and "francesouth" in ei.value.error.message


def test_generic_resource_listing(rm, ciel):
    name = _name("res")
    rm.resource_groups.create_or_update(name, {"location": "francecentral"})
    assert isinstance(list(rm.resources.list()), list)
    assert list(rm.resources.list_by_resource_group(name)) == []
    r = ciel.arm_call("GET", f"/subscriptions/{ciel.sub}/resourceGroups/{name}-absent/resources",
                      params={"api-version": "2021-04-01"})
    expect_arm_error(r, 404, "ResourceGroupNotFound")


def test_providers_listing(rm):
    providers = list(rm.providers.list())
    assert providers and all(p.namespace for p in providers)
    assert any(p.namespace.lower() == "microsoft.resources" for p in providers) or \
        any(p.namespace.lower() == "microsoft.authorization" for p in providers), [p.namespace for p in providers]


# ---------------------------------------------------------------------------------------------
# Subscriptions, tenants, locations
# ---------------------------------------------------------------------------------------------

def test_subscriptions_tenants_locations(subs_client, ciel):
    subs = list(subs_client.subscriptions.list())
    assert ciel.sub in [s.subscription_id for s in subs], subs
    assert all(s.tenant_id in (None, ciel.tenant) for s in subs), [s.tenant_id for s in subs]
    one = subs_client.subscriptions.get(ciel.sub)
    assert one.subscription_id == ciel.sub and str(one.state).lower().endswith("enabled"), one

    tenants = [t.tenant_id for t in subs_client.tenants.list()]
    assert ciel.tenant in tenants, tenants

    locs = list(subs_client.subscriptions.list_locations(ciel.sub))
    assert sorted(l.name for l in locs) == ["francecentral", "francesouth"], [l.name for l in locs]
    assert {l.display_name for l in locs} == {"France Central", "France South"}


# ---------------------------------------------------------------------------------------------
# Authorization
# ---------------------------------------------------------------------------------------------

BUILTIN_IDS = {
    "Owner": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
    "Contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "Reader": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
    "User Access Administrator": "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
}


def test_role_definitions(authz, ciel):
    scope = f"/subscriptions/{ciel.sub}"
    defs = list(authz.role_definitions.list(scope))
    by_name = {d.properties.role_name: d for d in defs}
    assert set(BUILTIN_IDS) <= set(by_name), sorted(by_name)
    readers = list(authz.role_definitions.list(scope, filter="roleName eq 'Reader'"))
    assert [d.properties.role_name for d in readers] == ["Reader"]
    owner = by_name["Owner"]
    assert owner.properties.role_type == "BuiltInRole"
    assert "*" in owner.properties.permissions[0].actions
    assert authz.role_definitions.get(scope, owner.name).properties.role_name == "Owner"


def test_builtin_role_definition_ids_are_azure_well_known(authz, ciel):
    """Scripts and Terraform modules hard-code these GUIDs; Ciel should use Azure's."""
    defs = {d.properties.role_name: d.name for d in authz.role_definitions.list(f"/subscriptions/{ciel.sub}")}
    assert {n: defs.get(n) for n in BUILTIN_IDS} == BUILTIN_IDS


def test_role_assignment_grants_exactly_its_scope(authz, rm, ciel, role_ids):
    granted, other = _name("ra-granted"), _name("ra-other")
    for n in (granted, other):
        rm.resource_groups.create_or_update(n, {"location": "francecentral"})
    sp = ciel.create_sp(_name("ra-sdk"))
    sp_token = lambda: ciel.client_token(sp["appId"], sp["password"])  # noqa: E731

    # No role yet: no access.
    expect_arm_error(ciel.get_group(granted, token=sp_token()), 403, "AuthorizationFailed")

    scope = f"/subscriptions/{ciel.sub}/resourceGroups/{granted}"
    name = str(uuid.uuid4())
    ra = authz.role_assignments.create(scope, name, {"properties": {
        "roleDefinitionId": role_ids["Reader"], "principalId": sp["objectId"], "principalType": "ServicePrincipal"}})
    assert ra.name == name and ra.properties.principal_id == sp["objectId"]
    assert ra.properties.role_definition_id.lower() == role_ids["Reader"].lower()

    listed = list(authz.role_assignments.list_for_scope(scope))
    assert name in [a.name for a in listed]
    mine = list(authz.role_assignments.list_for_subscription(filter=f"principalId eq '{sp['objectId']}'"))
    assert [a.name for a in mine] == [name]
    assert authz.role_assignments.get(scope, name).properties.principal_id == sp["objectId"]

    # Reader on `granted` only: reads there, nothing elsewhere, no writes.
    assert ciel.get_group(granted, token=sp_token()).status_code == 200
    expect_arm_error(ciel.get_group(other, token=sp_token()), (403, 404))
    r = ciel.arm_call("PATCH", f"/subscriptions/{ciel.sub}/resourcegroups/{granted}", token=sp_token(),
                      params={"api-version": "2021-04-01"}, json_body={"tags": {"x": "y"}})
    expect_arm_error(r, 403, "AuthorizationFailed")
    visible = ciel.arm_call("GET", f"/subscriptions/{ciel.sub}/resourcegroups", token=sp_token(),
                            params={"api-version": "2021-04-01"})
    if visible.status_code == 200:
        assert [g["name"] for g in visible.json()["value"]] == [granted], visible.text
    else:
        expect_arm_error(visible, 403, "AuthorizationFailed")

    authz.role_assignments.delete(scope, name)
    assert name not in [a.name for a in authz.role_assignments.list_for_scope(scope)]
    expect_arm_error(ciel.get_group(granted, token=sp_token()), 403, "AuthorizationFailed")


def test_graph_resolves_service_principal(ciel):
    sp = ciel.create_sp(_name("graph"))
    tok = ciel.admin_token(scope=ciel.graph_scope)
    r = requests.get(f"{ciel.graph}v1.0/servicePrincipals", params={"$filter": f"appId eq '{sp['appId']}'"},
                     headers={"Authorization": f"Bearer {tok}"}, verify=ciel.ca, timeout=30)
    assert r.status_code == 200, describe(r)
    found = r.json()["value"]
    assert [(x["appId"], x["id"]) for x in found] == [(sp["appId"], sp["objectId"])], found

    r = requests.post(f"{ciel.graph}v1.0/directoryObjects/getByIds", json={"ids": [sp["objectId"]]},
                      headers={"Authorization": f"Bearer {tok}"}, verify=ciel.ca, timeout=30)
    assert r.status_code == 200, describe(r)
    assert [x["id"] for x in r.json()["value"]] == [sp["objectId"]]

    r = requests.get(f"{ciel.graph}v1.0/me", headers={"Authorization": f"Bearer {tok}"}, verify=ciel.ca, timeout=30)
    # /me is for delegated (user) tokens; an app token gets a Graph error, never someone else's profile.
    assert r.status_code in (200, 400, 403, 404), describe(r)


def test_graph_me_for_user(ciel, user):
    body = ciel.user_token_response(user["userPrincipalName"], user["password"],
                                    scope=f"{ciel.graph_scope} openid profile offline_access").json()
    assert body.get("access_token"), body
    assert claims_of(body["access_token"])["aud"].rstrip("/") == ciel.graph.rstrip("/")
    r = requests.get(f"{ciel.graph}v1.0/me", headers={"Authorization": f"Bearer {body['access_token']}"},
                     verify=ciel.ca, timeout=30)
    assert r.status_code == 200, describe(r)
    me = r.json()
    assert me["id"] == user["objectId"] and me["userPrincipalName"].lower() == user["userPrincipalName"].lower(), me
    assert is_guid(me["id"])
