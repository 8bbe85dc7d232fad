"""Azure Policy through azure-mgmt-resource's PolicyClient, azure-mgmt-policyinsights and the az
CLI, unchanged: the built-ins deny what they should and allow the rest, custom definitions in
the rule language, modify and audit effects, compliance states, notScopes, DoNotEnforce, bad
definitions refused with nothing stored, residency underneath every policy, RBAC on policy
writes. The module runs its own server: subscription-wide assignments must not reach other
tests."""

from __future__ import annotations

import datetime
import json
import sqlite3
import uuid

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.mgmt.policyinsights import PolicyInsightsClient
from azure.mgmt.policyinsights.models import QueryOptions
from azure.mgmt.resource.policy import PolicyClient

from cieltest import describe, expect_arm_error

ST_API = "2025-08-01"
KV_API = "2022-07-01"
POL_API = "2023-04-01"

ALLOWED_LOCATIONS = "e56962a6-4747-49cd-b67b-bf8b01975c4c"
ALLOWED_RG_LOCATIONS = "e765b5de-1225-4ba3-bd56-1ac6695af988"
NOT_ALLOWED_TYPES = "6c112d4e-5bc7-47ae-a041-ea2d9dccd749"
REQUIRE_TAG = "1e30110a-5ceb-460c-a204-c1c3969c6d62"
STORAGE_PUBLIC = "4fa4b6c0-31ca-4c0d-b10d-24b96f62a751"
KV_PURGE = "0b60c0b2-2dc2-4e1c-b5c9-abbed971de53"
SECURE_TRANSFER = "404c3081-a854-4457-ae30-26a93ef643f9"
BUILTINS = {
    ALLOWED_LOCATIONS: "Allowed locations",
    ALLOWED_RG_LOCATIONS: "Allowed locations for resource groups",
    NOT_ALLOWED_TYPES: "Not allowed resource types",
    REQUIRE_TAG: "Require a tag and its value on resources",
    STORAGE_PUBLIC: "Storage account public access should be disallowed",
    KV_PURGE: "Key vaults should have deletion protection enabled",
    SECURE_TRANSFER: "Secure transfer to storage accounts should be enabled",
}


def _builtin(guid: str) -> str:
    return f"/providers/Microsoft.Authorization/policyDefinitions/{guid}"


@pytest.fixture(scope="module")
def pol(servers, make_az):
    s = servers.new("policy").start()
    cred = ClientSecretCredential(s.tenant, s.client_id, s.secret, authority=s.login,
                                  disable_instance_discovery=True, connection_verify=s.ca)
    client = PolicyClient(cred, s.sub, base_url=s.arm, credential_scopes=[s.arm_scope], connection_verify=s.ca)
    insights = PolicyInsightsClient(cred, s.sub, base_url=s.arm, credential_scopes=[s.arm_scope], connection_verify=s.ca)
    cli = make_az(s, "policy")
    cli.register_cloud()
    cli.login_sp()
    yield {"s": s, "client": client, "insights": insights, "az": cli}
    s.stop()


def _rg(s, location="francecentral") -> str:
    name = f"pol-{uuid.uuid4().hex[:8]}"
    s.create_group(name, location=location)
    return name


def _rg_id(s, rg: str) -> str:
    return f"/subscriptions/{s.sub}/resourceGroups/{rg}"


def _acct_path(s, rg: str, name: str) -> str:
    return f"{_rg_id(s, rg)}/providers/Microsoft.Storage/storageAccounts/{name}"


def _put_account(s, rg: str, name: str | None = None, location="francecentral", tags=None, **props):
    name = name or f"pol{uuid.uuid4().hex[:12]}"
    body = {"location": location, "kind": "StorageV2", "sku": {"name": "Standard_LRS"}, "properties": props}
    if tags is not None:
        body["tags"] = tags
    r = s.arm_call("PUT", _acct_path(s, rg, name), params={"api-version": ST_API}, json_body=body)
    return name, r


