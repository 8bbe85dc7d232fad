"""Microsoft.Storage accounts through the az CLI and azure-mgmt-storage, unchanged: create, show,
list, update, keys, name availability, delete, deletion with the resource group; what this cloud
cannot honour is refused with a clear error; tenants and roles are respected."""

from __future__ import annotations

import sqlite3
import time
import uuid

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.mgmt.storage import StorageManagementClient

from cieltest import DOMAIN, describe, expect_arm_error

API = "2025-08-01"


def _acct(prefix: str = "ciel") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def _group(ciel) -> str:
    name = f"st-{uuid.uuid4().hex[:8]}"
    ciel.create_group(name)
    return name


def _path(ciel, rg: str, name: str, suffix: str = "") -> str:
    return f"/subscriptions/{ciel.sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}{suffix}"


@pytest.fixture(scope="module")
def storage(ciel):
    cred = ClientSecretCredential(ciel.tenant, ciel.client_id, ciel.secret, authority=ciel.login,
                                  disable_instance_discovery=True, connection_verify=ciel.ca)
    return StorageManagementClient(cred, ciel.sub, base_url=ciel.arm, credential_scopes=[ciel.arm_scope],
                                   connection_verify=ciel.ca)


def test_az_account_lifecycle(az, ciel):
    rg = _group(ciel)
    name = _acct("az")
    free = az("storage", "account", "check-name", "-n", name)
    assert free["nameAvailable"] is True, free

    started = time.monotonic()
    a = az("storage", "account", "create", "-n", name, "-g", rg, "-l", "francecentral", "--sku", "Standard_LRS")
    assert time.monotonic() - started < 20, "account creation should not wait on polling"
    assert a["name"] == name and a["kind"] == "StorageV2" and a["sku"]["name"] == "Standard_LRS", a
    assert a["location"] == "francecentral" and a["provisioningState"] == "Succeeded", a
    assert a["allowBlobPublicAccess"] is False and a["enableHttpsTrafficOnly"] is True, a
    assert a["minimumTlsVersion"] == "TLS1_2", a
    assert a["encryption"]["services"]["blob"]["enabled"] is True, a
    assert a["encryption"]["keySource"] == "Microsoft.Storage", a
    assert a["primaryEndpoints"]["blob"].startswith(f"https://{name}.blob.core.{DOMAIN}"), a
    assert a["id"].lower() == _path(ciel, rg, name).lower(), a

    taken = az("storage", "account", "check-name", "-n", name)
    assert taken["nameAvailable"] is False and taken["reason"] == "AlreadyExists", taken

    assert any(x["name"] == name for x in az("storage", "account", "list", "-g", rg))
    assert any(x["name"] == name for x in az("storage", "account", "list"))
    assert az("storage", "account", "show", "-n", name, "-g", rg)["name"] == name

    u = az("storage", "account", "update", "-n", name, "-g", rg, "--tags", "env=prod", "--sku", "Standard_ZRS",
           "--allow-blob-public-access", "true", "--access-tier", "Cool", "--yes")
    assert u["tags"] == {"env": "prod"} and u["sku"]["name"] == "Standard_ZRS", u
    assert u["allowBlobPublicAccess"] is True and u["accessTier"] == "Cool", u

    keys = az("storage", "account", "keys", "list", "-n", name, "-g", rg)
    assert [k["keyName"] for k in keys] == ["key1", "key2"], keys
    assert all(len(k["value"]) == 88 and k["permissions"].upper() == "FULL" for k in keys), keys
    renewed = az("storage", "account", "keys", "renew", "-n", name, "-g", rg, "--key", "key1")
    assert renewed[0]["value"] != keys[0]["value"] and renewed[1]["value"] == keys[1]["value"], renewed
    again = az("storage", "account", "keys", "list", "-n", name, "-g", rg)
    assert again[0]["value"] == renewed[0]["value"], "regenerated key not kept"

    cs = az("storage", "account", "show-connection-string", "-n", name, "-g", rg)["connectionString"]
    assert f"AccountName={name}" in cs and renewed[0]["value"] in cs and f"core.{DOMAIN}" in cs, cs

    az("storage", "account", "delete", "-n", name, "-g", rg, "--yes")
    assert az("storage", "account", "check-name", "-n", name)["nameAvailable"] is True
    p = az.fails("storage", "account", "show", "-n", name, "-g", rg)
    assert "ResourceNotFound" in p.stderr or "not found" in p.stderr.lower(), p.stderr


