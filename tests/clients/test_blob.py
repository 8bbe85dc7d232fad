"""The Blob data plane, first part, with azure-storage-blob and az unchanged: containers and block
blobs in one piece, SharedKey and bearer tokens with the Storage Blob Data roles, host-style and
path-style addressing, encryption at rest, and the refusals of what is not built yet."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from pathlib import Path

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.storage.blob import BlobServiceClient

from cieltest import DOMAIN, describe

API = "2025-08-01"


def _acct() -> str:
    return f"blob{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def account(ciel):
    rg = f"blob-{uuid.uuid4().hex[:8]}"
    ciel.create_group(rg)
    name = _acct()
    r = ciel.arm_call("PUT", f"/subscriptions/{ciel.sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}",
                      params={"api-version": API},
                      json_body={"location": "francecentral", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"})
    assert r.status_code == 200, describe(r)
    keys = ciel.arm_call("POST", f"{r.json()['id']}/listKeys", params={"api-version": API}).json()["keys"]
    return {"name": name, "rg": rg, "id": r.json()["id"], "key": keys[0]["value"], "key2": keys[1]["value"]}


def host_url(ciel, name: str) -> str:
    return f"https://{name}.blob.core.{DOMAIN}:{ciel.port}"


def path_url(ciel, name: str) -> str:
    return f"https://127.0.0.1:{ciel.port}/{name}"


def _svc(ciel, url: str, credential) -> BlobServiceClient:
    return BlobServiceClient(url, credential=credential, connection_verify=ciel.ca)


@pytest.mark.parametrize("style", ["host", "path"])
def test_sdk_with_account_key(ciel, account, style):
    url = host_url(ciel, account["name"]) if style == "host" else path_url(ciel, account["name"])
    svc = _svc(ciel, url, account["key"])
    name = f"c-{style}-{uuid.uuid4().hex[:6]}"
    c = svc.create_container(name, metadata={"team": "data"})
    assert c.get_container_properties().metadata == {"team": "data"}
    with pytest.raises(ResourceExistsError):
        svc.create_container(name)

    data = os.urandom(3 * 1024 * 1024 + 17)  # several encryption chunks, a ragged end
    c.upload_blob("dir/one.bin", data, metadata={"k": "v"}, content_settings=None)
    c.upload_blob("dir/two.txt", b"hello")
    c.upload_blob("top.txt", b"")
    assert c.download_blob("dir/one.bin").readall() == data
    assert c.download_blob("dir/one.bin", offset=1_048_570, length=20).readall() == data[1_048_570:1_048_590]
    assert c.download_blob("top.txt").readall() == b""
    props = c.get_blob_client("dir/one.bin").get_blob_properties()
    assert props.size == len(data) and props.metadata == {"k": "v"} and props.blob_type == "BlockBlob"
    assert props.content_settings.content_md5 == bytearray(hashlib.md5(data).digest())
    assert props.server_encrypted is True

    assert [b.name for b in c.list_blobs()] == ["dir/one.bin", "dir/two.txt", "top.txt"]
    assert [b.name for b in c.walk_blobs(delimiter="/")] == ["dir/", "top.txt"]
    assert [b.name for b in c.list_blobs(name_starts_with="dir/")] == ["dir/one.bin", "dir/two.txt"]
    assert name in [x.name for x in svc.list_containers(name_starts_with="c-")]

    with pytest.raises(ResourceExistsError) as e:
        c.upload_blob("top.txt", b"x")  # the SDK sends If-None-Match: *
    assert e.value.error_code == "BlobAlreadyExists"
    c.upload_blob("top.txt", b"x", overwrite=True)
    assert c.download_blob("top.txt").readall() == b"x"
    c.delete_blob("dir/two.txt")
    with pytest.raises(ResourceNotFoundError):
        c.download_blob("dir/two.txt").readall()
    svc.delete_container(name)
    with pytest.raises(ResourceNotFoundError):
        svc.get_container_client(name).get_container_properties()


def test_paging_with_markers(ciel, account):
    svc = _svc(ciel, host_url(ciel, account["name"]), account["key"])
    c = svc.create_container(f"page-{uuid.uuid4().hex[:6]}")
    names = [f"p/{i:03d}" for i in range(25)] + [f"q/{i}" for i in range(3)] + ["z"]
    for n in names:
        c.upload_blob(n, n.encode())
    pages = list(c.list_blobs(results_per_page=7).by_page())
    assert len(pages) >= 4
    assert [b.name for p in pages for b in p] == sorted(names)
    walked = [b.name for p in c.walk_blobs(delimiter="/", results_per_page=1).by_page() for b in p]
    assert walked == ["p/", "q/", "z"], walked


def test_az_cli_key_and_login(az, ciel, account, tmp_path: Path, role_ids):
    src = tmp_path / "hello.txt"
    src.write_text("bonjour\n")
    base = ["--account-name", account["name"]]
    assert az("storage", "container", "create", "-n", "viakey", *base, "--auth-mode", "key")["created"] is True
    az("storage", "blob", "upload", "-c", "viakey", "-n", "a/hello.txt", "-f", str(src), *base, "--auth-mode", "key")
    listed = az("storage", "blob", "list", "-c", "viakey", *base, "--auth-mode", "key")
    assert [b["name"] for b in listed] == ["a/hello.txt"], listed
    dst = tmp_path / "back.txt"
    az("storage", "blob", "download", "-c", "viakey", "-n", "a/hello.txt", "-f", str(dst), *base, "--auth-mode", "key")
    assert dst.read_text() == "bonjour\n"
    # Path-style through --blob-endpoint, as the README tells users without wildcard DNS.
    endpoint = ["--blob-endpoint", path_url(ciel, account["name"]), "--account-key", account["key"]]
    listed = az("storage", "blob", "list", "-c", "viakey", *endpoint)
    assert [b["name"] for b in listed] == ["a/hello.txt"], listed

    # OAuth: managing containers needs a control-plane role (the admin is Owner), reading and
    # writing blobs needs a Storage Blob Data role, exactly as in Azure.
    assert az("storage", "container", "create", "-n", "vialogin", *base, "--auth-mode", "login")["created"] is True
    p = az.fails("storage", "blob", "upload", "-c", "vialogin", "-n", "x.txt", "-f", str(src), *base, "--auth-mode", "login")
    assert "required permissions" in p.stderr or "AuthorizationPermissionMismatch" in p.stderr, p.stderr
    admin_oid = next(s["objectId"] for s in ciel.cli("sp", "list", "--tenant", ciel.tenant) if s["appId"] == ciel.client_id)
    ciel.assign_role(account["id"], role_ids["Storage Blob Data Contributor"], admin_oid)
    az("storage", "blob", "upload", "-c", "vialogin", "-n", "x.txt", "-f", str(src), *base, "--auth-mode", "login")
    assert [b["name"] for b in az("storage", "blob", "list", "-c", "vialogin", *base, "--auth-mode", "login")] == ["x.txt"]


def test_bearer_roles_and_tenants(ciel, account, tenant_b, role_ids):
    url = host_url(ciel, account["name"])
    key_svc = _svc(ciel, url, account["key"])
    c = key_svc.create_container(f"rbac-{uuid.uuid4().hex[:6]}")
    c.upload_blob("doc.txt", b"secret")

    sp = ciel.create_sp(f"blob-reader-{uuid.uuid4().hex[:6]}")
    cred = ClientSecretCredential(ciel.tenant, sp["appId"], sp["password"], authority=ciel.login,
                                  disable_instance_discovery=True, connection_verify=ciel.ca)
    svc = _svc(ciel, url, cred)
    with pytest.raises(HttpResponseError) as e:
        svc.get_container_client(c.container_name).download_blob("doc.txt").readall()
    assert e.value.status_code == 403
    ciel.assign_role(account["id"], role_ids["Storage Blob Data Reader"], sp["objectId"])
    assert svc.get_container_client(c.container_name).download_blob("doc.txt").readall() == b"secret"
    with pytest.raises(HttpResponseError) as e:
        svc.get_container_client(c.container_name).upload_blob("new.txt", b"x")
    assert e.value.status_code == 403

    # The account's own audience is accepted too (and another account's is not).
    own = ciel.client_token(sp["appId"], sp["password"], scope=f"https://{account['name']}.blob.core.{DOMAIN}:{ciel.port}/.default")
    r = requests.get(f"{url}/{c.container_name}/doc.txt", headers={"Authorization": f"Bearer {own}", "x-ms-version": "2026-04-06"},
                     verify=ciel.ca, timeout=30)
    assert r.status_code == 200 and r.content == b"secret", describe(r)
    other = ciel.client_token(sp["appId"], sp["password"], scope=f"https://someoneelse.blob.core.{DOMAIN}:{ciel.port}/.default")
    r = requests.get(f"{url}/{c.container_name}/doc.txt", headers={"Authorization": f"Bearer {other}", "x-ms-version": "2026-04-06"},
                     verify=ciel.ca, timeout=30)
    assert r.status_code == 401, describe(r)

    b = tenant_b["sp"]
    cred_b = ClientSecretCredential(tenant_b["tenantId"], b["appId"], b["password"], authority=ciel.login,
                                    disable_instance_discovery=True, connection_verify=ciel.ca,
                                    additionally_allowed_tenants=["*"])
    with pytest.raises(HttpResponseError) as e:
        _svc(ciel, url, cred_b).get_container_client(c.container_name).download_blob("doc.txt").readall()
    assert e.value.status_code in (401, 403)


def test_refusals(ciel, account):
    url = host_url(ciel, account["name"])
    svc = _svc(ciel, url, account["key"])
    c = svc.create_container(f"ref-{uuid.uuid4().hex[:6]}")
    c.upload_blob("a.txt", b"abc")
    # A wrong key, no credentials, a forged SAS.
    with pytest.raises(ClientAuthenticationError) as e:
        _svc(ciel, url, base64.b64encode(os.urandom(64)).decode()).get_container_client(c.container_name).download_blob("a.txt").readall()
    assert e.value.error_code == "AuthenticationFailed"
    r = requests.get(f"{url}/{c.container_name}/a.txt", verify=ciel.ca, timeout=30)
    assert r.status_code == 401 and r.headers.get("x-ms-error-code") == "NoAuthenticationInformation", describe(r)
    r = requests.get(f"{url}/{c.container_name}/a.txt?sv=2025-01-05&sr=b&sp=r&se=2099-01-01&sig=abc", verify=ciel.ca, timeout=30)
    assert r.status_code == 403 and r.headers.get("x-ms-error-code") == "AuthenticationFailed", describe(r)
    # Not built yet: clear errors, nothing changed (blob kinds, leases, snapshots, copies and
    # tags are in test_blob_kinds.py; SAS in test_blob_sas.py).
    with pytest.raises(HttpResponseError) as e:
        c.get_blob_client("a.txt").set_standard_blob_tier("Cool")
    assert e.value.error_code == "FeatureNotSupported"
    assert c.get_blob_client("a.txt").get_blob_properties().blob_tier == "Hot"
    # A wrong Content-MD5 stores nothing.
    with pytest.raises(HttpResponseError) as e:
        c.get_blob_client("md5.txt").upload_blob(b"payload", validate_content=False,
                                                 headers={"Content-MD5": base64.b64encode(b"0" * 16).decode()})
    assert e.value.error_code == "Md5Mismatch"
    assert "md5.txt" not in [b.name for b in c.list_blobs()]
    # Ranges past the end.
    with pytest.raises(HttpResponseError) as e:
        c.download_blob("a.txt", offset=10, length=5).readall()
    assert e.value.status_code == 416
    # Bad container names.
    with pytest.raises(HttpResponseError):
        svc.create_container("Bad_Name")


def test_encrypted_at_rest_and_erased_with_the_account(ciel, account):
    name = _acct()
    rg = account["rg"]
    r = ciel.arm_call("PUT", f"/subscriptions/{ciel.sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}",
                      params={"api-version": API},
                      json_body={"location": "francecentral", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"})
    acct_id = r.json()["id"]
    key = ciel.arm_call("POST", f"{acct_id}/listKeys", params={"api-version": API}).json()["keys"][0]["value"]
    svc = _svc(ciel, host_url(ciel, name), key)
    marker = b"DOSSIER-MEDICAL-CONFIDENTIEL-" * 1000
    svc.create_container("secrets").upload_blob("patient.txt", marker)
    blobs_dir = Path(ciel.data_dir) / "blobs"
    files = [p for p in blobs_dir.rglob("*") if p.is_file()]
    assert files, "no object written"
    before = {p for p in files}
    for p in files:
        assert b"DOSSIER-MEDICAL" not in p.read_bytes(), f"plaintext found in {p}"
    # Deleting the account destroys its key and its data.
    r = ciel.arm_call("DELETE", acct_id, params={"api-version": API})
    assert r.status_code == 200, describe(r)
    after = {p for p in blobs_dir.rglob("*") if p.is_file()}
    gone = [p for p in before if p not in after]
    assert gone, "the deleted account's objects are still on disk"
    r = requests.get(f"{host_url(ciel, name)}/secrets/patient.txt", verify=ciel.ca, timeout=30)
    assert r.status_code in (401, 403, 404), describe(r)


def test_shared_key_can_be_disabled(ciel, account):
    name = _acct()
    path = f"/subscriptions/{ciel.sub}/resourceGroups/{account['rg']}/providers/Microsoft.Storage/storageAccounts/{name}"
    r = ciel.arm_call("PUT", path, params={"api-version": API},
                      json_body={"location": "francecentral", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2",
                                 "properties": {"allowSharedKeyAccess": False}})
    assert r.status_code == 200 and r.json()["properties"]["allowSharedKeyAccess"] is False, describe(r)
    key = ciel.arm_call("POST", f"{path}/listKeys", params={"api-version": API}).json()["keys"][0]["value"]
    with pytest.raises(HttpResponseError) as e:
        _svc(ciel, host_url(ciel, name), key).create_container("nope")
    assert e.value.error_code == "KeyBasedAuthenticationNotPermitted"


def test_block_uploads(ciel, account):
    svc = _svc(ciel, host_url(ciel, account["name"]), account["key"])
    c = svc.create_container(f"blocks-{uuid.uuid4().hex[:6]}")
    # Forced into blocks: 1 MiB blocks, so the ragged end and ranges cross block boundaries.
    data = os.urandom(5 * 1024 * 1024 + 3)
    small_blocks = BlobServiceClient(host_url(ciel, account["name"]), credential=account["key"], connection_verify=ciel.ca,
                                     max_single_put_size=1024, max_block_size=1024 * 1024)
    bc = small_blocks.get_blob_client(c.container_name, "chunked.bin")
    bc.upload_blob(data, max_concurrency=2)
    assert bc.download_blob().readall() == data
    assert bc.download_blob(offset=1024 * 1024 - 5, length=10).readall() == data[1024 * 1024 - 5:1024 * 1024 + 5]
    committed, uncommitted = bc.get_block_list("all")
    assert len(committed) == 6 and not uncommitted and sum(b.size for b in committed) == len(data)

    # Staging and committing by hand: Latest, Committed and Uncommitted picks.
    from azure.storage.blob import BlobBlock, BlockState
    hb = c.get_blob_client("hand.txt")
    hb.stage_block("QUFB", b"aaa")
    hb.stage_block("QkJC", b"bbb")
    assert [b.id for b in hb.get_block_list("uncommitted")[1]] == ["QUFB", "QkJC"]
    hb.commit_block_list([BlobBlock("QkJC"), BlobBlock("QUFB")])
    assert hb.download_blob().readall() == b"bbbaaa"
    hb.stage_block("Q0ND", b"ccc")
    hb.commit_block_list([BlobBlock("QUFB", BlockState.COMMITTED), BlobBlock("Q0ND", BlockState.UNCOMMITTED)])
    assert hb.download_blob().readall() == b"aaaccc"
    with pytest.raises(HttpResponseError) as e:
        hb.commit_block_list([BlobBlock("WldaWg==")])
    assert e.value.error_code == "InvalidBlockList"
    assert hb.download_blob().readall() == b"aaaccc", "a refused block list changed the blob"

    # Above the SDK's single-shot limit (64 MiB): its default path is blocks of 4 MiB.
    big = os.urandom(65 * 1024 * 1024)
    c.upload_blob("big.bin", big, max_concurrency=2)
    assert hashlib.sha256(c.download_blob("big.bin", max_concurrency=2).readall()).digest() == hashlib.sha256(big).digest()

    # Overwriting and deleting leave no orphan objects behind.
    files_before = {p for p in (Path(ciel.data_dir) / "blobs").rglob("*") if p.is_file()}
    c.delete_blob("big.bin")
    bc.upload_blob(b"small now", overwrite=True)
    files_after = {p for p in (Path(ciel.data_dir) / "blobs").rglob("*") if p.is_file()}
    import time as _t
    deadline = _t.monotonic() + 10
    while len(files_before - files_after) < 17 + 6 and _t.monotonic() < deadline:
        _t.sleep(0.2)
        files_after = {p for p in (Path(ciel.data_dir) / "blobs").rglob("*") if p.is_file()}
    assert len(files_before - files_after) >= 17 + 6, "replaced and deleted blocks were not removed"


def test_metadata_and_properties(ciel, account):
    from azure.storage.blob import ContentSettings
    svc = _svc(ciel, host_url(ciel, account["name"]), account["key"])
    c = svc.create_container(f"meta-{uuid.uuid4().hex[:6]}", metadata={"a": "1"})
    c.set_container_metadata({"b": "2"})
    assert c.get_container_properties().metadata == {"b": "2"}
    bc = c.upload_blob("doc.txt", b"hello", metadata={"x": "1"},
                       content_settings=ContentSettings(content_type="text/plain", cache_control="no-cache"))
    etag = bc.get_blob_properties().etag
    bc.set_blob_metadata({"y": "2"})
    p = bc.get_blob_properties()
    assert p.metadata == {"y": "2"} and p.etag != etag
    assert p.content_settings.content_type == "text/plain"
    bc.set_http_headers(ContentSettings(content_type="application/json", content_language="fr"))
    p = bc.get_blob_properties()
    assert p.content_settings.content_type == "application/json" and p.content_settings.content_language == "fr"
    assert p.content_settings.cache_control is None, "Set Blob Properties clears what it is not given"
    assert p.metadata == {"y": "2"}, "properties and metadata are set separately"
    assert bc.download_blob().readall() == b"hello", "setting properties does not touch the content"
    from azure.core import MatchConditions
    with pytest.raises(HttpResponseError) as e:
        bc.set_blob_metadata({"z": "3"}, etag=etag, match_condition=MatchConditions.IfNotModified)
    assert e.value.status_code == 412
    assert bc.get_blob_properties().metadata == {"y": "2"}