def _put_vault(s, rg: str, **props):
    name = f"kv{uuid.uuid4().hex[:12]}"
    p = {"tenantId": s.tenant, "sku": {"family": "A", "name": "standard"}}
    p.update(props)
    r = s.arm_call("PUT", f"{_rg_id(s, rg)}/providers/Microsoft.KeyVault/vaults/{name}", params={"api-version": KV_API},
                   json_body={"location": "francecentral", "properties": p})
    return name, r


def _assign(s, scope: str, definition_id: str, params: dict | None = None, token="admin", **props):
    name = f"pa-{uuid.uuid4().hex[:8]}"
    body = {"properties": {"policyDefinitionId": definition_id, **props}}
    if params is not None:
        body["properties"]["parameters"] = {k: {"value": v} for k, v in params.items()}
    r = s.arm_call("PUT", f"{scope}/providers/Microsoft.Authorization/policyAssignments/{name}",
                   params={"api-version": POL_API}, json_body=body, token=token)
    return name, r


def _unassign(s, scope: str, name: str):
    r = s.arm_call("DELETE", f"{scope}/providers/Microsoft.Authorization/policyAssignments/{name}",
                   params={"api-version": POL_API})
    assert r.status_code in (200, 204), describe(r)


def _disallowed(r, assignment: str, definition: str) -> dict:
    e = expect_arm_error(r, 403, "RequestDisallowedByPolicy")
    info = [x for x in e.get("additionalInfo") or [] if x.get("type") == "PolicyViolation"]
    assert info, f"no PolicyViolation in additionalInfo: {e}"
    assert any(x["info"]["policyAssignmentName"] == assignment and x["info"]["policyDefinitionName"] == definition
               for x in info), info
    assert assignment in e["message"] or "Reasons" in e["message"], e
    return e


def _audit(s, action: str, target_contains: str) -> list[tuple]:
    db = sqlite3.connect(f"file:{s.data_dir}/ciel.db?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT actor, outcome, details FROM audit_log WHERE action = ? AND target LIKE ?",
                          (action, f"%{target_contains}%")).fetchall()
    finally:
        db.close()


# --------------------------------------------------------------------------------------------
# Built-ins
# --------------------------------------------------------------------------------------------

def test_builtins_have_azure_names_and_are_read_only(pol):
    s, client = pol["s"], pol["client"]
    listed = {d.name: d for d in client.policy_definitions.list_built_in()}
    for guid, display in BUILTINS.items():
        assert guid in listed, f"{display} missing from {sorted(listed)}"
        assert listed[guid].display_name == display and listed[guid].policy_type == "BuiltIn", listed[guid]
    one = client.policy_definitions.get_built_in(ALLOWED_LOCATIONS)
    assert one.id == _builtin(ALLOWED_LOCATIONS) and "listOfAllowedLocations" in one.parameters, one
    at_sub = {d.name for d in client.policy_definitions.list()}
    assert set(BUILTINS) <= at_sub, at_sub
    shown = pol["az"]("policy", "definition", "show", "--name", KV_PURGE)
    assert shown["displayName"] == BUILTINS[KV_PURGE] and shown["policyType"] == "BuiltIn", shown
    for method in ("PUT", "DELETE"):
        r = s.arm_call(method, _builtin(STORAGE_PUBLIC), params={"api-version": POL_API},
                       json_body={"properties": {"policyRule": {"if": {"field": "name", "equals": "x"},
                                                                "then": {"effect": "audit"}}}})
        expect_arm_error(r, 400, "PolicyDefinitionReadOnly")
    assert client.policy_definitions.get_built_in(STORAGE_PUBLIC).policy_rule["then"]["effect"] == "[parameters('effect')]"


def test_allowed_locations_never_relaxes_residency(pol):
    s = pol["s"]
    rg = _rg(s)
    a, r = _assign(s, _rg_id(s, rg), _builtin(ALLOWED_LOCATIONS),
                   {"listOfAllowedLocations": ["francecentral", "westeurope"]})
    assert r.status_code == 201, describe(r)
    _, r = _put_account(s, rg, location="westeurope")
    e = expect_arm_error(r, 400, "LocationNotAvailableForResourceType")
    assert "France" in e["message"], e
    _, r = _put_account(s, rg, location="francesouth")
    _disallowed(r, a, ALLOWED_LOCATIONS)
    _, r = _put_account(s, rg, location="francecentral")
    assert r.status_code in (200, 201), describe(r)