def test_refused_settings_store_nothing(az, ciel):
    rg = _group(ciel)
    cases = [
        (["--sku", "Standard_GRS"], "SkuNotAvailable"),
        (["--sku", "Standard_RAGRS"], "SkuNotAvailable"),
        (["--sku", "Premium_LRS"], "SkuNotAvailable"),
        (["--sku", "Standard_LRS", "--https-only", "false"], "HTTPS only"),
        (["--sku", "Standard_LRS", "--min-tls-version", "TLS1_1"], None),  # the CLI itself raises it to TLS1_2
        (["--sku", "Standard_LRS", "--hns", "true"], "FeatureNotSupported"),
        (["--sku", "Standard_LRS", "--kind", "BlobStorage", "--access-tier", "Hot"], "FeatureNotSupported"),
        (["--sku", "Standard_LRS", "--default-action", "Deny"], "FeatureNotSupported"),
    ]
    for extra, expected in cases:
        name = _acct("bad")
        args = ["storage", "account", "create", "-n", name, "-g", rg, "-l", "francecentral", *extra]
        if expected is None:
            a = az(*args)
            assert a["minimumTlsVersion"] == "TLS1_2", a
            continue
        p = az.fails(*args)
        assert expected in p.stderr, f"{extra}: {p.stderr}"
        assert az("storage", "account", "check-name", "-n", name)["nameAvailable"] is True, f"{extra} stored an account"


