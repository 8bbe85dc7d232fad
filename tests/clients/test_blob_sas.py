"""Shared access signatures (service, stored-policy, account and user delegation), container ACLs
and public access, Blob service properties with CORS, account information — driven by the real
azure-storage-blob SDK, the az CLI and azcopy, unchanged."""

from __future__ import annotations

import base64
import filecmp
import os
import shutil
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.storage.blob import (
    AccessPolicy,
    AccountSasPermissions,
    BlobClient,
    BlobSasPermissions,
    BlobServiceClient,
    ContainerClient,
    ContainerSasPermissions,
    CorsRule,
    ResourceTypes,
    generate_account_sas,
    generate_blob_sas,
    generate_container_sas,
)
from azure.storage.blob._models import BlobAnalyticsLogging

from cieltest import DOMAIN, describe

API = "2025-08-01"


def _now():
    return datetime.now(timezone.utc)


def _make_account(ciel, rg: str, **props) -> dict:
    name = f"sas{uuid.uuid4().hex[:12]}"
    body = {"location": "francecentral", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}
    if props:
        body["properties"] = props
    r = ciel.arm_call("PUT", f"/subscriptions/{ciel.sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}",
                      params={"api-version": API}, json_body=body)
    assert r.status_code == 200, describe(r)
    keys = ciel.arm_call("POST", f"{r.json()['id']}/listKeys", params={"api-version": API}).json()["keys"]
    return {"name": name, "rg": rg, "id": r.json()["id"], "key": keys[0]["value"], "key2": keys[1]["value"],
            "url": f"https://{name}.blob.core.{DOMAIN}:{ciel.port}"}


@pytest.fixture(scope="module")
def group(ciel):
    rg = f"sas-{uuid.uuid4().hex[:8]}"
    ciel.create_group(rg)
    return rg


@pytest.fixture(scope="module")
def account(ciel, group):
    return _make_account(ciel, group)


def _svc(ciel, acct, credential=None) -> BlobServiceClient:
    return BlobServiceClient(acct["url"], credential=credential or acct["key"], connection_verify=ciel.ca)


def _container(ciel, acct, prefix="c") -> ContainerClient:
    return _svc(ciel, acct).create_container(f"{prefix}-{uuid.uuid4().hex[:8]}")


def _blob_url(acct, container, blob, sas):
    return f"{acct['url']}/{container}/{blob}?{sas}"


def _code(e) -> str:
    return e.value.error_code