def test_allowed_locations_for_resource_groups(pol):
    s = pol["s"]
    sub = f"/subscriptions/{s.sub}"
    before = _rg(s, location="francesouth")   # exists before the assignment: shown non-compliant
    a, r = _assign(s, sub, _builtin(ALLOWED_RG_LOCATIONS), {"listOfAllowedLocations": ["francecentral"]})
    assert r.status_code == 201, describe(r)
    try:
        name = f"pol-{uuid.uuid4().hex[:8]}"
        r = s.arm_call("PUT", f"{sub}/resourcegroups/{name}", params={"api-version": "2021-04-01"},
                       json_body={"location": "francesouth"})
        _disallowed(r, a, ALLOWED_RG_LOCATIONS)
        assert s.get_group(name).status_code == 404
        p = pol["az"].fails("group", "create", "-n", name, "-l", "francesouth")
        assert "RequestDisallowedByPolicy" in p.stderr, p.stderr
        assert pol["az"]("group", "create", "-n", name, "-l", "francecentral")["name"] == name
        # An update of the old group is judged on the merged result: still France South.
        r = s.arm_call("PATCH", _rg_id(s, before), params={"api-version": "2021-04-01"}, json_body={"tags": {"a": "b"}})
        _disallowed(r, a, ALLOWED_RG_LOCATIONS)
        states = pol["az"]("policy", "state", "list", "--filter",
                           f"policyAssignmentName eq '{a}' and complianceState eq 'NonCompliant'")
        assert [x["resourceId"].lower() for x in states] == [_rg_id(s, before).lower()], states
        assert states[0]["resourceType"].lower() == "microsoft.resources/subscriptions/resourcegroups", states
        # Resources are not groups: the rule does not judge them, wherever their group is.
        _, r = _put_account(s, before, location="francesouth")
        assert r.status_code in (200, 201), describe(r)
    finally:
        _unassign(s, sub, a)


def test_not_allowed_resource_types(pol):
    s = pol["s"]
    rg = _rg(s)
    a, r = _assign(s, _rg_id(s, rg), _builtin(NOT_ALLOWED_TYPES),
                   {"listOfResourceTypesNotAllowed": ["Microsoft.KeyVault/vaults"]})
    assert r.status_code == 201, describe(r)
    _, r = _put_vault(s, rg, enablePurgeProtection=True)
    _disallowed(r, a, NOT_ALLOWED_TYPES)
    _, r = _put_account(s, rg)
    assert r.status_code in (200, 201), describe(r)


def test_require_tag_and_value(pol):
    s = pol["s"]
    rg = _rg(s)
    a, r = _assign(s, _rg_id(s, rg), _builtin(REQUIRE_TAG), {"tagName": "costCenter", "tagValue": "dinum"})
    assert r.status_code == 201, describe(r)
    name, r = _put_account(s, rg)
    _disallowed(r, a, REQUIRE_TAG)
    _, r = _put_account(s, rg, tags={"costCenter": "other"})
    _disallowed(r, a, REQUIRE_TAG)
    name, r = _put_account(s, rg, tags={"costCenter": "dinum"})
    assert r.status_code in (200, 201), describe(r)
    # An update that drops the tag is judged on the merged result.
    r = s.arm_call("PATCH", _acct_path(s, rg, name), params={"api-version": ST_API}, json_body={"tags": {"x": "y"}})
    _disallowed(r, a, REQUIRE_TAG)
    r = s.arm_call("PATCH", _acct_path(s, rg, name), params={"api-version": ST_API},
                   json_body={"properties": {"accessTier": "Cool"}})
    assert r.status_code == 200, describe(r)
    # Indexed mode: the resource group itself is not judged.
    r = s.arm_call("PATCH", _rg_id(s, rg), params={"api-version": "2021-04-01"}, json_body={"tags": {}})
    assert r.status_code == 200, describe(r)