def test_residency_and_names(ciel):
    rg = _group(ciel)
    r = ciel.arm_call("PUT", _path(ciel, rg, _acct()), params={"api-version": API},
                      json_body={"location": "westeurope", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"})
    err = expect_arm_error(r, 400, "LocationNotAvailableForResourceType")
    assert "francecentral" in err["message"], err
    for bad in ("ab", "UpperCase1", "with-dash", "x" * 25):
        r = ciel.arm_call("PUT", _path(ciel, rg, bad), params={"api-version": API},
                          json_body={"location": "francecentral", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"})
        expect_arm_error(r, 400, "AccountNameInvalid")
    r = ciel.arm_call("POST", f"/subscriptions/{ciel.sub}/providers/Microsoft.Storage/checkNameAvailability",
                      params={"api-version": API}, json_body={"name": "Bad-Name", "type": "Microsoft.Storage/storageAccounts"})
    assert r.status_code == 200 and r.json()["reason"] == "AccountNameInvalid", describe(r)
    r = ciel.arm_call("PUT", _path(ciel, rg, _acct()), params={"api-version": "2099-01-01"},
                      json_body={"location": "francecentral", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"})
    expect_arm_error(r, 400, "InvalidApiVersionParameter")


def test_sdk_account_lifecycle(storage, ciel):
    rg = _group(ciel)
    name = _acct("sdk")
    # These SDK models take plain dicts in the wire shape (camelCase under "properties").
    poller = storage.storage_accounts.begin_create(rg, name, {
        "location": "francesouth", "sku": {"name": "Standard_ZRS"}, "kind": "StorageV2", "tags": {"team": "data"},
        "properties": {"allowBlobPublicAccess": False, "minimumTlsVersion": "TLS1_3"}})
    started = time.monotonic()
    a = poller.result()
    assert time.monotonic() - started < 5, "the SDK should not sleep on a finished creation"
    assert a.name == name and a.location == "francesouth" and a.sku.name == "Standard_ZRS" and a.tags == {"team": "data"}
    assert a.properties.provisioning_state == "Succeeded" and a.properties.enable_https_traffic_only is True
    assert a.properties.minimum_tls_version == "TLS1_3"
    got = storage.storage_accounts.get_properties(rg, name)
    assert got.id == a.id and got.properties.primary_endpoints.blob == a.properties.primary_endpoints.blob
    assert name in [x.name for x in storage.storage_accounts.list_by_resource_group(rg)]
    assert name in [x.name for x in storage.storage_accounts.list()]
    # The SDK's models are mappings, whose keys() method hides the `keys` field: index it.
    keys = storage.storage_accounts.list_keys(rg, name)["keys"]
    assert [k["keyName"] for k in keys] == ["key1", "key2"]
    new = storage.storage_accounts.regenerate_key(rg, name, {"keyName": "key2"})["keys"]
    assert new[1]["value"] != keys[1]["value"] and new[0]["value"] == keys[0]["value"]
    upd = storage.storage_accounts.update(rg, name, {"tags": {"team": "ops"}, "properties": {"accessTier": "Cold"}})
    assert upd.tags == {"team": "ops"} and upd.properties.access_tier == "Cold"
    avail = storage.storage_accounts.check_name_availability({"name": name, "type": "Microsoft.Storage/storageAccounts"})
    assert avail.name_available is False and avail.reason == "AlreadyExists"
    with pytest.raises(HttpResponseError) as e:
        storage.storage_accounts.update(rg, name, {"sku": {"name": "Standard_GRS"}})
    assert "SkuNotAvailable" in str(e.value)
    assert storage.storage_accounts.get_properties(rg, name).sku.name == "Standard_ZRS", "a refused update changed the account"
    storage.storage_accounts.delete(rg, name)
    assert name not in [x.name for x in storage.storage_accounts.list_by_resource_group(rg)]


def test_group_delete_destroys_accounts_and_their_keys(ciel):
    rg = _group(ciel)
    name = _acct("gd")
    r = ciel.arm_call("PUT", _path(ciel, rg, name), params={"api-version": API},
                      json_body={"location": "francecentral", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"})
    assert r.status_code == 200, describe(r)
    # The group holds provider data: deletion is a long-running operation, polled to its end.
    r = ciel.arm_call("DELETE", f"/subscriptions/{ciel.sub}/resourcegroups/{rg}", params={"api-version": "2021-04-01"})
    assert r.status_code == 202, describe(r)
    assert int(r.headers["Retry-After"]) >= 1 and r.headers["Location"].startswith("https://"), describe(r)
    deadline = time.monotonic() + 30
    while True:
        p = ciel.arm_call("GET", r.headers["Location"])
        if p.status_code == 200:
            break
        assert p.status_code == 202 and int(p.headers["Retry-After"]) >= 1, describe(p)
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert ciel.arm_call("GET", _path(ciel, rg, name), params={"api-version": API}).status_code == 404
    r = ciel.arm_call("POST", f"/subscriptions/{ciel.sub}/providers/Microsoft.Storage/checkNameAvailability",
                      params={"api-version": API}, json_body={"name": name, "type": "Microsoft.Storage/storageAccounts"})
    assert r.json()["nameAvailable"] is True
    # Crypto-erasure: no row keeps the account's sealed keys.
    db = sqlite3.connect(f"file:{ciel.data_dir}/ciel.db?mode=ro", uri=True)
    left = db.execute("SELECT count(*) FROM resources WHERE lower(name) = ?", (name,)).fetchone()[0]
    db.close()
    assert left == 0


def test_tenants_and_roles(ciel, tenant_b, role_ids):
    rg = _group(ciel)
    name = _acct("iso")
    r = ciel.arm_call("PUT", _path(ciel, rg, name), params={"api-version": API},
                      json_body={"location": "francecentral", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"})
    assert r.status_code == 200, describe(r)

    b = tenant_b["sp"]
    b_token = ciel.client_token(b["appId"], b["password"], tenant=tenant_b["tenantId"])
    # Tenant B cannot see or touch A's account.
    for method, suffix in (("GET", ""), ("POST", "/listKeys"), ("DELETE", "")):
        resp = ciel.request(method, f"{ciel.arm}{_path(ciel, rg, name, suffix).lstrip('/')}?api-version={API}", token=b_token)
        expect_arm_error(resp, (403, 404))
    reader = ciel.create_sp(f"st-reader-{uuid.uuid4().hex[:6]}")
    ciel.assign_role(f"/subscriptions/{ciel.sub}/resourceGroups/{rg}", role_ids["Reader"], reader["objectId"])
    tok = ciel.client_token(reader["appId"], reader["password"])
    ok = ciel.request("GET", f"{ciel.arm}{_path(ciel, rg, name).lstrip('/')}?api-version={API}", token=tok)
    assert ok.status_code == 200, describe(ok)
    for method, suffix, body in (("POST", "/listKeys", None), ("POST", "/regenerateKey", {"keyName": "key1"}),
                                 ("PATCH", "", {"tags": {"x": "y"}}), ("DELETE", "", None)):
        resp = ciel.request(method, f"{ciel.arm}{_path(ciel, rg, name, suffix).lstrip('/')}?api-version={API}",
                            token=tok, json_body=body)
        expect_arm_error(resp, 403, "AuthorizationFailed")

    # Key reads are on the audit record.
    ciel.arm_call("POST", _path(ciel, rg, name, "/listKeys"), params={"api-version": API})
    db = sqlite3.connect(f"file:{ciel.data_dir}/ciel.db?mode=ro", uri=True)
    n = db.execute("SELECT count(*) FROM audit_log WHERE action = 'Microsoft.Storage/storageAccounts/listKeys/action' "
                   "AND target LIKE ?", (f"%/{name}",)).fetchone()[0]
    db.close()
    assert n >= 1