def test_service_sas_for_a_blob_and_a_container(ciel, account):
    c = _container(ciel, account)
    c.upload_blob("dir/report.csv", b"a,b\n1,2\n")
    c.upload_blob("other.txt", b"private")
    name = account["name"]
    sas = generate_blob_sas(name, c.container_name, "dir/report.csv", account_key=account["key"],
                            permission=BlobSasPermissions(read=True), expiry=_now() + timedelta(hours=1),
                            start=_now() - timedelta(minutes=5), content_disposition="attachment; filename=r.csv")
    b = BlobClient.from_blob_url(_blob_url(account, c.container_name, "dir/report.csv", sas), connection_verify=ciel.ca)
    d = b.download_blob()
    assert d.readall() == b"a,b\n1,2\n"
    # The SAS overrides the response's Content-Disposition (rscd).
    assert d.properties.content_settings.content_disposition == "attachment; filename=r.csv"
    # Read-only: no writes; one blob: not its neighbour.
    with pytest.raises(HttpResponseError) as e:
        b.upload_blob(b"x", overwrite=True)
    assert e.value.status_code == 403 and _code(e) == "AuthorizationPermissionMismatch"
    other = BlobClient.from_blob_url(_blob_url(account, c.container_name, "other.txt", sas), connection_verify=ciel.ca)
    with pytest.raises(HttpResponseError) as e:
        other.download_blob().readall()
    assert e.value.status_code == 403

    # Signed with the second key too; a tampered permission or an expired SAS fails.
    sas2 = generate_blob_sas(name, c.container_name, "dir/report.csv", account_key=account["key2"],
                             permission="r", expiry=_now() + timedelta(hours=1))
    assert BlobClient.from_blob_url(_blob_url(account, c.container_name, "dir/report.csv", sas2),
                                    connection_verify=ciel.ca).download_blob().readall() == b"a,b\n1,2\n"
    tampered = sas2.replace("sp=r", "sp=rw")
    r = requests.put(_blob_url(account, c.container_name, "dir/report.csv", tampered), data=b"evil",
                     headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": "2026-04-06"}, verify=ciel.ca, timeout=30)
    assert r.status_code == 403 and r.headers["x-ms-error-code"] == "AuthenticationFailed", describe(r)
    expired = generate_blob_sas(name, c.container_name, "dir/report.csv", account_key=account["key"], permission="r",
                                start=_now() - timedelta(hours=2), expiry=_now() - timedelta(hours=1))
    r = requests.get(_blob_url(account, c.container_name, "dir/report.csv", expired), verify=ciel.ca, timeout=30)
    assert r.status_code == 403 and r.headers["x-ms-error-code"] == "AuthenticationFailed", describe(r)
    not_yet = generate_blob_sas(name, c.container_name, "dir/report.csv", account_key=account["key"], permission="r",
                                start=_now() + timedelta(hours=1), expiry=_now() + timedelta(hours=2))
    r = requests.get(_blob_url(account, c.container_name, "dir/report.csv", not_yet), verify=ciel.ca, timeout=30)
    assert r.status_code == 403, describe(r)
    # An IP range that excludes the caller.
    far = generate_blob_sas(name, c.container_name, "dir/report.csv", account_key=account["key"], permission="r",
                            expiry=_now() + timedelta(hours=1), ip="10.1.2.3")
    r = requests.get(_blob_url(account, c.container_name, "dir/report.csv", far), verify=ciel.ca, timeout=30)
    assert r.status_code == 403 and r.headers["x-ms-error-code"] == "AuthorizationSourceIPMismatch", describe(r)
    assert c.download_blob("dir/report.csv").readall() == b"a,b\n1,2\n"  # nothing changed

    # A container SAS: list, read, write, but "create" alone never overwrites.
    csas = generate_container_sas(name, c.container_name, account_key=account["key"],
                                  permission=ContainerSasPermissions(read=True, list=True, write=True),
                                  expiry=_now() + timedelta(hours=1))
    cc = ContainerClient.from_container_url(f"{account['url']}/{c.container_name}?{csas}", connection_verify=ciel.ca)
    assert sorted(b.name for b in cc.list_blobs()) == ["dir/report.csv", "other.txt"]
    cc.upload_blob("new/one.bin", os.urandom(5000))
    with pytest.raises(HttpResponseError) as e:
        cc.delete_blob("new/one.bin")
    assert _code(e) == "AuthorizationPermissionMismatch"
    create_only = generate_container_sas(name, c.container_name, account_key=account["key"],
                                         permission=ContainerSasPermissions(create=True), expiry=_now() + timedelta(hours=1))
    co = ContainerClient.from_container_url(f"{account['url']}/{c.container_name}?{create_only}", connection_verify=ciel.ca)
    co.upload_blob("fresh.txt", b"first")
    with pytest.raises(HttpResponseError) as e:
        co.upload_blob("fresh.txt", b"second", overwrite=True)
    assert e.value.status_code == 403
    assert c.download_blob("fresh.txt").readall() == b"first"
    # A service SAS cannot reach the service level, nor a container's ACL.
    with pytest.raises(HttpResponseError) as e:
        list(BlobServiceClient(f"{account['url']}?{csas}", connection_verify=ciel.ca).list_containers())
    assert e.value.status_code == 403
    with pytest.raises(HttpResponseError) as e:
        cc.get_container_access_policy()
    assert e.value.status_code == 403


def test_stored_access_policies_revoke(ciel, account):
    c = _container(ciel, account, "pol")
    c.upload_blob("a.txt", b"policy-bound")
    start = _now() - timedelta(minutes=1)
    c.set_container_access_policy(signed_identifiers={
        "readers": AccessPolicy(permission=ContainerSasPermissions(read=True, list=True), start=start,
                                expiry=_now() + timedelta(hours=1)),
    })
    acl = c.get_container_access_policy()
    assert acl["public_access"] is None
    assert [i.id for i in acl["signed_identifiers"]] == ["readers"]
    assert acl["signed_identifiers"][0].access_policy.permission == "rl"
    sas = generate_container_sas(account["name"], c.container_name, account_key=account["key"], policy_id="readers")
    cc = ContainerClient.from_container_url(f"{account['url']}/{c.container_name}?{sas}", connection_verify=ciel.ca)
    assert cc.download_blob("a.txt").readall() == b"policy-bound"
    # The SAS may not restate what its policy fixes.
    both = generate_container_sas(account["name"], c.container_name, account_key=account["key"], policy_id="readers",
                                  permission="r")
    r = requests.get(f"{account['url']}/{c.container_name}/a.txt?{both}", verify=ciel.ca, timeout=30)
    assert r.status_code == 403, describe(r)
    # Removing the policy revokes every SAS bound to it.
    c.set_container_access_policy(signed_identifiers={})
    with pytest.raises(HttpResponseError) as e:
        cc.download_blob("a.txt").readall()
    assert e.value.status_code == 403
    # Bad input changes nothing: an unknown permission letter through the SDK; a bad time, six
    # policies and broken XML raw (the SDK refuses to send those itself).
    with pytest.raises(HttpResponseError) as e:
        c.set_container_access_policy(signed_identifiers={"bad": AccessPolicy(permission="rq", expiry=_now() + timedelta(hours=1))})
    assert e.value.status_code == 400
    token = ciel.client_token(ciel.client_id, ciel.secret, scope="https://storage.azure.com/.default")
    one = "<SignedIdentifier><Id>{}</Id><AccessPolicy><Expiry>{}</Expiry><Permission>r</Permission></AccessPolicy></SignedIdentifier>"
    for body in (f"<SignedIdentifiers>{one.format('x', 'tomorrow')}</SignedIdentifiers>",
                 "<SignedIdentifiers>" + "".join(one.format(f"p{i}", "2099-01-01T00:00:00Z") for i in range(6)) + "</SignedIdentifiers>",
                 "<SignedIdentifiers><SignedIdentifier>"):
        r = requests.put(f"{account['url']}/{c.container_name}?restype=container&comp=acl", data=body,
                         headers={"Authorization": f"Bearer {token}", "x-ms-version": "2026-04-06"}, verify=ciel.ca, timeout=30)
        assert r.status_code == 400, describe(r)
    assert c.get_container_access_policy()["signed_identifiers"] == []


def test_account_sas(ciel, account):
    sas = generate_account_sas(account["name"], account["key"],
                               resource_types=ResourceTypes(service=True, container=True, object=True),
                               permission=AccountSasPermissions(read=True, write=True, list=True, create=True),
                               expiry=_now() + timedelta(hours=1))
    svc = BlobServiceClient(f"{account['url']}?{sas}", connection_verify=ciel.ca)
    name = f"acct-{uuid.uuid4().hex[:6]}"
    c = svc.create_container(name)
    c.upload_blob("x/y.txt", b"via account sas")
    assert c.download_blob("x/y.txt").readall() == b"via account sas"
    assert name in [x.name for x in svc.list_containers(name_starts_with="acct-")]
    with pytest.raises(HttpResponseError) as e:
        c.delete_blob("x/y.txt")
    assert _code(e) == "AuthorizationPermissionMismatch"
    # Object-only: no listing of containers.
    objects = generate_account_sas(account["name"], account["key"], resource_types=ResourceTypes(object=True),
                                   permission="r", expiry=_now() + timedelta(hours=1))
    with pytest.raises(HttpResponseError) as e:
        list(BlobServiceClient(f"{account['url']}?{objects}", connection_verify=ciel.ca).list_containers())
    assert _code(e) == "AuthorizationResourceTypeMismatch"
    assert BlobClient.from_blob_url(f"{account['url']}/{name}/x/y.txt?{objects}",
                                    connection_verify=ciel.ca).download_blob().readall() == b"via account sas"
    # Signed by another account's key: refused.
    bogus = generate_account_sas(account["name"], base64.b64encode(os.urandom(64)).decode(), resource_types="sco", permission="rl",
                                 expiry=_now() + timedelta(hours=1))
    r = requests.get(f"{account['url']}/?comp=list&{bogus}", verify=ciel.ca, timeout=30)
    assert r.status_code == 403 and r.headers["x-ms-error-code"] == "AuthenticationFailed", describe(r)


def test_user_delegation_sas_is_bound_by_rbac(ciel, account, role_ids):
    c = _container(ciel, account, "udk")
    c.upload_blob("doc.txt", b"delegated")
    sp = ciel.create_sp(f"udk-{uuid.uuid4().hex[:6]}")
    cred = ClientSecretCredential(ciel.tenant, sp["appId"], sp["password"], authority=ciel.login,
                                  disable_instance_discovery=True, connection_verify=ciel.ca)
    svc = _svc(ciel, account, cred)
    # No role yet: no key.
    with pytest.raises(HttpResponseError) as e:
        svc.get_user_delegation_key(_now(), _now() + timedelta(hours=1))
    assert e.value.status_code == 403
    assignment = ciel.assign_role(account["id"], role_ids["Storage Blob Data Reader"], sp["objectId"])
    udk = svc.get_user_delegation_key(_now() - timedelta(minutes=1), _now() + timedelta(hours=2))
    assert udk.signed_oid == sp["objectId"] and udk.signed_tid == ciel.tenant and udk.signed_service == "b"
    sas = generate_blob_sas(account["name"], c.container_name, "doc.txt", user_delegation_key=udk,
                            permission="rw", expiry=_now() + timedelta(hours=1))
    b = BlobClient.from_blob_url(_blob_url(account, c.container_name, "doc.txt", sas), connection_verify=ciel.ca)
    assert b.download_blob().readall() == b"delegated"
    # The SAS says "w", but its signer is only a Reader: the intersection applies.
    with pytest.raises(HttpResponseError) as e:
        b.upload_blob(b"x", overwrite=True)
    assert e.value.status_code == 403
    # A forged key (same fields, another value) fails.
    udk.value = base64.b64encode(os.urandom(32)).decode()
    forged = generate_blob_sas(account["name"], c.container_name, "doc.txt", user_delegation_key=udk,
                               permission="r", expiry=_now() + timedelta(hours=1))
    r = requests.get(_blob_url(account, c.container_name, "doc.txt", forged), verify=ciel.ca, timeout=30)
    assert r.status_code == 403 and r.headers["x-ms-error-code"] == "AuthenticationFailed", describe(r)
    # Keys last at most seven days; only bearer tokens may ask for one.
    with pytest.raises(HttpResponseError) as e:
        svc.get_user_delegation_key(_now(), _now() + timedelta(days=8))
    assert e.value.status_code == 400
    with pytest.raises(HttpResponseError) as e:
        _svc(ciel, account).get_user_delegation_key(_now(), _now() + timedelta(hours=1))
    assert e.value.status_code == 403
    # Withdrawing the signer's role withdraws the SAS.
    r = ciel.arm_call("DELETE", f"{account['id']}/providers/Microsoft.Authorization/roleAssignments/{assignment}",
                      params={"api-version": "2022-04-01"})
    assert r.status_code in (200, 204), describe(r)
    with pytest.raises(HttpResponseError) as e:
        b.download_blob().readall()
    assert e.value.status_code == 403


def test_shared_key_off_disables_key_sas(ciel, group):
    acct = _make_account(ciel, group)
    c = _container(ciel, acct, "off")
    c.upload_blob("a.txt", b"x")
    sas = generate_blob_sas(acct["name"], c.container_name, "a.txt", account_key=acct["key"], permission="r",
                            expiry=_now() + timedelta(hours=1))
    url = _blob_url(acct, c.container_name, "a.txt", sas)
    assert requests.get(url, verify=ciel.ca, timeout=30).status_code == 200
    r = ciel.arm_call("PATCH", acct["id"], params={"api-version": API}, json_body={"properties": {"allowSharedKeyAccess": False}})
    assert r.status_code == 200, describe(r)
    r = requests.get(url, verify=ciel.ca, timeout=30)
    assert r.status_code == 403 and r.headers["x-ms-error-code"] == "KeyBasedAuthenticationNotPermitted", describe(r)


def test_public_access_follows_the_account_setting(ciel, group, account):
    # Accounts refuse public containers by default.
    with pytest.raises(HttpResponseError) as e:
        _svc(ciel, account).create_container(f"pub-{uuid.uuid4().hex[:6]}", public_access="blob")
    assert e.value.status_code == 409 and _code(e) == "PublicAccessNotPermitted"

    acct = _make_account(ciel, group, allowBlobPublicAccess=True)
    svc = _svc(ciel, acct)
    blobs = svc.create_container(f"pub-{uuid.uuid4().hex[:6]}", public_access="blob")
    blobs.upload_blob("open.txt", b"for everyone")
    whole = svc.create_container(f"pubc-{uuid.uuid4().hex[:6]}")
    whole.upload_blob("listed.txt", b"listed")
    whole.set_container_access_policy(signed_identifiers={}, public_access="container")
    assert whole.get_container_properties().public_access == "container"
    private = svc.create_container(f"priv-{uuid.uuid4().hex[:6]}")
    private.upload_blob("closed.txt", b"no")

    anon = BlobServiceClient(acct["url"], connection_verify=ciel.ca)
    assert anon.get_blob_client(blobs.container_name, "open.txt").download_blob().readall() == b"for everyone"
    # "blob" level: blobs are readable, the listing is not.
    with pytest.raises(HttpResponseError):
        list(anon.get_container_client(blobs.container_name).list_blobs())
    assert [b.name for b in anon.get_container_client(whole.container_name).list_blobs()] == ["listed.txt"]
    r = requests.get(f"{acct['url']}/{private.container_name}/closed.txt", verify=ciel.ca, timeout=30)
    assert r.status_code == 401 and "www-authenticate" in r.headers, describe(r)
    # Anonymous callers never write.
    r = requests.put(f"{acct['url']}/{whole.container_name}/w.txt", data=b"x",
                     headers={"x-ms-blob-type": "BlockBlob"}, verify=ciel.ca, timeout=30)
    assert r.status_code == 401, describe(r)
    assert [b.name for b in whole.list_blobs()] == ["listed.txt"]

    # Turning public access off at the account closes every public container at once.
    r = ciel.arm_call("PATCH", acct["id"], params={"api-version": API}, json_body={"properties": {"allowBlobPublicAccess": False}})
    assert r.status_code == 200, describe(r)
    r = requests.get(f"{acct['url']}/{blobs.container_name}/open.txt", verify=ciel.ca, timeout=30)
    assert r.status_code == 409 and r.headers["x-ms-error-code"] == "PublicAccessNotPermitted", describe(r)


def test_service_properties_cors_and_account_info(ciel, account):
    svc = _svc(ciel, account)
    info = svc.get_account_information()
    assert info["sku_name"] == "Standard_LRS" and info["account_kind"] == "StorageV2"
    svc.set_service_properties(cors=[CorsRule(["https://portail.example.fr"], ["GET", "PUT"],
                                              allowed_headers=["x-ms-meta-*", "content-type"],
                                              exposed_headers=["x-ms-request-id"], max_age_in_seconds=600)])
    props = svc.get_service_properties()
    rule = props["cors"][0]
    assert rule.allowed_origins == "https://portail.example.fr" and rule.allowed_methods == "GET,PUT"
    assert rule.max_age_in_seconds == 600
    assert props["analytics_logging"].read is False and props["delete_retention_policy"].enabled is False

    c = svc.create_container(f"cors-{uuid.uuid4().hex[:6]}")
    c.upload_blob("a.txt", b"cors")
    url = f"{account['url']}/{c.container_name}/a.txt"
    pre = requests.options(url, headers={"Origin": "https://portail.example.fr", "Access-Control-Request-Method": "PUT",
                                         "Access-Control-Request-Headers": "x-ms-meta-team,content-type"},
                           verify=ciel.ca, timeout=30)
    assert pre.status_code == 200, describe(pre)
    assert pre.headers["access-control-allow-origin"] == "https://portail.example.fr"
    assert pre.headers["access-control-max-age"] == "600"
    denied = requests.options(url, headers={"Origin": "https://elsewhere.example.com", "Access-Control-Request-Method": "GET"},
                              verify=ciel.ca, timeout=30)
    assert denied.status_code == 403 and denied.headers["x-ms-error-code"] == "CorsPreflightFailure", describe(denied)
    sas = generate_blob_sas(account["name"], c.container_name, "a.txt", account_key=account["key"], permission="r",
                            expiry=_now() + timedelta(hours=1))
    r = requests.get(f"{url}?{sas}", headers={"Origin": "https://portail.example.fr"}, verify=ciel.ca, timeout=30)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://portail.example.fr", describe(r)
    assert r.headers["access-control-expose-headers"] == "x-ms-request-id"

    # What Ciel does not provide is refused, not silently accepted; the CORS rules stay.
    with pytest.raises(HttpResponseError) as e:
        svc.set_service_properties(analytics_logging=BlobAnalyticsLogging(read=True, write=True, delete=True))
    assert _code(e) == "FeatureNotSupported"
    with pytest.raises(HttpResponseError) as e:
        svc.set_service_properties(cors=[CorsRule(["*"], ["GET"])] * 6)
    assert e.value.status_code == 400
    assert len(svc.get_service_properties()["cors"]) == 1
    svc.set_service_properties(cors=[])
    assert svc.get_service_properties()["cors"] == []


def test_az_cli_sas(az, ciel, account, tmp_path: Path):
    base = ["--account-name", account["name"]]
    cname = f"azsas-{uuid.uuid4().hex[:6]}"
    az("storage", "container", "create", "-n", cname, *base, "--account-key", account["key"])
    expiry = (_now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%MZ")
    token = az("storage", "container", "generate-sas", "-n", cname, "--permissions", "rwl", "--expiry", expiry,
               *base, "--account-key", account["key"], "--https-only")
    src = tmp_path / "in.txt"
    src.write_text("par SAS\n")
    az("storage", "blob", "upload", "-c", cname, "-n", "in.txt", "-f", str(src), *base, "--sas-token", token)
    listed = az("storage", "blob", "list", "-c", cname, *base, "--sas-token", token)
    assert [b["name"] for b in listed] == ["in.txt"]
    dst = tmp_path / "out.txt"
    az("storage", "blob", "download", "-c", cname, "-n", "in.txt", "-f", str(dst), *base, "--sas-token", token)
    assert dst.read_text() == "par SAS\n"
    ro = az("storage", "container", "generate-sas", "-n", cname, "--permissions", "r", "--expiry", expiry,
            *base, "--account-key", account["key"])
    p = az.fails("storage", "blob", "upload", "-c", cname, "-n", "no.txt", "-f", str(src), *base, "--sas-token", ro)
    # The CLI renders AuthorizationPermissionMismatch as this advice.
    assert "required permissions" in p.stderr or "AuthorizationPermissionMismatch" in p.stderr, p.stderr
    assert [b["name"] for b in az("storage", "blob", "list", "-c", cname, *base, "--sas-token", token)] == ["in.txt"]


def _azcopy() -> str | None:
    found = os.environ.get("CIEL_AZCOPY") or shutil.which("azcopy")
    return found if found and os.access(found, os.X_OK) else None


def test_azcopy_folder_up_and_back_with_sas(ciel, account, tmp_path: Path):
    exe = _azcopy()
    if exe is None:
        pytest.fail("azcopy is missing: scripts/test installs it from npm (@azure-tools/azcopy-linux); set CIEL_AZCOPY")
    c = _container(ciel, account, "azcopy")
    src = tmp_path / "src"
    (src / "nested" / "deeper").mkdir(parents=True)
    files = {
        "top.txt": b"top\n",
        "nested/data.bin": os.urandom(9 * 1024 * 1024 + 5),  # several 8 MiB blocks
        "nested/deeper/élan été.txt": "unicode names\n".encode(),
        "empty.txt": b"",
    }
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    sas = generate_container_sas(account["name"], c.container_name, account_key=account["key"],
                                 permission=ContainerSasPermissions(read=True, write=True, list=True, create=True),
                                 expiry=_now() + timedelta(hours=1))
    # azcopy is a static Go binary whose resolver asks DNS only (not nss-myhostname), so it cannot
    # resolve *.ciel.localhost here: it goes path-style to 127.0.0.1, which Ciel serves too.
    base = f"https://127.0.0.1:{ciel.port}/{account['name']}/{c.container_name}"
    dest = f"{base}?{sas}"
    env = {**os.environ, "SSL_CERT_FILE": ciel.ca, "AZCOPY_LOG_LOCATION": str(tmp_path / "logs"),
           "AZCOPY_JOB_PLAN_LOCATION": str(tmp_path / "plans")}
    up = subprocess.run([exe, "copy", f"{src}/*", dest, "--recursive", "--skip-version-check", "--block-size-mb", "8",
                         "--put-md5", "--from-to", "LocalBlob"], env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-2000:]
    assert sorted(b.name for b in c.list_blobs()) == sorted(files)
    assert c.download_blob("nested/data.bin").readall() == files["nested/data.bin"]
    back = tmp_path / "back"
    back.mkdir()
    down = subprocess.run([exe, "copy", dest, str(back), "--recursive", "--skip-version-check", "--check-md5", "FailIfDifferent",
                           "--from-to", "BlobLocal"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-2000:]
    got = back / c.container_name
    for rel in files:
        assert filecmp.cmp(src / rel, got / rel, shallow=False), rel
    # A read-only SAS cannot upload.
    ro = generate_container_sas(account["name"], c.container_name, account_key=account["key"], permission="rl",
                                expiry=_now() + timedelta(hours=1))
    denied = subprocess.run([exe, "copy", str(src / "top.txt"), f"{base}/denied.txt?{ro}", "--skip-version-check",
                             "--from-to", "LocalBlob"], env={**env, "AZCOPY_REQUEST_TRY_TIMEOUT": "1"},
                            capture_output=True, text=True, timeout=120)
    assert denied.returncode != 0, denied.stdout[-2000:]
    assert "denied.txt" not in [b.name for b in c.list_blobs()]


def test_revoke_user_delegation_keys(az, ciel, account, role_ids):
    c = _container(ciel, account, "revoke")
    c.upload_blob("r.txt", b"revocable")
    sp = ciel.create_sp(f"rev-{uuid.uuid4().hex[:6]}")
    ciel.assign_role(account["id"], role_ids["Storage Blob Data Reader"], sp["objectId"])
    cred = ClientSecretCredential(ciel.tenant, sp["appId"], sp["password"], authority=ciel.login,
                                  disable_instance_discovery=True, connection_verify=ciel.ca)
    svc = _svc(ciel, account, cred)
    udk = svc.get_user_delegation_key(_now() - timedelta(minutes=1), _now() + timedelta(hours=1))
    sas = generate_blob_sas(account["name"], c.container_name, "r.txt", user_delegation_key=udk, permission="r",
                            expiry=_now() + timedelta(minutes=30))
    url = _blob_url(account, c.container_name, "r.txt", sas)
    assert requests.get(url, verify=ciel.ca, timeout=30).content == b"revocable"
    az("storage", "account", "revoke-delegation-keys", "-n", account["name"], "-g", account["rg"])
    r = requests.get(url, verify=ciel.ca, timeout=30)
    assert r.status_code == 403 and r.headers["x-ms-error-code"] == "AuthenticationFailed", describe(r)
    # A key issued after the revocation works.
    fresh = svc.get_user_delegation_key(_now() - timedelta(minutes=1), _now() + timedelta(hours=1))
    sas = generate_blob_sas(account["name"], c.container_name, "r.txt", user_delegation_key=fresh, permission="r",
                            expiry=_now() + timedelta(minutes=30))
    assert requests.get(_blob_url(account, c.container_name, "r.txt", sas), verify=ciel.ca, timeout=30).content == b"revocable"


def test_sas_use_and_refusals_are_audited_without_the_signature(ciel, account):
    import sqlite3
    from urllib.parse import parse_qs

    c = _container(ciel, account, "audit")
    sas = generate_container_sas(account["name"], c.container_name, account_key=account["key"], permission="cw",
                                 expiry=_now() + timedelta(hours=1))
    sig = parse_qs(sas)["sig"][0]
    ContainerClient.from_container_url(f"{account['url']}/{c.container_name}?{sas}",
                                       connection_verify=ciel.ca).upload_blob("a.txt", b"audited")
    tampered = sas.replace("sp=cw", "sp=rcw")
    r = requests.get(f"{account['url']}/{c.container_name}/a.txt?{tampered}", verify=ciel.ca, timeout=30)
    assert r.status_code == 403, describe(r)
    db = sqlite3.connect(f"file:{ciel.data_dir}/ciel.db?mode=ro", uri=True)
    rows = db.execute("SELECT actor, action, target, outcome, details FROM audit_log WHERE target LIKE ? ORDER BY seq",
                      (f"%{account['name']}%",)).fetchall()
    everything = db.execute("SELECT group_concat(actor || action || target || details, '|') FROM audit_log").fetchone()[0]
    db.close()
    writes = [r for r in rows if r[2].endswith(f"/containers/{c.container_name}/blobs/a.txt") and r[3] == "success"]
    assert writes and writes[-1][0].startswith("sas:service:"), rows[-5:]
    denied = [r for r in rows if r[3] == "denied" and "SAS: AuthenticationFailed" in r[4]]
    assert denied, rows[-5:]
    assert sig not in everything and sig.replace("+", "%2B") not in everything


def test_copies_across_accounts_need_a_sas_on_the_source(ciel, group, account, tmp_path: Path):
    src = _container(ciel, account, "xsrc")
    data = os.urandom(6 * 1024 * 1024 + 3)
    src.upload_blob("dir/big.bin", data)
    src.upload_blob("small.txt", b"small")
    other = _make_account(ciel, group)
    dst = _container(ciel, other, "xdst")
    plain = f"{account['url']}/{src.container_name}/dir/big.bin"
    # Without a SAS the other account's blob is not readable: nothing is copied.
    with pytest.raises(HttpResponseError) as e:
        dst.get_blob_client("nosas.bin").start_copy_from_url(plain, requires_sync=True)
    assert e.value.error_code == "CannotVerifyCopySource"
    sas = generate_container_sas(account["name"], src.container_name, account_key=account["key"], permission="rl",
                                 expiry=_now() + timedelta(hours=1))
    props = dst.get_blob_client("copy.bin").start_copy_from_url(f"{plain}?{sas}", requires_sync=True)
    assert props["copy_status"] == "success"
    assert dst.download_blob("copy.bin").readall() == data
    dst.get_blob_client("fromurl.bin").upload_blob_from_url(f"{plain}?{sas}")
    assert dst.download_blob("fromurl.bin").readall() == data
    bc = dst.get_blob_client("blocks.bin")
    bc.stage_block_from_url("QUFB", f"{plain}?{sas}", source_offset=0, source_length=4 * 1024 * 1024)
    bc.stage_block_from_url("QkJC", f"{plain}?{sas}", source_offset=4 * 1024 * 1024,
                            source_length=len(data) - 4 * 1024 * 1024)
    bc.commit_block_list(["QUFB", "QkJC"])
    assert bc.download_blob().readall() == data
    # A tampered or write-only source SAS is refused.
    with pytest.raises(HttpResponseError) as e:
        dst.get_blob_client("tampered.bin").start_copy_from_url(f"{plain}?{sas.replace('sp=rl', 'sp=rwl')}", requires_sync=True)
    assert e.value.error_code == "CannotVerifyCopySource"
    wo = generate_container_sas(account["name"], src.container_name, account_key=account["key"], permission="w",
                                expiry=_now() + timedelta(hours=1))
    with pytest.raises(HttpResponseError) as e:
        dst.get_blob_client("writeonly.bin").start_copy_from_url(f"{plain}?{wo}", requires_sync=True)
    assert e.value.error_code == "CannotVerifyCopySource"
    assert sorted(b.name for b in dst.list_blobs()) == ["blocks.bin", "copy.bin", "fromurl.bin"]

    # azcopy, service to service: a container to another account, SAS on both sides.
    exe = _azcopy()
    if exe is None:
        pytest.fail("azcopy is missing: scripts/test installs it from npm (@azure-tools/azcopy-linux); set CIEL_AZCOPY")
    dsas = generate_container_sas(other["name"], dst.container_name, account_key=other["key"], permission="rwlc",
                                  expiry=_now() + timedelta(hours=1))
    base_src = f"https://127.0.0.1:{ciel.port}/{account['name']}/{src.container_name}"
    base_dst = f"https://127.0.0.1:{ciel.port}/{other['name']}/{dst.container_name}/s2s"
    env = {**os.environ, "SSL_CERT_FILE": ciel.ca, "AZCOPY_LOG_LOCATION": str(tmp_path / "logs"),
           "AZCOPY_JOB_PLAN_LOCATION": str(tmp_path / "plans")}
    run = subprocess.run([exe, "copy", f"{base_src}/*?{sas}", f"{base_dst}?{dsas}", "--recursive",
                          "--skip-version-check", "--from-to", "BlobBlob"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert dst.download_blob("s2s/dir/big.bin").readall() == data
    assert dst.download_blob("s2s/small.txt").readall() == b"small"


def test_az_cli_upload_and_download_batch(az, ciel, account, tmp_path: Path):
    base = ["--account-name", account["name"], "--account-key", account["key"]]
    cname = f"batch-{uuid.uuid4().hex[:6]}"
    az("storage", "container", "create", "-n", cname, *base)
    src = tmp_path / "tree"
    (src / "a" / "b").mkdir(parents=True)
    files = {"top.txt": b"top", "a/one.bin": os.urandom(70_000), "a/b/deux été.txt": "unicode\n".encode()}
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    az("storage", "blob", "upload-batch", "-d", cname, "-s", str(src), *base)
    listed = az("storage", "blob", "list", "-c", cname, *base)
    assert sorted(b["name"] for b in listed) == sorted(files)
    back = tmp_path / "back"
    back.mkdir()
    az("storage", "blob", "download-batch", "-d", str(back), "-s", cname, *base)
    for rel, data in files.items():
        assert (back / rel).read_bytes() == data, rel


def test_az_cli_cors(az, ciel, group):
    acct = _make_account(ciel, group)
    base = ["--account-name", acct["name"], "--account-key", acct["key"]]
    az("storage", "cors", "add", "--services", "b", "--methods", "GET", "PUT", "--origins", "https://portail.example.fr",
       "--allowed-headers", "x-ms-meta-*", "--max-age", "300", *base)
    rules = az("storage", "cors", "list", "--services", "b", *base)
    assert len(rules) == 1 and rules[0]["AllowedOrigins"] == "https://portail.example.fr", rules
    az("storage", "cors", "clear", "--services", "b", *base)
    assert az("storage", "cors", "list", "--services", "b", *base) == []