def test_storage_builtins_deny_public_access_and_plain_http(pol):
    s = pol["s"]
    rg = _rg(s)
    a1, r = _assign(s, _rg_id(s, rg), _builtin(STORAGE_PUBLIC), {"effect": "deny"})
    assert r.status_code == 201, describe(r)
    a2, r = _assign(s, _rg_id(s, rg), _builtin(SECURE_TRANSFER), {"effect": "Deny"})
    assert r.status_code == 201, describe(r)
    _, r = _put_account(s, rg, allowBlobPublicAccess=True)
    _disallowed(r, a1, STORAGE_PUBLIC)
    _, r = _put_account(s, rg, supportsHttpsTrafficOnly=False)
    _disallowed(r, a2, SECURE_TRANSFER)
    name, r = _put_account(s, rg, allowBlobPublicAccess=False)
    assert r.status_code in (200, 201), describe(r)
    r = s.arm_call("PATCH", _acct_path(s, rg, name), params={"api-version": ST_API},
                   json_body={"properties": {"allowBlobPublicAccess": True}})
    _disallowed(r, a1, STORAGE_PUBLIC)
    got = s.arm_call("GET", _acct_path(s, rg, name), params={"api-version": ST_API}).json()
    assert got["properties"]["allowBlobPublicAccess"] is False, got
    p = pol["az"].fails("storage", "account", "create", "-n", f"pol{uuid.uuid4().hex[:12]}", "-g", rg,
                        "-l", "francecentral", "--allow-blob-public-access", "true")
    assert "RequestDisallowedByPolicy" in p.stderr, p.stderr
    # The denial is audited with the assignment it comes from.
    rows = _audit(s, "Microsoft.Storage/storageAccounts/write", rg)
    assert any(o == "denied" and a1 in d for _, o, d in rows), rows


def test_key_vault_deletion_protection(pol):
    s = pol["s"]
    rg = _rg(s)
    a, r = _assign(s, _rg_id(s, rg), _builtin(KV_PURGE), {"effect": "Deny"})
    assert r.status_code == 201, describe(r)
    _, r = _put_vault(s, rg)
    _disallowed(r, a, KV_PURGE)
    _, r = _put_vault(s, rg, enablePurgeProtection=False)
    _disallowed(r, a, KV_PURGE)
    _, r = _put_vault(s, rg, enablePurgeProtection=True)
    assert r.status_code in (200, 201), describe(r)


# --------------------------------------------------------------------------------------------
# Custom definitions
# --------------------------------------------------------------------------------------------

CUSTOM_RULE = {
    "if": {"allOf": [
        {"field": "type", "equals": "Microsoft.Storage/storageAccounts"},
        {"anyOf": [
            {"not": {"field": "name", "like": "[concat(parameters('prefix'), '*')]"}},
            {"field": "Microsoft.Storage/storageAccounts/sku.name", "in": "[parameters('forbiddenSkus')]"},
            {"field": "tags['owner']", "exists": "false"},
        ]},
    ]},
    "then": {"effect": "[parameters('effect')]"},
}
CUSTOM_PARAMS = {
    "prefix": {"type": "String"},
    "forbiddenSkus": {"type": "Array", "defaultValue": ["Standard_GRS"]},
    "effect": {"type": "String", "allowedValues": ["Deny", "Audit", "Disabled"], "defaultValue": "Deny"},
}


