"""The Azure CLI, unmodified, against Ciel: cloud registration by metadata discovery, service
principal and user login, resource groups, role definitions and role assignments."""

from __future__ import annotations

import time
import uuid

from cieltest import claims_of


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _same_scope(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def test_cloud_register_discovers_endpoints_and_sp_login(ciel, make_az):
    a = make_az(ciel, "register")
    a("cloud", "register", "-n", "Ciel", "--endpoint-resource-manager", ciel.arm)
    cloud = a("cloud", "show", "-n", "Ciel")
    ep = cloud["endpoints"]
    assert ep["resourceManager"].rstrip("/") == ciel.arm.rstrip("/"), ep
    assert ep["activeDirectory"].rstrip("/") == ciel.login, ep
    assert (ep.get("activeDirectoryResourceId") or "").rstrip("/") == ciel.arm.rstrip("/"), ep
    assert (ep.get("microsoftGraphResourceId") or "").rstrip("/") == ciel.graph.rstrip("/"), ep

    a("cloud", "set", "-n", "Ciel")
    active = a("cloud", "show")
    assert active["name"] == "Ciel" and active["isActive"] is True, active

    subs = a.login_sp()
    assert isinstance(subs, list) and subs, subs
    assert any(s["id"] == ciel.sub and s["tenantId"] == ciel.tenant for s in subs), subs

    acct = a("account", "show")
    assert acct["id"] == ciel.sub, acct
    assert acct["tenantId"] == ciel.tenant, acct
    assert acct["user"]["name"] == ciel.client_id, acct
    assert acct["user"]["type"] == "servicePrincipal", acct

    tok = a("account", "get-access-token")
    claims = claims_of(tok["accessToken"])
    assert claims["aud"].rstrip("/") == ciel.arm.rstrip("/"), claims
    assert claims["tid"] == ciel.tenant, claims
    assert claims["appid"] == ciel.client_id, claims


def test_group_lifecycle(az, ciel):
    name = _name("az-rg")
    g = az("group", "create", "-n", name, "-l", "francecentral", "--tags", "a=b")
    assert g["name"] == name, g
    assert g["location"] == "francecentral", g
    assert g["tags"] == {"a": "b"}, g
    assert g["properties"]["provisioningState"] == "Succeeded", g
    assert g["id"].lower() == f"/subscriptions/{ciel.sub}/resourcegroups/{name}".lower(), g

    shown = az("group", "show", "-n", name)
    assert shown["id"] == g["id"] and shown["tags"] == {"a": "b"}, shown

    listed = az("group", "list")
    assert name in [x["name"] for x in listed], listed

    assert az("group", "exists", "-n", name) is True
    assert az("group", "exists", "-n", name + "-absent") is False

    updated = az("group", "update", "-n", name, "--tags", "c=d")
    assert updated["tags"] == {"c": "d"}, updated
    assert az("group", "show", "-n", name)["tags"] == {"c": "d"}

    t0 = time.monotonic()
    az("group", "delete", "-n", name, "--yes")
    elapsed = time.monotonic() - t0
    assert elapsed < 60, f"az group delete took {elapsed:.0f}s (missing Retry-After on the operation?)"
    assert az("group", "exists", "-n", name) is False
    p = az.fails("group", "show", "-n", name)
    assert "ResourceGroupNotFound" in p.stderr, p.stderr


def test_group_create_outside_france_is_refused(az):
    name = _name("az-we")
    p = az.fails("group", "create", "-n", name, "-l", "westeurope")
    assert "LocationNotAvailableForResourceGroup" in p.stderr, p.stderr
    assert "francecentral" in p.stderr and "francesouth" in p.stderr, p.stderr
    assert az("group", "exists", "-n", name) is False


def test_role_definitions(az):
    readers = az("role", "definition", "list", "--name", "Reader")
    assert len(readers) == 1, readers
    reader = readers[0]
    assert reader["roleName"] == "Reader", reader
    assert reader["roleType"] == "BuiltInRole", reader
    actions = [a for p in reader["permissions"] for a in p.get("actions", [])]
    assert "*/read" in actions, reader

    names = {d["roleName"] for d in az("role", "definition", "list")}
    assert {"Owner", "Contributor", "Reader", "User Access Administrator"} <= names, names


def test_role_assignment_for_service_principal(az, ciel):
    sp = ciel.create_sp(_name("az-ra-sp"))
    rg = _name("az-ra-rg")
    az("group", "create", "-n", rg, "-l", "francecentral")
    scope = f"/subscriptions/{ciel.sub}/resourceGroups/{rg}"
    reader_id = az("role", "definition", "list", "--name", "Reader")[0]["name"]

    ra = az("role", "assignment", "create", "--assignee", sp["appId"], "--role", "Reader", "--scope", scope)
    assert ra["principalId"] == sp["objectId"], ra
    assert _same_scope(ra["scope"], scope), ra
    assert ra["roleDefinitionId"].lower().endswith(reader_id.lower()), ra
    assert ra.get("principalType") == "ServicePrincipal", ra

    at_scope = az("role", "assignment", "list", "--scope", scope)
    assert ra["id"].lower() in [x["id"].lower() for x in at_scope], at_scope

    by_assignee = az("role", "assignment", "list", "--assignee", sp["appId"], "--all")
    assert [x["id"].lower() for x in by_assignee] == [ra["id"].lower()], by_assignee
    assert by_assignee[0]["roleDefinitionName"] == "Reader", by_assignee

    az("role", "assignment", "delete", "--assignee", sp["appId"], "--role", "Reader", "--scope", scope)
    after = az("role", "assignment", "list", "--scope", scope)
    assert ra["id"].lower() not in [x["id"].lower() for x in after], after
    assert az("role", "assignment", "list", "--assignee", sp["appId"], "--all") == []


def test_user_login_with_password(ciel, az, make_az):
    ciel.require_port_443("az login -u/-p (MSAL) asks https://login.D/common/userrealm/ on port 443")
    user = ciel.create_user()
    upn = user["userPrincipalName"]
    az("role", "assignment", "create", "--assignee-object-id", user["objectId"], "--assignee-principal-type", "User",
       "--role", "Reader", "--scope", f"/subscriptions/{ciel.sub}")

    ua = make_az(ciel, "user")
    ua.register_cloud()
    subs = ua("login", "-u", upn, "-p", user["password"])
    assert any(s["id"] == ciel.sub for s in subs), subs

    acct = ua("account", "show")
    assert acct["id"] == ciel.sub and acct["tenantId"] == ciel.tenant, acct
    assert acct["user"]["name"].lower() == upn.lower(), acct
    assert acct["user"]["type"] == "user", acct

    claims = claims_of(ua("account", "get-access-token")["accessToken"])
    assert claims.get("upn", "").lower() == upn.lower() and claims["oid"] == user["objectId"], claims

    assert isinstance(ua("group", "list"), list)
    p = ua.fails("group", "create", "-n", _name("reader-cannot"), "-l", "francecentral")
    assert "AuthorizationFailed" in p.stderr, p.stderr


def test_cli_on_a_non_default_port(server_factory, make_az):
    """Everything above runs against port 443 when possible; this runs the basics with a port in
    every URL (what a developer's `ciel up --listen 127.0.0.1:8443` gives)."""
    s = server_factory("az-port")
    assert s.port != 443
    a = make_az(s, "port")
    a.register_cloud()
    assert a("cloud", "show")["endpoints"]["activeDirectory"].rstrip("/") == s.login
    subs = a.login_sp()
    assert [x["id"] for x in subs] == [s.sub], subs
    name = _name("port-rg")
    assert a("group", "create", "-n", name, "-l", "francesouth")["location"] == "francesouth"
    assert a("group", "exists", "-n", name) is True
    a("group", "delete", "-n", name, "--yes")
    assert a("group", "exists", "-n", name) is False
