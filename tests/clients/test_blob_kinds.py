"""Blob kinds and blob features with azure-storage-blob unchanged: leases (blobs and containers),
snapshots, append blobs, page blobs, same-account copies and blob index tags, with their
refusals of bad input."""

from __future__ import annotations

import os
import uuid

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobBlock, BlobLeaseClient, BlobServiceClient

from cieltest import DOMAIN, describe

API = "2025-08-01"


@pytest.fixture(scope="module")
def account(ciel):
    rg = f"kinds-{uuid.uuid4().hex[:8]}"
    ciel.create_group(rg)
    name = f"kinds{uuid.uuid4().hex[:12]}"
    r = ciel.arm_call("PUT", f"/subscriptions/{ciel.sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}",
                      params={"api-version": API},
                      json_body={"location": "francecentral", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"})
    assert r.status_code == 200, describe(r)
    keys = ciel.arm_call("POST", f"{r.json()['id']}/listKeys", params={"api-version": API}).json()["keys"]
    return {"name": name, "id": r.json()["id"], "key": keys[0]["value"]}


@pytest.fixture(scope="module")
def svc(ciel, account) -> BlobServiceClient:
    return BlobServiceClient(f"https://{account['name']}.blob.core.{DOMAIN}:{ciel.port}", credential=account["key"],
                             connection_verify=ciel.ca)


def _container(svc, prefix: str):
    return svc.create_container(f"{prefix}-{uuid.uuid4().hex[:8]}")


def _code(fn, *args, **kwargs) -> str:
    with pytest.raises(HttpResponseError) as e:
        fn(*args, **kwargs)
    return e.value.error_code


def test_blob_leases(svc):
    c = _container(svc, "lease")
    b = c.get_blob_client("leased.txt")
    b.upload_blob(b"v1")
    assert b.get_blob_properties().lease.state == "available"

    lease = b.acquire_lease(lease_duration=15)
    p = b.get_blob_properties()
    assert (p.lease.state, p.lease.status, p.lease.duration) == ("leased", "locked", "fixed")
    listed = next(iter(c.list_blobs()))
    assert listed.lease.state == "leased" and listed.lease.status == "locked"

    # Writes and deletes need the lease id; a wrong one is refused; nothing changes.
    assert _code(b.upload_blob, b"v2", overwrite=True) == "LeaseIdMissing"
    assert _code(b.upload_blob, b"v2", overwrite=True, lease=str(uuid.uuid4())) == "LeaseIdMismatchWithBlobOperation"
    assert _code(b.set_blob_metadata, {"k": "v"}) == "LeaseIdMissing"
    assert _code(b.delete_blob) == "LeaseIdMissing"
    assert _code(b.stage_block, "YmxvY2s=", b"x") == "LeaseIdMissing"
    assert b.download_blob().readall() == b"v1"
    b.upload_blob(b"v2", overwrite=True, lease=lease)
    b.set_blob_metadata({"k": "v"}, lease=lease)
    assert b.download_blob().readall() == b"v2"
    # The lease survives the overwrite.
    assert b.get_blob_properties().lease.state == "leased"

    # A second client cannot take it; the holder renews and changes it.
    assert _code(b.acquire_lease, lease_duration=15, lease_id=str(uuid.uuid4())) == "LeaseAlreadyPresent"
    lease.renew()
    new_id = str(uuid.uuid4())
    lease.change(new_id)
    assert lease.id == new_id
    assert _code(b.set_blob_metadata, {"k": "w"}, lease=str(uuid.uuid4())) == "LeaseIdMismatchWithBlobOperation"

    # Break: immediately broken, cannot be renewed; the blob is writable again without a lease.
    assert lease.break_lease(lease_break_period=0) == 0
    assert b.get_blob_properties().lease.state == "broken"
    assert _code(lease.renew) == "LeaseIsBrokenAndCannotBeRenewed"
    b.upload_blob(b"v3", overwrite=True)
    assert _code(b.upload_blob, b"v4", overwrite=True, lease=new_id) == "LeaseNotPresentWithBlobOperation"

    # Infinite lease, released.
    inf = b.acquire_lease(lease_duration=-1)
    assert b.get_blob_properties().lease.duration == "infinite"
    assert _code(b.acquire_lease, lease_duration=5) in ("InvalidHeaderValue", "LeaseAlreadyPresent")
    held = inf.id
    inf.release()
    assert b.get_blob_properties().lease.state == "available"
    assert _code(BlobLeaseClient(b, lease_id=held).release) == "LeaseNotPresentWithLeaseOperation"
    b.delete_blob()


def test_container_leases(svc):
    c = _container(svc, "clease")
    lease = c.acquire_lease(lease_duration=-1)
    p = c.get_container_properties()
    assert (p.lease.state, p.lease.status, p.lease.duration) == ("leased", "locked", "infinite")
    assert next(x for x in svc.list_containers(name_starts_with=c.container_name)).lease.state == "leased"
    assert _code(c.delete_container) == "LeaseIdMissing"
    assert _code(c.delete_container, lease=str(uuid.uuid4())) == "LeaseIdMismatchWithContainerOperation"
    assert _code(c.acquire_lease, lease_id=str(uuid.uuid4())) == "LeaseAlreadyPresent"
    c.delete_container(lease=lease)
    assert c.container_name not in [x.name for x in svc.list_containers(name_starts_with=c.container_name)]


def test_snapshots(svc):
    c = _container(svc, "snap")
    b = c.get_blob_client("doc.txt")
    b.upload_blob(b"first", metadata={"v": "1"})
    s1 = b.create_snapshot()["snapshot"]
    b.upload_blob(b"second", overwrite=True, metadata={"v": "2"})
    s2 = b.create_snapshot(metadata={"label": "two"})["snapshot"]
    b.upload_blob(b"third", overwrite=True)

    # Snapshots keep their content (the shared object outlives the overwrite) and metadata.
    first = c.get_blob_client("doc.txt", snapshot=s1)
    assert first.download_blob().readall() == b"first"
    assert first.get_blob_properties().metadata == {"v": "1"}
    second = c.get_blob_client("doc.txt", snapshot=s2)
    assert second.download_blob().readall() == b"second"
    assert second.get_blob_properties().metadata == {"label": "two"}
    assert b.download_blob().readall() == b"third"

    listed = [(x.name, x.snapshot) for x in c.list_blobs(include=["snapshots"])]
    assert listed == [("doc.txt", s1), ("doc.txt", s2), ("doc.txt", None)], listed
    assert [x.name for x in c.list_blobs()] == ["doc.txt"]

    # A blob with snapshots is deleted only with them; a snapshot alone can be deleted.
    assert _code(b.delete_blob) == "SnapshotsPresent"
    first.delete_blob()
    assert _code(first.download_blob) == "BlobNotFound"
    b.delete_blob(delete_snapshots="only")
    assert [(x.name, x.snapshot) for x in c.list_blobs(include=["snapshots"])] == [("doc.txt", None)]
    b.create_snapshot()
    b.delete_blob(delete_snapshots="include")
    assert list(c.list_blobs(include=["snapshots"])) == []
    assert _code(c.get_blob_client("x", snapshot="not-a-time").download_blob) == "InvalidQueryParameterValue"


def test_append_blobs(svc):
    c = _container(svc, "append")
    a = c.get_blob_client("log.txt")
    a.create_append_blob()
    r = a.append_block(b"hello", appendpos_condition=0)
    assert (r["blob_append_offset"], r["blob_committed_block_count"]) == ("0", 1)
    r = a.append_block(b" world")
    assert (r["blob_append_offset"], r["blob_committed_block_count"]) == ("5", 2)
    assert a.download_blob().readall() == b"hello world"
    assert a.download_blob(offset=3, length=5).readall() == b"lo wo"
    p = a.get_blob_properties()
    assert p.blob_type == "AppendBlob" and p.size == 11 and p.append_blob_committed_block_count == 2
    assert next(iter(c.list_blobs())).blob_type == "AppendBlob"

    # Conditions: nothing is appended when they fail.
    assert _code(a.append_block, b"!", appendpos_condition=3) == "AppendPositionConditionNotMet"
    assert _code(a.append_block, b"!!", maxsize_condition=12) == "MaxBlobSizeConditionNotMet"
    assert a.download_blob().readall() == b"hello world"
    # Block operations do not apply to append blobs, nor appends to block blobs.
    assert _code(a.stage_block, "YmxvY2s=", b"x") == "InvalidBlobType"
    c.upload_blob("block.txt", b"x")
    assert _code(c.get_blob_client("block.txt").append_block, b"y") == "InvalidBlobType"
    # upload_blob with AppendBlob streams through create + append blocks.
    data = os.urandom(5 * 1024 * 1024 + 3)
    c.upload_blob("big.log", data, blob_type="AppendBlob")
    assert c.download_blob("big.log").readall() == data
    # A snapshot of an append blob keeps its length while appends go on.
    snap = a.create_snapshot()["snapshot"]
    a.append_block(b"!")
    assert c.get_blob_client("log.txt", snapshot=snap).download_blob().readall() == b"hello world"
    assert a.download_blob().readall() == b"hello world!"


def test_page_blobs(svc):
    c = _container(svc, "page")
    p = c.get_blob_client("disk.vhd")
    p.create_page_blob(4096, sequence_number=3)
    props = p.get_blob_properties()
    assert props.blob_type == "PageBlob" and props.size == 4096 and props.page_blob_sequence_number == 3
    assert p.download_blob().readall() == b"\0" * 4096

    p.upload_page(b"a" * 512, offset=0, length=512)
    p.upload_page(b"b" * 1024, offset=1024, length=1024)
    p.upload_page(b"c" * 512, offset=512, length=512)  # adjacent: one range
    ranges, clears = p.get_page_ranges()
    assert ranges == [{"start": 0, "end": 2047}] and clears == []
    assert p.download_blob().readall() == b"a" * 512 + b"c" * 512 + b"b" * 1024 + b"\0" * 2048
    snap = p.create_snapshot()["snapshot"]

    p.clear_page(offset=1024, length=512)
    p.upload_page(b"d" * 512, offset=3072, length=512)
    p.upload_page(b"e" * 512, offset=0, length=512)
    content = p.download_blob().readall()
    assert content == b"e" * 512 + b"c" * 512 + b"\0" * 512 + b"b" * 512 + b"\0" * 1024 + b"d" * 512 + b"\0" * 512
    assert p.download_blob(offset=1000, length=100).readall() == content[1000:1100]
    ranges, _ = p.get_page_ranges()
    assert ranges == [{"start": 0, "end": 1023}, {"start": 1536, "end": 2047}, {"start": 3072, "end": 3583}]
    listed = [(r.start, r.end, r.cleared) for r in p.list_page_ranges()]
    assert listed == [(0, 1023, False), (1536, 2047, False), (3072, 3583, False)], listed
    diff = [(r.start, r.end, r.cleared) for r in p.list_page_ranges(previous_snapshot=snap)]
    assert diff == [(0, 511, False), (1024, 1535, True), (3072, 3583, False)], diff
    changed, cleared = p.get_page_ranges(previous_snapshot_diff=snap)
    assert changed == [{"start": 0, "end": 511}, {"start": 3072, "end": 3583}], changed
    assert cleared == [{"start": 1024, "end": 1535}], cleared
    # The snapshot still reads its pages.
    assert c.get_blob_client("disk.vhd", snapshot=snap).download_blob().readall()[:2048] == \
        b"a" * 512 + b"c" * 512 + b"b" * 1024

    # Sequence numbers and their conditions.
    assert p.set_sequence_number("update", 7)["blob_sequence_number"] == 7
    assert p.set_sequence_number("increment")["blob_sequence_number"] == 8
    assert p.set_sequence_number("max", 5)["blob_sequence_number"] == 8
    assert _code(p.upload_page, b"f" * 512, offset=0, length=512, if_sequence_number_lte=7) == "SequenceNumberConditionNotMet"
    assert _code(p.upload_page, b"f" * 512, offset=0, length=512, if_sequence_number_eq=1) == "SequenceNumberConditionNotMet"
    p.upload_page(b"f" * 512, offset=0, length=512, if_sequence_number_lt=9)

    # Resize: shrinking drops the pages past the end, growing adds zeros.
    p.resize_blob(2048)
    assert p.get_blob_properties().size == 2048
    assert p.get_page_ranges()[0] == [{"start": 0, "end": 1023}, {"start": 1536, "end": 2047}]
    p.resize_blob(8192)
    assert p.download_blob().readall()[2048:] == b"\0" * 6144

    # Bad input changes nothing: past the end, misaligned, not a page blob, bad size.
    before = p.download_blob().readall()
    assert _code(p.upload_page, b"x" * 512, offset=8192, length=512) == "InvalidPageRange"
    with pytest.raises(HttpResponseError) as e:
        p._client.page_blob.upload_pages(body=b"x" * 100, content_length=100, range="bytes=0-99")
    # (the generated layer raises without the storage error parsing: read the header)
    assert e.value.status_code == 416 and e.value.response.headers["x-ms-error-code"] == "InvalidPageRange"
    assert p.download_blob().readall() == before
    c.upload_blob("block.bin", b"x")
    assert _code(c.get_blob_client("block.bin").upload_page, b"x" * 512, offset=0, length=512) == "InvalidBlobType"
    assert _code(c.get_blob_client("odd.vhd").create_page_blob, 1000) == "InvalidHeaderValue"
    assert _code(p.resize_blob, 1000) == "InvalidHeaderValue"
    # upload_blob with PageBlob writes the pages it is given.
    data = os.urandom(3 * 512)
    c.upload_blob("up.vhd", data, blob_type="PageBlob")
    assert c.download_blob("up.vhd").readall() == data
    assert next(b for b in c.list_blobs() if b.name == "up.vhd").blob_type == "PageBlob"


def test_copies_within_the_account(svc, ciel):
    c = _container(svc, "copy")
    src = c.get_blob_client("src.bin")
    data = os.urandom(2 * 1024 * 1024 + 5)
    src.upload_blob(data, metadata={"origin": "src"})

    dst = c.get_blob_client("dst.bin")
    r = dst.start_copy_from_url(src.url)
    assert r["copy_status"] == "success" and r["copy_id"]
    props = dst.get_blob_properties()
    assert props.copy.status == "success" and props.copy.id == r["copy_id"] and props.copy.source == src.url
    assert props.metadata == {"origin": "src"}
    assert dst.download_blob().readall() == data
    listed = next(b for b in c.list_blobs(include=["copy"]) if b.name == "dst.bin")
    assert listed.copy.status == "success"
    assert _code(dst.abort_copy, r["copy_id"]) == "NoPendingCopyOperation"

    # Synchronous copy, with new metadata.
    sync = c.get_blob_client("sync.bin")
    assert sync.start_copy_from_url(src.url, metadata={"m": "1"}, requires_sync=True)["copy_status"] == "success"
    assert sync.get_blob_properties().metadata == {"m": "1"}

    # Put Blob From URL: content only, a plain block blob.
    from_url = c.get_blob_client("fromurl.bin")
    from_url.upload_blob_from_url(src.url)
    assert from_url.download_blob().readall() == data
    assert from_url.get_blob_properties().copy.status is None

    # Put Block From URL: whole and partial sources, committed into a new blob.
    staged = c.get_blob_client("staged.bin")
    staged.stage_block_from_url("YQ==", src.url)
    staged.stage_block_from_url("Yg==", src.url, source_offset=10, source_length=100)
    staged.commit_block_list([BlobBlock("YQ=="), BlobBlock("Yg==")])
    assert staged.download_blob().readall() == data + data[10:110]

    # Copies share the source's objects: deleting or overwriting the source leaves them intact.
    snap = src.create_snapshot()["snapshot"]
    src.upload_blob(b"changed", overwrite=True)
    src.delete_blob(delete_snapshots="include")
    for b in (dst, sync, from_url):
        assert b.download_blob().readall() == data
    assert staged.download_blob().readall() == data + data[10:110]
    assert snap

    # Copying from a snapshot, and from what is missing or elsewhere.
    a = c.get_blob_client("a.txt")
    a.upload_blob(b"one")
    s = a.create_snapshot()["snapshot"]
    a.upload_blob(b"two", overwrite=True)
    c.get_blob_client("fromsnap.txt").start_copy_from_url(f"{a.url}?snapshot={s}")
    assert c.download_blob("fromsnap.txt").readall() == b"one"
    assert _code(c.get_blob_client("x").start_copy_from_url, f"{a.url}-missing") == "CannotVerifyCopySource"
    # Another account must exist and prove read access (test_blob_sas.py covers SAS sources);
    # a source outside Ciel would need an outbound connection, which Ciel never opens.
    other = f"https://otheraccount.blob.core.{DOMAIN}:{ciel.port}/c/b"
    assert _code(c.get_blob_client("x").start_copy_from_url, other) == "CannotVerifyCopySource"
    assert _code(c.get_blob_client("x").start_copy_from_url, "https://example.com/c/b") == "FeatureNotSupported"
    assert "x" not in [b.name for b in c.list_blobs()]


def test_blob_index_tags(svc):
    c = _container(svc, "tags")
    c2 = _container(svc, "tags2")
    b = c.get_blob_client("one.txt")
    b.upload_blob(b"1", tags={"project": "ciel", "stage": "2"})
    assert b.get_blob_tags() == {"project": "ciel", "stage": "2"}
    assert b.get_blob_properties().tag_count == 2
    etag = b.get_blob_properties().etag
    b.set_blob_tags({"project": "ciel", "stage": "5", "owner": "ops"})
    assert b.get_blob_tags() == {"project": "ciel", "stage": "5", "owner": "ops"}
    assert b.get_blob_properties().etag == etag  # tags do not change the content's ETag
    c.upload_blob("two.txt", b"2", tags={"project": "other"})
    c2.upload_blob("three.txt", b"3", tags={"project": "ciel", "stage": "9"})
    # Put Block List takes x-ms-tags too.
    big = c.get_blob_client("blocks.txt")
    big.stage_block("YQ==", b"abc")
    big.commit_block_list([BlobBlock("YQ==")], tags={"project": "ciel", "stage": "1"})
    assert big.get_blob_tags()["stage"] == "1"

    found = {(x.container_name, x.name) for x in svc.find_blobs_by_tags("\"project\" = 'ciel'")}
    assert found == {(c.container_name, "one.txt"), (c.container_name, "blocks.txt"), (c2.container_name, "three.txt")}
    found = [(x.name, x.tags) for x in svc.find_blobs_by_tags("project = 'ciel' AND stage >= '2' AND stage < '9'")]
    assert found == [("one.txt", {"project": "ciel", "stage": "5"})], found
    found = [x.name for x in svc.find_blobs_by_tags(f"@container = '{c2.container_name}' AND project = 'ciel'")]
    assert found == ["three.txt"]
    assert sorted(x.name for x in c.find_blobs_by_tags("project = 'ciel'")) == ["blocks.txt", "one.txt"]
    paged = list(svc.find_blobs_by_tags("project = 'ciel'", results_per_page=1).by_page())
    assert sum(len(list(p)) for p in paged) == 3

    listed = {x.name: x.tags for x in c.list_blobs(include=["tags"])}
    assert listed["one.txt"] == {"project": "ciel", "stage": "5", "owner": "ops"}

    # Bad tags and bad expressions change nothing.
    assert _code(b.set_blob_tags, {f"k{i}": "v" for i in range(11)}) == "InvalidTag"
    assert _code(b.set_blob_tags, {"bad&key": "v"}) == "InvalidTag"
    assert _code(c.upload_blob, "bad.txt", b"x", tags={"k": "v" * 257}) == "InvalidTag"
    assert b.get_blob_tags() == {"project": "ciel", "stage": "5", "owner": "ops"}
    with pytest.raises(HttpResponseError) as e:
        list(svc.find_blobs_by_tags("project = 'ciel' OR stage = '1'"))
    assert e.value.status_code == 400
    # x-ms-if-tags guards writes.
    assert _code(b.set_blob_metadata, {"m": "1"}, if_tags_match_condition="project = 'nope'") == "ConditionNotMet"
    b.set_blob_metadata({"m": "1"}, if_tags_match_condition="project = 'ciel'")


def test_token_callers_need_the_data_actions(ciel, account, svc, role_ids):
    """Leases, snapshots and appends are blob writes (Storage Blob Data Contributor); tags and
    Find Blobs by Tags need the tags and filter actions, which only Storage Blob Data Owner holds,
    as in Azure."""
    from azure.identity import ClientSecretCredential

    c = _container(svc, "rbac")
    c.upload_blob("doc.txt", b"x")
    c.get_blob_client("doc.txt").set_blob_tags({"k": "v"})
    sp = ciel.create_sp(f"kinds-{uuid.uuid4().hex[:6]}")
    cred = ClientSecretCredential(ciel.tenant, sp["appId"], sp["password"], authority=ciel.login,
                                  disable_instance_discovery=True, connection_verify=ciel.ca)
    tsvc = BlobServiceClient(f"https://{account['name']}.blob.core.{DOMAIN}:{ciel.port}", credential=cred,
                             connection_verify=ciel.ca)
    b = tsvc.get_container_client(c.container_name).get_blob_client("doc.txt")
    assert _code(b.acquire_lease) == "AuthorizationPermissionMismatch"
    ciel.assign_role(account["id"], role_ids["Storage Blob Data Contributor"], sp["objectId"])
    b.acquire_lease(lease_duration=15).release()
    assert b.create_snapshot()["snapshot"]
    assert _code(b.get_blob_tags) == "AuthorizationPermissionMismatch"
    assert _code(b.set_blob_tags, {"k": "w"}) == "AuthorizationPermissionMismatch"
    with pytest.raises(HttpResponseError) as e:
        list(tsvc.find_blobs_by_tags("k = 'v'"))
    assert e.value.status_code == 403
    ciel.assign_role(account["id"], role_ids["Storage Blob Data Owner"], sp["objectId"])
    assert b.get_blob_tags() == {"k": "v"}
    assert [x.name for x in tsvc.get_container_client(c.container_name).find_blobs_by_tags("k = 'v'")] == ["doc.txt"]


def test_az_cli_snapshot_lease_copy(az, svc, account, tmp_path):
    c = _container(svc, "azcli")
    f = tmp_path / "f.txt"
    f.write_text("bonjour")
    base = ["--account-name", account["name"], "--account-key", account["key"]]
    az("storage", "blob", "upload", "-c", c.container_name, "-n", "f.txt", "-f", str(f), *base)
    snap = az("storage", "blob", "snapshot", "-c", c.container_name, "-n", "f.txt", *base)["snapshot"]
    listed = az("storage", "blob", "list", "-c", c.container_name, "--include", "s", *base)
    assert [(b["name"], b["snapshot"]) for b in listed] == [("f.txt", snap), ("f.txt", None)], listed
    lease = az("storage", "blob", "lease", "acquire", "-c", c.container_name, "-b", "f.txt", "--lease-duration", "15", *base)
    p = az.fails("storage", "blob", "delete", "-c", c.container_name, "-n", "f.txt", "--delete-snapshots", "include", *base)
    assert "LeaseIdMissing" in p.stderr or "lease" in p.stderr.lower(), p.stderr
    az("storage", "blob", "lease", "release", "-c", c.container_name, "-b", "f.txt", "--lease-id", lease, *base)
    src = f"{svc.url.rstrip('/')}/{c.container_name}/f.txt"
    r = az("storage", "blob", "copy", "start", "--destination-container", c.container_name, "--destination-blob", "g.txt",
           "--source-uri", src, *base)
    assert r["copy_status"] == "success", r
    assert c.download_blob("g.txt").readall() == b"bonjour"
    # (blob tag commands live in a CLI extension, not in the core CLI)


def test_concurrent_appends_and_lease_races(svc):
    """Appends and lease acquisitions race through the store's compare-and-swap: no append is
    lost, and exactly one of several clients gets the lease."""
    from concurrent.futures import ThreadPoolExecutor

    c = _container(svc, "race")
    a = c.get_blob_client("log")
    a.create_append_blob()
    pieces = [f"{i:03d};".encode() for i in range(48)]
    with ThreadPoolExecutor(8) as pool:
        offsets = list(pool.map(lambda p: int(a.append_block(p)["blob_append_offset"]), pieces))
    content = a.download_blob().readall()
    assert len(content) == 4 * 48 and sorted(offsets) == list(range(0, 4 * 48, 4))
    assert sorted(content[i:i + 4] for i in range(0, len(content), 4)) == sorted(pieces)
    assert a.get_blob_properties().append_blob_committed_block_count == 48

    c.upload_blob("contested", b"x")
    b = c.get_blob_client("contested")

    def grab(_):
        try:
            return b.acquire_lease(lease_duration=-1, lease_id=str(uuid.uuid4())).id
        except HttpResponseError as e:
            assert e.error_code == "LeaseAlreadyPresent", e.error_code
            return None

    with ThreadPoolExecutor(8) as pool:
        winners = [w for w in pool.map(grab, range(8)) if w]
    assert len(winners) == 1
    b.upload_blob(b"y", overwrite=True, lease=winners[0])