def test_custom_definition_with_the_cli(pol):
    s, az = pol["s"], pol["az"]
    rg = _rg(s)
    dname = f"naming-{uuid.uuid4().hex[:6]}"
    d = az("policy", "definition", "create", "--name", dname, "--rules", json.dumps(CUSTOM_RULE),
           "--params", json.dumps(CUSTOM_PARAMS), "--mode", "Indexed", "--display-name", "Naming and SKUs")
    assert d["policyType"] == "Custom" and d["name"] == dname, d
    assert any(x["name"] == dname for x in az("policy", "definition", "list"))
    asg = az("policy", "assignment", "create", "--name", f"naming-{uuid.uuid4().hex[:6]}", "--policy", dname,
             "--resource-group", rg, "--params", json.dumps({"prefix": {"value": "fin"}}))
    assert asg["policyDefinitionId"].lower() == f"/subscriptions/{s.sub}/providers/microsoft.authorization/policydefinitions/{dname}", asg
    assert any(x["name"] == asg["name"] for x in az("policy", "assignment", "list", "-g", rg))
    ok = f"fin{uuid.uuid4().hex[:10]}"
    for name, tags, sku, allowed in [
        (ok, {"owner": "a"}, "Standard_LRS", True),
        (f"hr{uuid.uuid4().hex[:10]}", {"owner": "a"}, "Standard_LRS", False),   # not like prefix*
        (f"fin{uuid.uuid4().hex[:10]}", {}, "Standard_LRS", False),               # owner tag missing
        (f"fin{uuid.uuid4().hex[:10]}", {"owner": "a"}, "Standard_GRS", False),   # in forbidden SKUs
    ]:
        r = s.arm_call("PUT", _acct_path(s, rg, name), params={"api-version": ST_API},
                       json_body={"location": "francecentral", "kind": "StorageV2", "sku": {"name": sku}, "tags": tags})
        if allowed:
            assert r.status_code in (200, 201), describe(r)
        else:
            _disallowed(r, asg["name"], dname)
    # Parameter checks at assignment time: a missing value, a value outside allowedValues, an unknown name.
    for params, code in [({}, "MissingPolicyParameter"),
                         ({"prefix": {"value": "x"}, "effect": {"value": "Explode"}}, "InvalidPolicyParameters"),
                         ({"prefix": {"value": "x"}, "nope": {"value": 1}}, "UndefinedPolicyParameter"),
                         ({"prefix": {"value": 42}}, "InvalidPolicyParameters")]:
        n = f"bad-{uuid.uuid4().hex[:6]}"
        r = s.arm_call("PUT", f"{_rg_id(s, rg)}/providers/Microsoft.Authorization/policyAssignments/{n}",
                       params={"api-version": POL_API},
                       json_body={"properties": {"policyDefinitionId": d["id"], "parameters": params}})
        expect_arm_error(r, 400, code)
        r = s.arm_call("GET", f"{_rg_id(s, rg)}/providers/Microsoft.Authorization/policyAssignments/{n}",
                       params={"api-version": POL_API})
        expect_arm_error(r, 404, "PolicyAssignmentNotFound")
    # A definition in use cannot be deleted; once unassigned it can.
    p = az.fails("policy", "definition", "delete", "--name", dname)
    assert "PolicyDefinitionInUse" in p.stderr, p.stderr
    az("policy", "assignment", "delete", "--name", asg["name"], "--resource-group", rg)
    az("policy", "definition", "delete", "--name", dname)


def test_bad_definitions_are_refused_and_nothing_is_stored(pol):
    s, client, az = pol["s"], pol["client"], pol["az"]
    cases = [
        ({"if": {"field": "Microsoft.Storage/storageAccounts/noSuchProperty", "equals": True},
          "then": {"effect": "deny"}}, "InvalidPolicyAlias", "noSuchProperty"),
        ({"if": {"field": "name", "sounds": "x"}, "then": {"effect": "deny"}}, "InvalidPolicyRule", "sounds"),
        ({"if": {"allOf": {"field": "name", "equals": "x"}}, "then": {"effect": "deny"}}, "InvalidPolicyRule", "allOf"),
        ({"if": {"field": "name", "equals": "x"}}, "InvalidPolicyRule", "then"),
        ({"if": {"field": "name", "equals": "x"}, "then": {"effect": "obliterate"}}, "InvalidPolicyRule", "obliterate"),
        ({"if": {"field": "name", "equals": "[parameters('missing')]"}, "then": {"effect": "deny"}},
         "UndefinedPolicyParameter", "missing"),
        ({"if": {"field": "name", "equals": "x"}, "then": {"effect": "deployIfNotExists"}},
         "FeatureNotSupported", "deployIfNotExists"),
    ]
    for rule, code, named in cases:
        name = f"bad-{uuid.uuid4().hex[:6]}"
        r = s.arm_call("PUT", f"/subscriptions/{s.sub}/providers/Microsoft.Authorization/policyDefinitions/{name}",
                       params={"api-version": POL_API}, json_body={"properties": {"mode": "All", "policyRule": rule}})
        e = expect_arm_error(r, 400, code)
        assert named in e["message"], e
        with pytest.raises(HttpResponseError) as ex:
            client.policy_definitions.get(name)
        assert ex.value.status_code == 404
        rows = _audit(s, "Microsoft.Authorization/policyDefinitions/write", name)
        assert rows and all(o == "denied" for _, o, _ in rows), rows
    p = az.fails("policy", "definition", "create", "--name", "bad-cli", "--rules",
                 json.dumps({"if": {"field": "Microsoft.KeyVault/vaults/unknownThing", "exists": True},
                             "then": {"effect": "audit"}}))
    assert "InvalidPolicyAlias" in p.stderr and "unknownThing" in p.stderr, p.stderr
    r = s.arm_call("PUT", "/providers/Microsoft.Management/managementGroups/mg1/providers/Microsoft.Authorization/"
                          "policyDefinitions/x", params={"api-version": POL_API}, json_body={"properties": {}})
    expect_arm_error(r, 400, "FeatureNotSupported")


