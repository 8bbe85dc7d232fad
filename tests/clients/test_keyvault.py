"""Key Vault driven by its real clients: azure-mgmt-keyvault for vaults, today's
azure-keyvault-secrets (api-version 2026-04-01) and azure-keyvault-keys (2025-07-01) for the data
plane — host-style vault URLs, the challenge's resource check left on — checked against the
`cryptography` package, and the az CLI (api-version 7.4). The data-plane suite runs on both key
custody backends: software, and PKCS#11 on a SoftHSM2 token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

# Today's data-plane SDKs are installed apart from azure-cli's pinned ones (scripts/test).
_LATEST = os.environ.get("CIEL_SDK_LATEST") or str(Path(__file__).resolve().parents[2] / ".venv" / "sdk-latest")
if Path(_LATEST).is_dir():
    sys.path.insert(0, _LATEST)

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError  # noqa: E402
from azure.identity import ClientSecretCredential  # noqa: E402
from azure.keyvault.keys import (KeyClient, KeyCurveName, KeyRotationLifetimeAction, KeyRotationPolicy,
                                  KeyRotationPolicyAction)  # noqa: E402
from azure.keyvault.keys import __version__ as KEYS_VERSION  # noqa: E402
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm, KeyWrapAlgorithm, SignatureAlgorithm  # noqa: E402
from azure.keyvault.secrets import SecretClient  # noqa: E402
from azure.keyvault.secrets import __version__ as SECRETS_VERSION  # noqa: E402
from azure.mgmt.keyvault import KeyVaultManagementClient  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature  # noqa: E402

from azure.mgmt.storage.models import (Encryption, Identity, KeyVaultProperties, Sku,  # noqa: E402
                                       StorageAccountCreateParameters, StorageAccountUpdateParameters)

from cieltest import DOMAIN, b64url, b64url_decode, claims_of, describe, missing_prerequisite  # noqa: E402

SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
CRYPTO_OFFICER = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603"
CRYPTO_USER = "12338af0-0e69-4776-bea7-57ae8d297424"
KV_ADMIN = "00482a5a-887f-4fb3-b363-3b7fe8e74483"
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


def test_the_latest_sdks_are_the_ones_under_test():
    assert SECRETS_VERSION == "4.12.0", f"azure-keyvault-secrets {SECRETS_VERSION}: run through scripts/test"
    assert KEYS_VERSION == "4.11.3", f"azure-keyvault-keys {KEYS_VERSION}: run through scripts/test"


def _role(server, guid: str) -> str:
    return f"/subscriptions/{server.sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}"


def _cred(server, sp: dict | None = None, tenant: str | None = None):
    if sp is None:
        return ClientSecretCredential(server.tenant, server.client_id, server.secret, authority=server.login,
                                      disable_instance_discovery=True, connection_verify=server.ca)
    return ClientSecretCredential(tenant or server.tenant, sp["appId"], sp["password"], authority=server.login,
                                  disable_instance_discovery=True, connection_verify=server.ca)


def _mgmt(server) -> KeyVaultManagementClient:
    return KeyVaultManagementClient(_cred(server), server.sub, base_url=server.arm,
                                    credential_scopes=[server.arm_scope], connection_verify=server.ca)


def _vault_body(server, **props):
    p = {"tenantId": server.tenant, "sku": {"family": "A", "name": "standard"}}
    p.update(props)
    return {"location": "francecentral", "properties": p}


def _admin_oid(server) -> str:
    return claims_of(server.admin_token())["oid"]


def _new_vault(server, rg: str, **props) -> dict:
    name = f"kv{uuid.uuid4().hex[:12]}"
    poller = _mgmt(server).vaults.begin_create_or_update(rg, name, _vault_body(server, **props))
    v = poller.result()
    return {"name": name, "id": v.id, "uri": v.properties.vault_uri, "model": v}


@pytest.fixture(scope="module")
def hsm_root(tmp_path_factory):
    return tmp_path_factory.mktemp("hsm")


@pytest.fixture(scope="module", params=["software", "pkcs11"])
def kv(request, ciel, servers, hsm_root):
    """A server of each custody backend with a fresh RBAC vault, the admin SP as Key Vault
    Administrator on it, and clients of the latest SDKs."""
    if request.param == "software":
        server = ciel
    else:
        if not Path(SOFTHSM).exists() or not shutil.which("softhsm2-util"):
            if os.environ.get("CIEL_SKIP_HSM_TESTS") == "1":
                pytest.skip("CIEL_SKIP_HSM_TESTS=1 and SoftHSM2 is not installed")
            missing_prerequisite("SoftHSM2 (Debian package softhsm2) is needed for the PKCS#11 custody tests")
        tokens = hsm_root / "tokens"
        tokens.mkdir(parents=True, exist_ok=True)
        conf = hsm_root / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
        env = {"SOFTHSM2_CONF": str(conf), "CIEL_TEST_HSM_PIN": "ciel-user-pin"}
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "ciel", "--pin", "ciel-user-pin",
                        "--so-pin", "ciel-so-pin"], check=True, capture_output=True, env={**os.environ, **env})
        server = servers.new("hsm", env)
        server.data_dir.mkdir(parents=True, exist_ok=True)
        (server.data_dir / "ciel.toml").write_text(
            f'[keyvault.custody]\nbackend = "pkcs11"\nmodule = "{SOFTHSM}"\ntoken_label = "ciel"\n'
            f'pin_env = "CIEL_TEST_HSM_PIN"\n')
        server.start()
    rg = f"kv-{request.param}-{uuid.uuid4().hex[:6]}"
    server.create_group(rg)
    v = _new_vault(server, rg)
    server.assign_role(v["id"], _role(server, KV_ADMIN), _admin_oid(server))
    cred = _cred(server)
    ctx = {
        "backend": request.param,
        "server": server,
        "rg": rg,
        "vault": v,
        "cred": cred,
        "secrets": SecretClient(v["uri"], cred, connection_verify=server.ca),
        "keys": KeyClient(v["uri"], cred, connection_verify=server.ca),
    }
    yield ctx
    if server is not ciel:
        server.stop()


def _token(server, scope: str | None = None, sp: dict | None = None, tenant: str | None = None) -> str:
    scope = scope or (server.host_url("vault") + "/.default")
    if sp is None:
        return server.client_token(server.client_id, server.secret, server.tenant, scope)
    return server.client_token(sp["appId"], sp["password"], tenant or server.tenant, scope)


def _rest(kv, method: str, path: str, body=None, token: str | None = "admin", api="2025-07-01", **kw):
    s = kv["server"]
    url = kv["vault"]["uri"].rstrip("/") + path
    if token == "admin":
        token = _token(s)
    params = {"api-version": api} if api else {}
    return s.request(method, url, token=token, json_body=body, params=params, **kw)


def _audit(server, action: str, target_contains: str) -> list[tuple]:
    db = sqlite3.connect(f"file:{server.data_dir}/ciel.db?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT actor, outcome, details FROM audit_log WHERE action = ? AND target LIKE ?",
                          (action, f"%{target_contains}%")).fetchall()
    finally:
        db.close()


# --------------------------------------------------------------------------------------------
# Vaults (control plane)
# --------------------------------------------------------------------------------------------

def test_vault_lifecycle_with_the_management_sdk(ciel):
    m = _mgmt(ciel)
    rg = f"kv-mgmt-{uuid.uuid4().hex[:6]}"
    ciel.create_group(rg)
    name = f"kv{uuid.uuid4().hex[:12]}"
    assert m.vaults.check_name_availability({"name": name, "type": "Microsoft.KeyVault/vaults"}).name_available
    bad = m.vaults.check_name_availability({"name": "1-bad--name", "type": "Microsoft.KeyVault/vaults"})
    assert not bad.name_available and bad.reason == "AccountNameInvalid"
    v = m.vaults.begin_create_or_update(rg, name, _vault_body(ciel, tags=None)).result()
    assert v.properties.vault_uri == f"https://{name}.vault.{DOMAIN}" + ("" if ciel.port == 443 else f":{ciel.port}") + "/"
    assert v.properties.enable_rbac_authorization is True
    assert v.properties.enable_soft_delete is True and v.properties.soft_delete_retention_in_days == 90
    assert v.properties.tenant_id == ciel.tenant and v.location == "francecentral"
    taken = m.vaults.check_name_availability({"name": name.upper(), "type": "Microsoft.KeyVault/vaults"})
    assert not taken.name_available and taken.reason == "AlreadyExists"
    assert m.vaults.get(rg, name).id == v.id
    assert name in [x.name for x in m.vaults.list_by_resource_group(rg)]
    assert name in [x.name for x in m.vaults.list_by_subscription()]
    assert name in [x.name for x in m.vaults.list()]  # the generic resources listing
    upd = m.vaults.update(rg, name, {"tags": {"env": "test"}, "properties": {"enablePurgeProtection": True}})
    assert upd.tags == {"env": "test"} and upd.properties.enable_purge_protection is True

    # Settings this cloud refuses, with nothing stored.
    for props, code in [({"enableSoftDelete": False}, "BadRequest"), ({"softDeleteRetentionInDays": 120}, "BadRequest"),
                        ({"sku": {"family": "A", "name": "premium"}}, "SkuNotAvailable"),
                        ({"tenantId": str(uuid.uuid4())}, "BadRequest")]:
        with pytest.raises(HttpResponseError) as e:
            m.vaults.begin_create_or_update(rg, f"kv{uuid.uuid4().hex[:12]}", _vault_body(ciel, **props)).result()
        assert e.value.status_code == 400 and e.value.error.code == code, (props, e.value.error.code)
    r = ciel.arm_call("PUT", f"/subscriptions/{ciel.sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/kvwest{uuid.uuid4().hex[:6]}",
                      params={"api-version": "2026-02-01"}, json_body={**_vault_body(ciel), "location": "westeurope"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "LocationNotAvailableForResourceType", describe(r)
    with pytest.raises(HttpResponseError) as e:
        m.vaults.update(rg, name, {"properties": {"enablePurgeProtection": False}})
    assert e.value.status_code == 400
    with pytest.raises(HttpResponseError) as e:
        m.vaults.begin_create_or_update(rg, "ab", _vault_body(ciel)).result()
    assert e.value.status_code == 400 and e.value.error.code == "VaultNameNotValid"

    # Delete: soft. The name stays reserved; purge protection forbids an early purge.
    m.vaults.delete(rg, name)
    with pytest.raises(ResourceNotFoundError):
        m.vaults.get(rg, name)
    d = m.vaults.get_deleted(name, "francecentral")
    assert d.properties.vault_id == v.id and d.properties.purge_protection_enabled is True
    assert name in [x.name for x in m.vaults.list_deleted()]
    with pytest.raises(HttpResponseError) as e:
        m.vaults.begin_create_or_update(rg, name, _vault_body(ciel)).result()
    assert e.value.status_code == 409
    with pytest.raises(HttpResponseError) as e:
        m.vaults.begin_purge_deleted(name, "francecentral").result()
    assert e.value.status_code == 409
    # Recover: the same vault back.
    back = m.vaults.begin_create_or_update(rg, name, {"location": "francecentral", "properties": {
        "tenantId": ciel.tenant, "sku": {"family": "A", "name": "standard"}, "createMode": "recover"}}).result()
    assert back.id == v.id and back.tags == {"env": "test"}
    with pytest.raises(ResourceNotFoundError):
        m.vaults.get_deleted(name, "francecentral")


def test_deleted_vault_purge_frees_the_name_and_destroys_data(ciel):
    m = _mgmt(ciel)
    rg = f"kv-purge-{uuid.uuid4().hex[:6]}"
    ciel.create_group(rg)
    v = _new_vault(ciel, rg)
    ciel.assign_role(v["id"], _role(ciel, KV_ADMIN), _admin_oid(ciel))
    sc = SecretClient(v["uri"], _cred(ciel), connection_verify=ciel.ca)
    sc.set_secret("kept", "before-delete")
    m.vaults.delete(rg, v["name"])
    # A deleted vault does not answer on its data plane.
    with pytest.raises(ResourceNotFoundError):
        sc.get_secret("kept")
    m.vaults.begin_create_or_update(rg, v["name"], {"location": "francecentral", "properties": {
        "tenantId": ciel.tenant, "sku": {"family": "A", "name": "standard"}, "createMode": "recover"}}).result()
    assert sc.get_secret("kept").value == "before-delete"
    m.vaults.delete(rg, v["name"])
    m.vaults.begin_purge_deleted(v["name"], "francecentral").result()
    assert v["name"] not in [x.name for x in m.vaults.list_deleted()]
    # The name is free again; the new vault has none of the old data.
    v2 = m.vaults.begin_create_or_update(rg, v["name"], _vault_body(ciel)).result()
    assert v2.id == v["id"]  # the admin's role assignment at this scope still applies
    with pytest.raises(ResourceNotFoundError):
        SecretClient(v["uri"], _cred(ciel), connection_verify=ciel.ca).get_secret("kept")
    assert _audit(ciel, "Microsoft.KeyVault/locations/deletedVaults/purge/action", v["name"])


def test_deleting_the_group_soft_deletes_its_vaults(ciel):
    m = _mgmt(ciel)
    rg = f"kv-rg-{uuid.uuid4().hex[:6]}"
    ciel.create_group(rg)
    v = _new_vault(ciel, rg)
    r = ciel.arm_call("DELETE", f"/subscriptions/{ciel.sub}/resourcegroups/{rg}", params={"api-version": "2021-04-01"})
    assert r.status_code in (200, 202), describe(r)
    for _ in range(100):
        if ciel.get_group(rg).status_code == 404:
            break
        time.sleep(0.2)
    assert m.vaults.get_deleted(v["name"], "francecentral").properties.vault_id == v["id"]


# --------------------------------------------------------------------------------------------
# The data plane: challenge, authentication, errors
# --------------------------------------------------------------------------------------------

def test_challenge_and_refusals(kv):
    s = kv["server"]
    bare = requests.get(kv["vault"]["uri"] + "secrets", params={"api-version": "2026-04-01"}, verify=s.ca, timeout=30)
    assert bare.status_code == 401
    ch = bare.headers["WWW-Authenticate"]
    resource = "https://vault." + DOMAIN + ("" if s.port == 443 else f":{s.port}")
    assert f'resource="{resource}"' in ch and f'authorization="{s.login}/{s.tenant}"' in ch, ch
    # A token for Resource Manager is not a token for the vault.
    r = _rest(kv, "GET", "/secrets", token=s.admin_token(), api="2026-04-01")
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers, describe(r)
    r = _rest(kv, "GET", "/secrets", token="garbage.token.value", api="2026-04-01")
    assert r.status_code == 401
    assert _audit(s, "Microsoft.KeyVault/vaults/authenticate", kv["vault"]["name"])
    r = _rest(kv, "GET", "/secrets", api="1999-01-01")
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadParameter", describe(r)
    r = _rest(kv, "GET", "/secrets", api=None)
    assert r.status_code == 400
    r = s.request("GET", f"https://nosuchvault{uuid.uuid4().hex[:6]}.vault.{DOMAIN}" + ("" if s.port == 443 else f":{s.port}") + "/secrets",
                  token=_token(s), params={"api-version": "7.4"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "VaultNotFound"
    r = _rest(kv, "GET", "/certificates", api="7.4")
    assert r.status_code == 400 and r.json()["error"]["code"] == "FeatureNotSupported"


def test_another_tenants_credential_is_refused_by_the_sdk(kv, tenant_b):
    s = kv["server"]
    if s.name == "hsm":
        pytest.skip("tenant B lives on the shared server")
    b = tenant_b["sp"]
    sc = SecretClient(kv["vault"]["uri"], _cred(s, b, tenant_b["tenantId"]), connection_verify=s.ca)
    with pytest.raises(ClientAuthenticationError):
        sc.get_secret("anything")
    # With the vault's tenant named in its token request, tenant B's SP gets no token at all;
    # a token of tenant B sent by hand is refused with the challenge.
    r = _rest(kv, "GET", "/secrets", token=_token(s, sp=b, tenant=tenant_b["tenantId"]), api="2026-04-01")
    assert r.status_code == 401, describe(r)


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------

def test_secrets_full_cycle(kv):
    sc: SecretClient = kv["secrets"]
    name = f"db-password-{uuid.uuid4().hex[:6]}"
    s1 = sc.set_secret(name, "first", content_type="text/plain", tags={"app": "billing"})
    assert s1.value == "first" and s1.properties.content_type == "text/plain" and s1.properties.tags == {"app": "billing"}
    assert s1.id.startswith(kv["vault"]["uri"] + "secrets/" + name + "/")
    assert s1.properties.recovery_level == "Recoverable+Purgeable" and s1.properties.recoverable_days == 90
    s2 = sc.set_secret(name, "second", expires_on=None)
    assert sc.get_secret(name).value == "second"
    assert sc.get_secret(name, s1.properties.version).value == "first"
    versions = {p.version for p in sc.list_properties_of_secret_versions(name)}
    assert versions == {s1.properties.version, s2.properties.version}
    assert name in [p.name for p in sc.list_properties_of_secrets()]
    # Trailing slash (latest) through the raw API too.
    r = _rest(kv, "GET", f"/secrets/{name}/", api="2026-04-01")
    assert r.status_code == 200 and r.json()["value"] == "second", describe(r)
    # Update: attributes, tags, content type.
    p = sc.update_secret_properties(name, s1.properties.version, enabled=False, tags={"rotated": "yes"})
    assert p.enabled is False and p.tags == {"rotated": "yes"}
    with pytest.raises(HttpResponseError) as e:
        sc.get_secret(name, s1.properties.version)
    assert e.value.status_code == 403
    # Delete (soft) → deleted → recover → value back.
    deleted = sc.begin_delete_secret(name).result()
    assert deleted.recovery_id.endswith(f"/deletedsecrets/{name}") and deleted.scheduled_purge_date
    with pytest.raises(ResourceNotFoundError):
        sc.get_secret(name)
    assert sc.get_deleted_secret(name).name == name
    assert name in [d.name for d in sc.list_deleted_secrets()]
    with pytest.raises(HttpResponseError) as e:
        sc.set_secret(name, "while-deleted")
    assert e.value.status_code == 409
    sc.begin_recover_deleted_secret(name).result()
    assert sc.get_secret(name).value == "second"
    # Backup, delete, purge, restore: every version back.
    blob = sc.backup_secret(name)
    sc.begin_delete_secret(name).result()
    sc.purge_deleted_secret(name)
    with pytest.raises(ResourceNotFoundError):
        sc.get_deleted_secret(name)
    restored = sc.restore_secret_backup(blob)
    assert restored.name == name
    assert sc.get_secret(name).value == "second"
    assert {p.version: p.enabled for p in sc.list_properties_of_secret_versions(name)} == {
        s1.properties.version: False, s2.properties.version: True}
    with pytest.raises(HttpResponseError) as e:
        sc.restore_secret_backup(blob)
    assert e.value.status_code == 409
    tampered = bytearray(blob)
    tampered[len(tampered) // 2] ^= 0x01
    with pytest.raises(HttpResponseError) as e:
        sc.restore_secret_backup(bytes(tampered))
    assert e.value.status_code == 400
    # Reads of values are audited.
    rows = _audit(kv["server"], "Microsoft.KeyVault/vaults/secrets/getSecret/action", name)
    assert len(rows) >= 3 and all(r[1] == "success" for r in rows)


def test_secret_bad_input_changes_nothing(kv):
    sc: SecretClient = kv["secrets"]
    for bad in ["bad_name", "x" * 128, "dot.name"]:
        with pytest.raises(HttpResponseError) as e:
            sc.set_secret(bad, "v")
        assert e.value.status_code == 400, bad
    name = f"big-{uuid.uuid4().hex[:6]}"
    with pytest.raises(HttpResponseError) as e:
        sc.set_secret(name, "x" * (25 * 1024 + 1))
    assert e.value.status_code == 400 and "25600" in str(e.value)
    sc.set_secret(name, "x" * (25 * 1024))
    assert len(sc.get_secret(name).value) == 25 * 1024
    with pytest.raises(HttpResponseError):
        sc.set_secret(name, "v", tags={f"t{i}": "v" for i in range(16)})
    r = _rest(kv, "PUT", f"/secrets/{name}", body={"value": 42}, api="2026-04-01")
    assert r.status_code == 400
    r = _rest(kv, "PUT", f"/secrets/{name}", body=None, data="{not json", api="2026-04-01",
              headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert len(list(sc.list_properties_of_secret_versions(name))) == 1
    with pytest.raises(ResourceNotFoundError):
        sc.get_secret(f"never-{uuid.uuid4().hex[:6]}")


def test_secret_lists_page_through_next_links(kv):
    sc: SecretClient = kv["secrets"]
    prefix = f"page-{uuid.uuid4().hex[:4]}-"
    for i in range(30):
        sc.set_secret(f"{prefix}{i:02d}", str(i))
    names = [p.name for p in sc.list_properties_of_secrets(max_page_size=7) if p.name.startswith(prefix)]
    assert names == [f"{prefix}{i:02d}" for i in range(30)]
    r = kv["server"].request("GET", kv["vault"]["uri"] + "secrets", token=_token(kv["server"]),
                             params={"api-version": "2026-04-01", "maxresults": "26"})
    assert r.status_code == 400


def test_rbac_roles_on_secrets(kv):
    s = kv["server"]
    reader, officer, nobody = s.create_sp(), s.create_sp(), s.create_sp()
    s.assign_role(kv["vault"]["id"], _role(s, SECRETS_USER), reader["objectId"])
    s.assign_role(kv["vault"]["id"], _role(s, SECRETS_OFFICER), officer["objectId"])
    uri = kv["vault"]["uri"]
    as_officer = SecretClient(uri, _cred(s, officer), connection_verify=s.ca)
    as_reader = SecretClient(uri, _cred(s, reader), connection_verify=s.ca)
    as_nobody = SecretClient(uri, _cred(s, nobody), connection_verify=s.ca)
    name = f"rbac-{uuid.uuid4().hex[:6]}"
    as_officer.set_secret(name, "v1")
    assert as_reader.get_secret(name).value == "v1"
    with pytest.raises(HttpResponseError) as e:
        as_reader.set_secret(name, "v2")
    assert e.value.status_code == 403 and e.value.error.code == "Forbidden"
    with pytest.raises(HttpResponseError) as e:
        as_nobody.get_secret(name)
    assert e.value.status_code == 403
    # Keys are not secrets: a secrets officer holds no key permission.
    with pytest.raises(HttpResponseError) as e:
        KeyClient(uri, _cred(s, officer), connection_verify=s.ca).create_rsa_key(f"k-{uuid.uuid4().hex[:6]}")
    assert e.value.status_code == 403
    denials = _audit(s, "Microsoft.KeyVault/vaults/secrets/setSecret/action", name)
    assert any(r[1] == "denied" for r in denials)


def test_access_policies_instead_of_rbac(kv):
    s = kv["server"]
    sp = s.create_sp()
    v = _new_vault(s, kv["rg"], enableRbacAuthorization=False, accessPolicies=[
        {"tenantId": s.tenant, "objectId": sp["objectId"], "permissions": {"secrets": ["get", "set", "list"]}}])
    assert v["model"].properties.enable_rbac_authorization is False
    sc = SecretClient(v["uri"], _cred(s, sp), connection_verify=s.ca)
    sc.set_secret("policy-secret", "p")
    assert sc.get_secret("policy-secret").value == "p"
    with pytest.raises(HttpResponseError) as e:
        sc.begin_delete_secret("policy-secret").result()
    assert e.value.status_code == 403
    # RBAC roles do not count on an access-policy vault.
    with pytest.raises(HttpResponseError):
        SecretClient(v["uri"], _cred(s), connection_verify=s.ca).get_secret("policy-secret")
    # add/remove through the management API.
    m = _mgmt(s)
    m.vaults.update_access_policy(kv["rg"], v["name"], "add", {"properties": {"accessPolicies": [
        {"tenantId": s.tenant, "objectId": sp["objectId"], "permissions": {"secrets": ["delete"]}}]}})
    sc.begin_delete_secret("policy-secret").result()
    m.vaults.update_access_policy(kv["rg"], v["name"], "remove", {"properties": {"accessPolicies": [
        {"tenantId": s.tenant, "objectId": sp["objectId"], "permissions": {}}]}})
    with pytest.raises(HttpResponseError) as e:
        sc.set_secret("policy-secret-2", "p")
    assert e.value.status_code == 403


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------

def _public_rsa(key) -> rsa.RSAPublicKey:
    n = int.from_bytes(key.key.n, "big")
    e = int.from_bytes(key.key.e, "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


def _public_ec(key) -> ec.EllipticCurvePublicKey:
    curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[key.key.crv]
    return ec.EllipticCurvePublicNumbers(int.from_bytes(key.key.x, "big"), int.from_bytes(key.key.y, "big"),
                                         curve).public_key()


HASHES = {"256": (hashes.SHA256(), hashlib.sha256), "384": (hashes.SHA384(), hashlib.sha384),
          "512": (hashes.SHA512(), hashlib.sha512)}


@pytest.mark.parametrize("size", [2048, 3072])
def test_rsa_keys_sign_and_decrypt_checked_locally(kv, size):
    kc: KeyClient = kv["keys"]
    name = f"rsa{size}-{uuid.uuid4().hex[:6]}"
    key = kc.create_rsa_key(name, size=size)
    assert key.key_type == "RSA" and len(key.key.n) * 8 == size
    assert set(key.key_operations) == {"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
    pub = _public_rsa(key)
    cc = CryptographyClient(key, kv["cred"], connection_verify=kv["server"].ca)
    msg = b"Ciel signs in France"
    for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"):
        h, hf = HASHES[alg[2:]]
        digest = hf(msg).digest()
        sig = cc.sign(SignatureAlgorithm(alg), digest).signature
        pad = padding.PKCS1v15() if alg.startswith("RS") else padding.PSS(padding.MGF1(h), h.digest_size)
        pub.verify(sig, msg, pad, h)  # raises if wrong
        # And the service's own verify (not the SDK's local one).
        r = _rest(kv, "POST", f"/keys/{name}/{key.properties.version}/verify",
                  body={"alg": alg, "digest": b64url(digest), "value": b64url(sig)})
        assert r.status_code == 200 and r.json()["value"] is True, describe(r)
        r = _rest(kv, "POST", f"/keys/{name}/{key.properties.version}/verify",
                  body={"alg": alg, "digest": b64url(hf(b"other").digest()), "value": b64url(sig)})
        assert r.status_code == 200 and r.json()["value"] is False, describe(r)
    for alg, pad in [("RSA-OAEP", padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)),
                     ("RSA-OAEP-256", padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)),
                     ("RSA1_5", padding.PKCS1v15())]:
        ct = pub.encrypt(b"a data key of 32 bytes, no more!", pad)
        assert cc.decrypt(EncryptionAlgorithm(alg), ct).plaintext == b"a data key of 32 bytes, no more!"
        assert cc.unwrap_key(KeyWrapAlgorithm(alg), ct).key == b"a data key of 32 bytes, no more!"
        # The service's encrypt, decrypted by the service.
        r = _rest(kv, "POST", f"/keys/{name}/encrypt", body={"alg": alg, "value": b64url(b"round trip")})
        assert r.status_code == 200, describe(r)
        back = cc.decrypt(EncryptionAlgorithm(alg), b64url_decode(r.json()["value"]))
        assert back.plaintext == b"round trip"
    # Bad input: nothing decrypts a tampered ciphertext; algorithms must fit the key.
    ct = bytearray(pub.encrypt(b"x", padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)))
    ct[10] ^= 0xFF
    with pytest.raises(HttpResponseError) as e:
        cc.decrypt(EncryptionAlgorithm.rsa_oaep_256, bytes(ct))
    assert e.value.status_code == 400
    with pytest.raises(HttpResponseError) as e:
        cc.decrypt(EncryptionAlgorithm.rsa_oaep_256, b"short")
    assert e.value.status_code == 400
    with pytest.raises(HttpResponseError) as e:
        cc.sign(SignatureAlgorithm.es256, hashlib.sha256(msg).digest())
    assert e.value.status_code == 400
    with pytest.raises(HttpResponseError) as e:
        cc.sign(SignatureAlgorithm.rs256, b"not a sha-256 digest")
    assert e.value.status_code == 400
    rows = _audit(kv["server"], "Microsoft.KeyVault/vaults/keys/sign/action", name)
    assert len(rows) >= 6


@pytest.mark.parametrize("curve,alg,hname", [("P-256", "ES256", "256"), ("P-384", "ES384", "384"),
                                             ("P-521", "ES512", "512")])
def test_ec_keys_sign_checked_locally(kv, curve, alg, hname):
    kc: KeyClient = kv["keys"]
    key = kc.create_ec_key(f"ec-{uuid.uuid4().hex[:6]}", curve=KeyCurveName(curve))
    assert key.key_type == "EC" and key.key.crv == curve
    assert set(key.key_operations) == {"sign", "verify"}
    pub = _public_ec(key)
    cc = CryptographyClient(key, kv["cred"], connection_verify=kv["server"].ca)
    h, hf = HASHES[hname]
    digest = hf(b"message").digest()
    sig = cc.sign(SignatureAlgorithm(alg), digest).signature
    half = len(sig) // 2
    der = encode_dss_signature(int.from_bytes(sig[:half], "big"), int.from_bytes(sig[half:], "big"))
    pub.verify(der, b"message", ec.ECDSA(h))
    assert cc.verify(SignatureAlgorithm(alg), digest, sig).is_valid
    with pytest.raises(HttpResponseError) as e:
        cc.sign(SignatureAlgorithm.rs256, hashlib.sha256(b"m").digest())
    assert e.value.status_code == 400
    with pytest.raises(HttpResponseError) as e:
        cc.decrypt(EncryptionAlgorithm.rsa_oaep, b"x" * 64)
    assert e.value.status_code in (400, 403)


def test_rsa_4096_and_bad_key_requests(kv):
    kc: KeyClient = kv["keys"]
    key = kc.create_rsa_key(f"big-{uuid.uuid4().hex[:6]}", size=4096)
    assert len(key.key.n) * 8 == 4096
    for body in [{"kty": "RSA", "key_size": 1024}, {"kty": "EC", "crv": "P-192"}, {"kty": "oct"}, {"kty": "RSA-HSM"},
                 {"kty": "RSA", "key_ops": ["fly"]}, {"kty": "EC", "key_ops": ["encrypt"]}, {}]:
        r = _rest(kv, "POST", f"/keys/bad-{uuid.uuid4().hex[:6]}/create", body=body)
        assert r.status_code == 400, (body, describe(r))
    with pytest.raises(HttpResponseError) as e:
        kc.create_rsa_key("bad_name")
    assert e.value.status_code == 400


def test_key_lifecycle_rotation_and_states(kv):
    kc: KeyClient = kv["keys"]
    name = f"life-{uuid.uuid4().hex[:6]}"
    k1 = kc.create_rsa_key(name, tags={"owner": "ops"})
    k2 = kc.rotate_key(name)
    assert k2.properties.version != k1.properties.version and k2.properties.tags == {"owner": "ops"}
    assert {p.version for p in kc.list_properties_of_key_versions(name)} == {k1.properties.version, k2.properties.version}
    assert kc.get_key(name).properties.version == k2.properties.version
    assert name in [p.name for p in kc.list_properties_of_keys()]
    policy = kc.update_key_rotation_policy(name, KeyRotationPolicy(lifetime_actions=[
        KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P90D")], expires_in="P1Y"))
    assert policy.expires_in == "P1Y" and policy.lifetime_actions[0].action == KeyRotationPolicyAction.rotate
    got = kc.get_key_rotation_policy(name)
    assert got.lifetime_actions[0].time_after_create == "P90D"
    k3 = kc.rotate_key(name)
    assert k3.properties.expires_on is not None
    with pytest.raises(HttpResponseError):
        kc.update_key_rotation_policy(name, KeyRotationPolicy(lifetime_actions=[
            KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="PT1H")]))
    # Disabled and expired keys refuse private-key operations; nothing changes.
    cc = CryptographyClient(kc.get_key(name), kv["cred"], connection_verify=kv["server"].ca)
    kc.update_key_properties(name, k3.properties.version, enabled=False)
    with pytest.raises(HttpResponseError) as e:
        cc.sign(SignatureAlgorithm.rs256, hashlib.sha256(b"x").digest())
    assert e.value.status_code == 403
    from datetime import datetime, timedelta, timezone
    kc.update_key_properties(name, k3.properties.version, enabled=True,
                             expires_on=datetime.now(timezone.utc) - timedelta(minutes=5))
    with pytest.raises(HttpResponseError) as e:
        cc.sign(SignatureAlgorithm.rs256, hashlib.sha256(b"x").digest())
    assert e.value.status_code == 403
    # Delete → recover → delete → purge.
    kc.begin_delete_key(name).result()
    assert kc.get_deleted_key(name).name == name
    assert name in [d.name for d in kc.list_deleted_keys()]
    kc.begin_recover_deleted_key(name).result()
    assert kc.get_key(name).properties.version == k3.properties.version
    kc.begin_delete_key(name).result()
    kc.purge_deleted_key(name)
    with pytest.raises(ResourceNotFoundError):
        kc.get_deleted_key(name)


def test_import_backup_and_restore(kv):
    kc: KeyClient = kv["keys"]
    from azure.keyvault.keys import JsonWebKey
    priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    nums = priv.private_numbers()

    def b(i: int) -> bytes:
        return i.to_bytes((i.bit_length() + 7) // 8, "big")

    jwk = JsonWebKey(kty="RSA", n=b(nums.public_numbers.n), e=b(nums.public_numbers.e), d=b(nums.d), p=b(nums.p),
                     q=b(nums.q), dp=b(nums.dmp1), dq=b(nums.dmq1), qi=b(nums.iqmp), key_ops=["sign", "verify"])
    name = f"imported-{uuid.uuid4().hex[:6]}"
    key = kc.import_key(name, jwk)
    assert key.key.n == b(nums.public_numbers.n) and set(key.key_operations) == {"sign", "verify"}
    cc = CryptographyClient(key, kv["cred"], connection_verify=kv["server"].ca)
    digest = hashlib.sha256(b"imported").digest()
    sig = cc.sign(SignatureAlgorithm.ps256, digest).signature
    priv.public_key().verify(sig, b"imported", padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    with pytest.raises(HttpResponseError) as e:  # not in its key_ops
        cc.decrypt(EncryptionAlgorithm.rsa_oaep, b"x" * 256)
    assert e.value.status_code == 403
    if kv["backend"] == "pkcs11":
        with pytest.raises(HttpResponseError) as e:
            kc.backup_key(name)
        assert e.value.status_code == 400 and "FeatureNotSupported" in str(e.value)
        return
    blob = kc.backup_key(name)
    kc.begin_delete_key(name).result()
    kc.purge_deleted_key(name)
    back = kc.restore_key_backup(blob)
    assert back.name == name and back.key.n == key.key.n
    sig2 = CryptographyClient(back, kv["cred"], connection_verify=kv["server"].ca).sign(SignatureAlgorithm.rs256, digest).signature
    priv.public_key().verify(sig2, b"imported", padding.PKCS1v15(), hashes.SHA256())


def test_crypto_roles(kv):
    s = kv["server"]
    kc: KeyClient = kv["keys"]
    key = kc.create_rsa_key(f"roles-{uuid.uuid4().hex[:6]}")
    user = s.create_sp()
    s.assign_role(kv["vault"]["id"], _role(s, CRYPTO_USER), user["objectId"])
    cc = CryptographyClient(key.id, _cred(s, user), connection_verify=s.ca)
    digest = hashlib.sha256(b"crypto user").digest()
    sig = cc.sign(SignatureAlgorithm.rs256, digest).signature
    _public_rsa(key).verify(sig, b"crypto user", padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(HttpResponseError) as e:
        KeyClient(kv["vault"]["uri"], _cred(s, user), connection_verify=s.ca).create_rsa_key(f"no-{uuid.uuid4().hex[:6]}")
    assert e.value.status_code == 403
    r = _rest(kv, "POST", "/rng", body={"count": 32})
    assert r.status_code == 200 and len(b64url_decode(r.json()["value"])) == 32
    r = _rest(kv, "POST", "/rng", body={"count": 0})
    assert r.status_code == 400


# --------------------------------------------------------------------------------------------
# The az CLI (api-version 7.4 on the data plane)
# --------------------------------------------------------------------------------------------

def test_az_keyvault_commands(ciel, az):
    rg = f"kv-az-{uuid.uuid4().hex[:6]}"
    az("group", "create", "-n", rg, "-l", "francecentral")
    name = f"kvaz{uuid.uuid4().hex[:10]}"
    v = az("keyvault", "create", "-n", name, "-g", rg, "-l", "francecentral")
    assert v["properties"]["enableRbacAuthorization"] is True
    assert v["properties"]["vaultUri"].startswith(f"https://{name}.vault.{DOMAIN}")
    az("role", "assignment", "create", "--role", "Key Vault Administrator", "--assignee", ciel.client_id,
       "--scope", v["id"])
    s = az("keyvault", "secret", "set", "--vault-name", name, "-n", "cli-secret", "--value", "from-az")
    assert s["value"] == "from-az"
    assert az("keyvault", "secret", "show", "--vault-name", name, "-n", "cli-secret")["value"] == "from-az"
    assert "cli-secret" in [x["name"] for x in az("keyvault", "secret", "list", "--vault-name", name)]
    az("keyvault", "secret", "delete", "--vault-name", name, "-n", "cli-secret")
    az("keyvault", "secret", "recover", "--vault-name", name, "-n", "cli-secret")
    for _ in range(50):
        p = az.run("keyvault", "secret", "show", "--vault-name", name, "-n", "cli-secret")
        if p.returncode == 0:
            break
        time.sleep(0.2)
    assert json.loads(p.stdout)["value"] == "from-az"
    k = az("keyvault", "key", "create", "--vault-name", name, "-n", "cli-key", "--kty", "RSA", "--size", "2048")
    assert k["key"]["kty"] == "RSA" and k["key"]["kid"].startswith(f"https://{name}.vault.{DOMAIN}")
    assert az("keyvault", "key", "show", "--vault-name", name, "-n", "cli-key")["key"]["n"] == k["key"]["n"]
    ec_key = az("keyvault", "key", "create", "--vault-name", name, "-n", "cli-ec", "--kty", "EC", "--curve", "P-384")
    assert ec_key["key"]["crv"] == "P-384"
    # An access-policy vault created by az: the CLI looks up the caller's object id in Graph.
    name2 = f"kvap{uuid.uuid4().hex[:10]}"
    v2 = az("keyvault", "create", "-n", name2, "-g", rg, "-l", "francecentral", "--enable-rbac-authorization", "false")
    pols = v2["properties"]["accessPolicies"]
    assert len(pols) == 1 and pols[0]["objectId"] == _admin_oid(ciel)
    az("keyvault", "secret", "set", "--vault-name", name2, "-n", "ap", "--value", "via-policy")
    assert az("keyvault", "secret", "show", "--vault-name", name2, "-n", "ap")["value"] == "via-policy"
    az("keyvault", "delete", "-n", name2)
    assert name2 in [x["name"] for x in az("keyvault", "list-deleted")]
    az("keyvault", "purge", "-n", name2)


# --------------------------------------------------------------------------------------------
# Customer-managed keys for Storage
# --------------------------------------------------------------------------------------------

CRYPTO_SERVICE_ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"


def _wait_for(pred, timeout: float = 15.0, what: str = ""):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            out = pred()
            if out:
                return out
        except Exception as e:  # noqa: BLE001 - the condition decides
            last = e
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


def test_customer_managed_keys_for_storage(kv):
    from azure.core.exceptions import HttpResponseError as HRE
    from azure.mgmt.storage import StorageManagementClient
    from azure.storage.blob import BlobServiceClient

    s = kv["server"]
    kc: KeyClient = kv["keys"]
    key = kc.create_rsa_key(f"cmk-{uuid.uuid4().hex[:6]}", size=2048)
    sm = StorageManagementClient(_cred(s), s.sub, base_url=s.arm, credential_scopes=[s.arm_scope],
                                 connection_verify=s.ca)
    rg = kv["rg"]
    name = f"cmk{uuid.uuid4().hex[:12]}"
    acct = sm.storage_accounts.begin_create(rg, name, {
        "location": "francecentral", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2",
        "identity": {"type": "SystemAssigned"}}).result()
    principal = acct.identity.principal_id
    assert acct.identity.type == "SystemAssigned" and principal and acct.identity.tenant_id == s.tenant
    assert acct.encryption.key_source == "Microsoft.Storage"
    cmk = StorageAccountUpdateParameters(encryption=Encryption(
        key_source="Microsoft.Keyvault",
        key_vault_properties=KeyVaultProperties(key_name=key.name, key_vault_uri=kv["vault"]["uri"])))
    # Without access to the key, the change is refused and nothing changes.
    with pytest.raises(HRE) as e:
        sm.storage_accounts.update(rg, name, cmk)
    assert e.value.status_code == 400 and e.value.error.code == "KeyVaultAccessDenied", e.value
    assert sm.storage_accounts.get_properties(rg, name).encryption.key_source == "Microsoft.Storage"
    grant = s.assign_role(kv["vault"]["id"], _role(s, CRYPTO_SERVICE_ENCRYPTION_USER), principal)
    # Data written before the switch stays readable after it: the data key is the same, wrapped.
    keys = sm.storage_accounts.list_keys(rg, name)["keys"]
    url = s.host_url(f"{name}.blob.core")
    bsc = BlobServiceClient(url, credential={"account_name": name, "account_key": keys[0]["value"]},
                            connection_verify=s.ca)
    cont = bsc.create_container("data")
    cont.upload_blob("before.txt", b"written under the platform key")
    acct = sm.storage_accounts.update(rg, name, cmk)
    kvp = acct.encryption.key_vault_properties
    assert acct.encryption.key_source == "Microsoft.Keyvault"
    assert kvp.current_versioned_key_identifier == key.id, (kvp.current_versioned_key_identifier, key.id)
    cont.upload_blob("after.txt", b"written under the customer key" * 1000)
    assert cont.download_blob("before.txt").readall() == b"written under the platform key"
    etag = cont.get_blob_client("after.txt").get_blob_properties().etag

    def reads_fail_with(code):
        def check():
            try:
                cont.download_blob("after.txt").readall()
                return False
            except HRE as err:
                return err.status_code == 403 and err.error_code == code
        return check

    # Disabled key: reads and writes fail within the check period; enabled again: they work.
    kc.update_key_properties(key.name, enabled=False)
    _wait_for(reads_fail_with("KeyVaultEncryptionKeyDisabled"), what="reads to fail on a disabled key")
    with pytest.raises(HRE):
        cont.upload_blob("while-disabled.txt", b"x")
    kc.update_key_properties(key.name, enabled=True)
    assert cont.download_blob("after.txt").readall() == b"written under the customer key" * 1000
    # Access withdrawn: refused; given back: readable.
    r = s.arm_call("DELETE", f"{kv['vault']['id']}/providers/Microsoft.Authorization/roleAssignments/{grant}",
                   params={"api-version": "2022-04-01"})
    assert r.status_code == 200, describe(r)
    _wait_for(reads_fail_with("KeyVaultAccessDenied"), what="reads to fail without access to the key")
    s.assign_role(kv["vault"]["id"], _role(s, CRYPTO_SERVICE_ENCRYPTION_USER), principal)
    assert cont.download_blob("before.txt").readall() == b"written under the platform key"
    # Rotation: the data key is re-wrapped under the new version; no blob is rewritten.
    new = kc.rotate_key(key.name)
    time.sleep(2.5)
    assert cont.download_blob("after.txt").readall() == b"written under the customer key" * 1000

    def rewrapped():
        p = sm.storage_accounts.get_properties(rg, name).encryption.key_vault_properties
        return p.current_versioned_key_identifier == new.id
    _wait_for(rewrapped, what="the data key to be re-wrapped under the rotated key")
    assert cont.get_blob_client("after.txt").get_blob_properties().etag == etag
    # The old version disabled: the account no longer needs it.
    kc.update_key_properties(key.name, version=key.properties.version, enabled=False)
    time.sleep(2.5)
    assert cont.download_blob("before.txt").readall() == b"written under the platform key"
    # Deleted key: not found; recovered: readable.
    kc.begin_delete_key(key.name).result()
    _wait_for(reads_fail_with("KeyVaultEncryptionKeyNotFound"), what="reads to fail on a deleted key")
    kc.begin_recover_deleted_key(key.name).result()
    _wait_for(lambda: cont.download_blob("after.txt").readall() == b"written under the customer key" * 1000,
              what="reads after recovery")
    # Back to the platform key: readable even when the customer key is then disabled.
    acct = sm.storage_accounts.update(rg, name, StorageAccountUpdateParameters(
        encryption=Encryption(key_source="Microsoft.Storage")))
    assert acct.encryption.key_source == "Microsoft.Storage"
    kc.update_key_properties(key.name, enabled=False)
    time.sleep(2.5)
    assert cont.download_blob("after.txt").readall() == b"written under the customer key" * 1000
    # Unwraps are audited, naming the account.
    rows = _audit(s, "Microsoft.KeyVault/vaults/keys/unwrap/action", key.name)
    assert rows and any(name in (r[2] or "") for r in rows)


def test_customer_managed_key_needs_an_identity(kv):
    from azure.core.exceptions import HttpResponseError as HRE
    from azure.mgmt.storage import StorageManagementClient
    s = kv["server"]
    sm = StorageManagementClient(_cred(s), s.sub, base_url=s.arm, credential_scopes=[s.arm_scope],
                                 connection_verify=s.ca)
    name = f"cmkn{uuid.uuid4().hex[:10]}"
    key = kv["keys"].create_rsa_key(f"cmkn-{uuid.uuid4().hex[:6]}")
    with pytest.raises(HRE) as e:
        sm.storage_accounts.begin_create(kv["rg"], name, StorageAccountCreateParameters(
            location="francecentral", sku=Sku(name="Standard_LRS"), kind="StorageV2",
            encryption=Encryption(key_source="Microsoft.Keyvault", key_vault_properties=KeyVaultProperties(
                key_name=key.name, key_vault_uri=kv["vault"]["uri"])))).result()
    assert e.value.status_code == 400
    with pytest.raises(HRE) as e:
        sm.storage_accounts.begin_create(kv["rg"], name, StorageAccountCreateParameters(
            location="francecentral", sku=Sku(name="Standard_LRS"), kind="StorageV2",
            identity=Identity(type="UserAssigned"))).result()
    assert e.value.status_code == 400 and e.value.error.code == "FeatureNotSupported"
    assert name not in [a.name for a in sm.storage_accounts.list_by_resource_group(kv["rg"])]


# --------------------------------------------------------------------------------------------
# Every data-plane route, called by strangers
# --------------------------------------------------------------------------------------------

DATA_ROUTES = [
    ("GET", "/secrets", None), ("PUT", "/secrets/{s}", {"value": "pwned"}), ("GET", "/secrets/{s}", None),
    ("GET", "/secrets/{s}/{sv}", None), ("PATCH", "/secrets/{s}/{sv}", {"attributes": {"enabled": False}}),
    ("DELETE", "/secrets/{s}", None), ("GET", "/secrets/{s}/versions", None), ("POST", "/secrets/{s}/backup", None),
    ("POST", "/secrets/restore", {"value": "AAAA"}), ("GET", "/deletedsecrets", None),
    ("GET", "/deletedsecrets/{s}", None), ("DELETE", "/deletedsecrets/{s}", None),
    ("POST", "/deletedsecrets/{s}/recover", None),
    ("GET", "/keys", None), ("POST", "/keys/{k}/create", {"kty": "RSA"}), ("PUT", "/keys/{k}", {"key": {"kty": "RSA"}}),
    ("GET", "/keys/{k}", None), ("GET", "/keys/{k}/{kv}", None), ("PATCH", "/keys/{k}/{kv}", {"attributes": {"enabled": False}}),
    ("DELETE", "/keys/{k}", None), ("GET", "/keys/{k}/versions", None), ("POST", "/keys/{k}/backup", None),
    ("POST", "/keys/restore", {"value": "AAAA"}), ("POST", "/keys/{k}/rotate", None),
    ("GET", "/keys/{k}/rotationpolicy", None), ("PUT", "/keys/{k}/rotationpolicy", {"lifetimeActions": []}),
    ("POST", "/keys/{k}/{kv}/sign", {"alg": "RS256", "value": b64url(b"\0" * 32)}),
    ("POST", "/keys/{k}/{kv}/verify", {"alg": "RS256", "digest": b64url(b"\0" * 32), "value": b64url(b"\0" * 256)}),
    ("POST", "/keys/{k}/{kv}/encrypt", {"alg": "RSA-OAEP", "value": b64url(b"x")}),
    ("POST", "/keys/{k}/{kv}/decrypt", {"alg": "RSA-OAEP", "value": b64url(b"\0" * 256)}),
    ("POST", "/keys/{k}/{kv}/wrapkey", {"alg": "RSA-OAEP", "value": b64url(b"x")}),
    ("POST", "/keys/{k}/{kv}/unwrapkey", {"alg": "RSA-OAEP", "value": b64url(b"\0" * 256)}),
    ("GET", "/deletedkeys", None), ("GET", "/deletedkeys/{k}", None), ("DELETE", "/deletedkeys/{k}", None),
    ("POST", "/deletedkeys/{k}/recover", None), ("POST", "/rng", {"count": 8}),
]


def test_every_data_route_refuses_strangers(kv):
    s = kv["server"]
    sec = kv["secrets"].set_secret(f"guarded-{uuid.uuid4().hex[:6]}", "guarded-value")
    key = kv["keys"].create_rsa_key(f"guarded-{uuid.uuid4().hex[:6]}")
    facts = {"s": sec.name, "sv": sec.properties.version, "k": key.name, "kv": key.properties.version}
    stranger = s.create_sp()  # same tenant, no role on the vault
    tok = _token(s, sp=stranger)
    for method, path, body in DATA_ROUTES:
        p = path.format(**facts)
        anon = _rest(kv, method, p, body=body, token=None)
        assert anon.status_code == 401 and "WWW-Authenticate" in anon.headers, (method, p, describe(anon))
        r = _rest(kv, method, p, body=body, token=tok)
        assert r.status_code == 403 and r.json()["error"]["code"] == "Forbidden", (method, p, describe(r))
        assert "guarded-value" not in r.text and key.key.n.hex() not in r.text
    # Nothing changed, and the refusals are on the record.
    assert kv["secrets"].get_secret(sec.name).value == "guarded-value"
    assert kv["secrets"].get_secret(sec.name).properties.enabled is True
    assert kv["keys"].get_key(key.name).properties.version == key.properties.version
    db = sqlite3.connect(f"file:{s.data_dir}/ciel.db?mode=ro", uri=True, timeout=10)
    try:
        n = db.execute("SELECT count(*) FROM audit_log WHERE outcome = 'denied' AND actor = ? AND action LIKE "
                       "'Microsoft.KeyVault/vaults/%'", (f"sp:{stranger['appId']}",)).fetchone()[0]
    finally:
        db.close()
    assert n == len(DATA_ROUTES), (n, len(DATA_ROUTES))


def test_tenant_erasure_destroys_vaults(server_factory):
    """`ciel tenant erase` takes the tenant's vaults with it, live and soft-deleted: records,
    sealed vault keys, every secret and key version."""
    s = server_factory("kv-erase")
    rg = f"kv-erase-{uuid.uuid4().hex[:6]}"
    s.create_group(rg)
    live, gone = _new_vault(s, rg), _new_vault(s, rg)
    for v in (live, gone):
        s.assign_role(v["id"], _role(s, KV_ADMIN), _admin_oid(s))
        SecretClient(v["uri"], _cred(s), connection_verify=s.ca).set_secret("doomed", "to-be-erased")
        KeyClient(v["uri"], _cred(s), connection_verify=s.ca).create_ec_key("doomed-key")
    _mgmt(s).vaults.delete(rg, gone["name"])
    db = f"file:{s.data_dir}/ciel.db?mode=ro"

    def counts():
        c = sqlite3.connect(db, uri=True, timeout=10)
        try:
            return (c.execute("SELECT count(*) FROM kv_versions").fetchone()[0],
                    c.execute("SELECT count(*) FROM kv_deleted_vaults").fetchone()[0])
        finally:
            c.close()
    assert counts() == (4, 1)
    p = subprocess.run([os.environ.get("CIEL_BIN") or str(Path(__file__).resolve().parents[2] / "target/release/ciel"),
                        "tenant", "erase", s.tenant, "--now", "--data-dir", str(s.data_dir)],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0 and "2 key vaults" in p.stdout, (p.stdout, p.stderr)
    assert counts() == (0, 0)
    r = requests.get(live["uri"] + "secrets/doomed", params={"api-version": "7.4"}, verify=s.ca, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "VaultNotFound"


def test_hsm_key_types_need_a_premium_vault_on_an_hsm(kv):
    s = kv["server"]
    if kv["backend"] != "pkcs11":
        # Software custody: premium (HSM-protected keys) is refused at the vault, RSA-HSM at the key.
        with pytest.raises(HttpResponseError) as e:
            _new_vault(s, kv["rg"], sku={"family": "A", "name": "premium"})
        assert e.value.status_code == 400 and e.value.error.code == "SkuNotAvailable"
        r = _rest(kv, "POST", f"/keys/hsm-{uuid.uuid4().hex[:6]}/create", body={"kty": "RSA-HSM"})
        assert r.status_code == 400, describe(r)
        return
    v = _new_vault(s, kv["rg"], sku={"family": "A", "name": "premium"})
    assert v["model"].properties.sku.name == "premium"
    s.assign_role(v["id"], _role(s, KV_ADMIN), _admin_oid(s))
    kc = KeyClient(v["uri"], kv["cred"], connection_verify=s.ca)
    rsa_key = kc.create_rsa_key(f"hsm-rsa-{uuid.uuid4().hex[:6]}", hardware_protected=True)
    ec_key = kc.create_ec_key(f"hsm-ec-{uuid.uuid4().hex[:6]}", curve=KeyCurveName.p_256, hardware_protected=True)
    assert rsa_key.key_type == "RSA-HSM" and ec_key.key_type == "EC-HSM"
    digest = hashlib.sha256(b"in the HSM").digest()
    sig = CryptographyClient(rsa_key, kv["cred"], connection_verify=s.ca).sign(SignatureAlgorithm.rs256, digest).signature
    _public_rsa(rsa_key).verify(sig, b"in the HSM", padding.PKCS1v15(), hashes.SHA256())
    sig = CryptographyClient(ec_key, kv["cred"], connection_verify=s.ca).sign(SignatureAlgorithm.es256, digest).signature
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    _public_ec(ec_key).verify(der, b"in the HSM", ec.ECDSA(hashes.SHA256()))
    # A standard vault refuses HSM key types even on an HSM deployment, as Azure does.
    r = _rest(kv, "POST", f"/keys/hsm-{uuid.uuid4().hex[:6]}/create", body={"kty": "EC-HSM"})
    assert r.status_code == 400, describe(r)


def test_rotation_policy_rotates_keys_when_due(servers):
    """The platform carries out a policy's Rotate action: a server whose clock is moved past
    `timeAfterCreate` rotates the key at start (its periodic sweep), and leaves a key whose policy
    is not yet due alone."""
    from cieltest import faketime_library
    lib = faketime_library()
    if not lib:
        missing_prerequisite("libfaketime is not installed (apt-get install libfaketime)")
    s = servers.new("kv-clock")
    s.base.mkdir(parents=True, exist_ok=True)
    clock = s.base / "faketime"
    clock.write_text("+0\n")
    s.extra_env.update({"LD_PRELOAD": lib, "FAKETIME_TIMESTAMP_FILE": str(clock), "FAKETIME_NO_CACHE": "1",
                        "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    s.start()
    try:
        rg = f"kv-rot-{uuid.uuid4().hex[:6]}"
        s.create_group(rg)
        v = _new_vault(s, rg)
        s.assign_role(v["id"], _role(s, KV_ADMIN), _admin_oid(s))
        kc = KeyClient(v["uri"], _cred(s), connection_verify=s.ca)
        due, later = kc.create_rsa_key("rotates-weekly"), kc.create_ec_key("rotates-monthly")
        kc.update_key_rotation_policy(due.name, KeyRotationPolicy(lifetime_actions=[
            KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P7D")], expires_in="P1Y"))
        kc.update_key_rotation_policy(later.name, KeyRotationPolicy(lifetime_actions=[
            KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")]))
        s.stop()
        clock.write_text("+8d\n")
        s.start()
        kc = KeyClient(v["uri"], _cred(s), connection_verify=s.ca)

        def rotated():
            return len(list(kc.list_properties_of_key_versions(due.name))) == 2
        _wait_for(rotated, 20, what="the due key to be rotated by its policy")
        new = kc.get_key(due.name)
        assert new.properties.version != due.properties.version and new.properties.expires_on is not None
        assert len(list(kc.list_properties_of_key_versions(later.name))) == 1
        rows = _audit(s, "Microsoft.KeyVault/vaults/keys/rotate/action", due.name)
        assert any(r[0] == "system:key-rotation-policy" and '"policy"' in (r[2] or "") for r in rows), rows
    finally:
        clock.write_text("+0\n")
        s.stop()


def test_statement_says_where_vault_keys_are_held(kv):
    """The sovereignty statement (and so the `keys.custody` compliance evidence) names the custody
    backend of the running configuration: the HSM's module and token on a PKCS#11 deployment."""
    s = kv["server"]
    r = s.arm_call("GET", "/providers/Ciel.Sovereignty/statement", params={"api-version": "2026-11-01"})
    assert r.status_code == 200, describe(r)
    keys = r.json()["keys"]
    assert keys["keyVaultKeys"]["custody"] == kv["backend"], keys
    if kv["backend"] == "pkcs11":
        assert keys["hsm"]["module"] == SOFTHSM and keys["hsm"]["tokenLabel"] == "ciel", keys
        assert "CIEL_TEST_HSM_PIN" not in json.dumps(r.json()), "the PIN's source does not belong in the statement"
    else:
        assert keys["hsm"] is None, keys