def test_modify_adds_a_tag_before_the_write(pol):
    s, client = pol["s"], pol["client"]
    rg = _rg(s)
    dname = f"modify-{uuid.uuid4().hex[:6]}"
    client.policy_definitions.create_or_update(dname, {
        "mode": "Indexed",
        "parameters": {"value": {"type": "String"}},
        "policy_rule": {
            "if": {"field": "tags['dataClass']", "exists": "false"},
            "then": {"effect": "modify", "details": {
                "roleDefinitionIds": ["/providers/microsoft.authorization/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c"],
                "operations": [{"operation": "addOrReplace", "field": "tags['dataClass']", "value": "[parameters('value')]"}]}},
        },
    })
    d = client.policy_definitions.get(dname)
    client.policy_assignments.create(_rg_id(s, rg), f"mod-{uuid.uuid4().hex[:6]}",
                                     {"policy_definition_id": d.id, "parameters": {"value": {"value": "restricted"}}})
    name, r = _put_account(s, rg, tags={"env": "dev"})
    assert r.status_code in (200, 201), describe(r)
    got = s.arm_call("GET", _acct_path(s, rg, name), params={"api-version": ST_API}).json()
    assert got["tags"] == {"env": "dev", "dataClass": "restricted"}, got
    # A tag already there is kept (the condition no longer holds).
    name2, r = _put_account(s, rg, tags={"dataClass": "public"})
    got = s.arm_call("GET", _acct_path(s, rg, name2), params={"api-version": ST_API}).json()
    assert got["tags"] == {"dataClass": "public"}, got


def test_audit_then_compliance_states_with_the_cli(pol):
    s, az, insights = pol["s"], pol["az"], pol["insights"]
    rg = _rg(s)
    a, r = _assign(s, _rg_id(s, rg), _builtin(STORAGE_PUBLIC))   # default effect: audit
    assert r.status_code == 201, describe(r)
    name, r = _put_account(s, rg, allowBlobPublicAccess=True)
    assert r.status_code in (200, 201), "audit must not block\n" + describe(r)
    rows = _audit(s, "Microsoft.Authorization/policies/audit/action", name)
    assert rows and a in rows[0][2] and "NonCompliant" in rows[0][2], rows
    states = az("policy", "state", "list", "--resource-group", rg, "--filter", "complianceState eq 'NonCompliant'")
    assert [x["resourceId"].lower() for x in states] == [_acct_path(s, rg, name).lower()], states
    assert states[0]["policyAssignmentName"] == a and states[0]["policyDefinitionName"] == STORAGE_PUBLIC, states
    assert states[0]["isCompliant"] is False and states[0]["policyDefinitionAction"] == "audit", states[0]
    r = s.arm_call("PATCH", _acct_path(s, rg, name), params={"api-version": ST_API},
                   json_body={"properties": {"allowBlobPublicAccess": False}})
    assert r.status_code == 200, describe(r)
    az("policy", "state", "trigger-scan", "--resource-group", rg)
    states = az("policy", "state", "list", "--resource-group", rg)
    assert len(states) == 1 and states[0]["complianceState"] == "Compliant", states
    summary = az("policy", "state", "summarize", "--resource-group", rg)
    assert summary["results"]["nonCompliantResources"] == 0, summary
    # The SDK's query at subscription scope, with $top.
    got = list(insights.policy_states.list_query_results_for_subscription(
        "latest", s.sub, QueryOptions(top=5, filter=f"policyAssignmentName eq '{a}'")))
    assert len(got) == 1 and got[0].compliance_state == "Compliant", got
    r = s.arm_call("POST", f"/subscriptions/{s.sub}/providers/Microsoft.PolicyInsights/policyStates/latest/queryResults",
                   params={"api-version": "2019-10-01", "$filter": "nonsense("})
    expect_arm_error(r, 400, "InvalidFilterInQueryString")


def test_not_scopes_and_do_not_enforce(pol):
    s = pol["s"]
    rg_in, rg_out = _rg(s), _rg(s)
    sub = f"/subscriptions/{s.sub}"
    a, r = _assign(s, sub, _builtin(NOT_ALLOWED_TYPES), {"listOfResourceTypesNotAllowed": ["Microsoft.Storage/storageAccounts"]},
                   notScopes=[_rg_id(s, rg_out)],
                   nonComplianceMessages=[{"message": "Storage is provisioned by the platform team."}])
    assert r.status_code == 201, describe(r)
    try:
        _, r = _put_account(s, rg_in)
        e = _disallowed(r, a, NOT_ALLOWED_TYPES)
        assert "Storage is provisioned by the platform team." in e["message"], e
        _, r = _put_account(s, rg_out)
        assert r.status_code in (200, 201), describe(r)
    finally:
        _unassign(s, sub, a)
    rg = _rg(s)
    a, r = _assign(s, _rg_id(s, rg), _builtin(NOT_ALLOWED_TYPES),
                   {"listOfResourceTypesNotAllowed": ["Microsoft.Storage/storageAccounts"]}, enforcementMode="DoNotEnforce")
    assert r.status_code == 201 and r.json()["properties"]["enforcementMode"] == "DoNotEnforce", describe(r)
    name, r = _put_account(s, rg)
    assert r.status_code in (200, 201), describe(r)
    states = pol["az"]("policy", "state", "list", "--resource-group", rg)
    # Mode All: the group itself is judged too (and complies).
    by_type = {x["resourceType"].lower(): x["complianceState"] for x in states}
    assert by_type == {"microsoft.storage/storageaccounts": "NonCompliant",
                       "microsoft.resources/subscriptions/resourcegroups": "Compliant"}, states


def test_set_definition_groups_definitions(pol):
    s, client = pol["s"], pol["client"]
    rg = _rg(s)
    sname = f"baseline-{uuid.uuid4().hex[:6]}"
    r = s.arm_call("PUT", f"/subscriptions/{s.sub}/providers/Microsoft.Authorization/policySetDefinitions/{sname}",
                   params={"api-version": POL_API}, json_body={"properties": {
                       "displayName": "Storage baseline",
                       "parameters": {"effect": {"type": "String", "defaultValue": "Deny"}},
                       "policyDefinitions": [
                           {"policyDefinitionId": _builtin(STORAGE_PUBLIC), "parameters": {"effect": {"value": "[parameters('effect')]"}}},
                           {"policyDefinitionId": _builtin(SECURE_TRANSFER), "parameters": {"effect": {"value": "[parameters('effect')]"}}},
                       ]}})
    assert r.status_code == 201, describe(r)
    sd = client.policy_set_definitions.get(sname)
    assert len(sd.policy_definitions) == 2 and all(m.policy_definition_reference_id for m in sd.policy_definitions), sd
    a, r = _assign(s, _rg_id(s, rg), sd.id)
    assert r.status_code == 201, describe(r)
    _, r = _put_account(s, rg, supportsHttpsTrafficOnly=False)
    e = expect_arm_error(r, 403, "RequestDisallowedByPolicy")
    assert any(x["info"].get("policySetDefinitionName") == sname for x in e["additionalInfo"]), e
    r = s.arm_call("PUT", f"/subscriptions/{s.sub}/providers/Microsoft.Authorization/policySetDefinitions/bad-{sname}",
                   params={"api-version": POL_API}, json_body={"properties": {"policyDefinitions": [
                       {"policyDefinitionId": _builtin("00000000-0000-0000-0000-000000000000")}]}})
    expect_arm_error(r, 400, "PolicyDefinitionNotFound")


def test_policy_writes_need_policy_rights(pol, role_ids_pol):
    s = pol["s"]
    rg = _rg(s)
    for role in ("Reader", "Contributor"):
        sp = s.create_sp(f"pol-{role.lower()}-{uuid.uuid4().hex[:4]}")
        s.assign_role(f"/subscriptions/{s.sub}", role_ids_pol[role], sp["objectId"] if "objectId" in sp else sp["id"])
        tok = s.client_token(sp["appId"], sp["password"])
        name, r = _assign(s, _rg_id(s, rg), _builtin(NOT_ALLOWED_TYPES),
                          {"listOfResourceTypesNotAllowed": ["Microsoft.Storage/storageAccounts"]}, token=tok)
        expect_arm_error(r, 403, "AuthorizationFailed")
        rows = _audit(s, "Microsoft.Authorization/policyAssignments/write", rg)
        assert any(o == "denied" and sp["appId"] in actor for actor, o, _ in rows), rows
        r = s.arm_call("GET", f"{_rg_id(s, rg)}/providers/Microsoft.Authorization/policyAssignments/{name}",
                       params={"api-version": POL_API})
        expect_arm_error(r, 404, "PolicyAssignmentNotFound")
    sp = s.create_sp(f"pol-rpc-{uuid.uuid4().hex[:4]}")
    s.assign_role(f"/subscriptions/{s.sub}", role_ids_pol["Resource Policy Contributor"],
                  sp["objectId"] if "objectId" in sp else sp["id"])
    tok = s.client_token(sp["appId"], sp["password"])
    name, r = _assign(s, _rg_id(s, rg), _builtin(NOT_ALLOWED_TYPES),
                      {"listOfResourceTypesNotAllowed": ["Microsoft.Storage/storageAccounts"]}, token=tok)
    assert r.status_code == 201, describe(r)
    # Every policy change is audited and in the activity log.
    rows = _audit(s, "Microsoft.Authorization/policyAssignments/write", name)
    assert rows and rows[0][1] == "success", rows
    since = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    events = pol["az"]("monitor", "activity-log", "list", "--start-time", since, "--max-events", "1000")
    assert any(e["operationName"]["value"] == "Microsoft.Authorization/policyAssignments/write"
               and e["resourceId"].lower().endswith(f"/policyassignments/{name}") for e in events), \
        [e["operationName"]["value"] for e in events][:50]


def test_deleting_a_group_removes_its_assignments(pol):
    s = pol["s"]
    rg = _rg(s)
    a, r = _assign(s, _rg_id(s, rg), _builtin(NOT_ALLOWED_TYPES), {"listOfResourceTypesNotAllowed": ["x/y"]})
    assert r.status_code == 201, describe(r)
    r = s.arm_call("DELETE", _rg_id(s, rg), params={"api-version": "2021-04-01"})
    assert r.status_code in (200, 202), describe(r)
    s.create_group(rg)
    r = s.arm_call("GET", f"{_rg_id(s, rg)}/providers/Microsoft.Authorization/policyAssignments/{a}",
                   params={"api-version": POL_API})
    expect_arm_error(r, 404, "PolicyAssignmentNotFound")


@pytest.fixture(scope="module")
def role_ids_pol(pol):
    s = pol["s"]
    r = s.arm_call("GET", f"/subscriptions/{s.sub}/providers/Microsoft.Authorization/roleDefinitions",
                   params={"api-version": "2022-04-01"})
    assert r.status_code == 200, r.text
    return {d["properties"]["roleName"]: d["id"] for d in r.json()["value"]}
