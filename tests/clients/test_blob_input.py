"""Blob uploads at size and under bad input: a 256 MiB upload with the SDK's parallel blocks,
bodies shorter or longer than their Content-Length on a raw TLS socket, and names that try to
climb out of their container. Nothing partial is ever visible; nothing escapes the data
directory."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient, generate_container_sas

from cieltest import DOMAIN, describe

API = "2025-08-01"


@pytest.fixture(scope="module")
def account(ciel):
    rg = f"input-{uuid.uuid4().hex[:8]}"
    ciel.create_group(rg)
    name = f"inp{uuid.uuid4().hex[:12]}"
    r = ciel.arm_call("PUT", f"/subscriptions/{ciel.sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}",
                      params={"api-version": API},
                      json_body={"location": "francecentral", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"})
    assert r.status_code == 200, describe(r)
    key = ciel.arm_call("POST", f"{r.json()['id']}/listKeys", params={"api-version": API}).json()["keys"][0]["value"]
    return {"name": name, "key": key, "url": f"https://{name}.blob.core.{DOMAIN}:{ciel.port}"}


@pytest.fixture()
def container(ciel, account):
    svc = BlobServiceClient(account["url"], credential=account["key"], connection_verify=ciel.ca)
    c = svc.create_container(f"in-{uuid.uuid4().hex[:8]}")
    sas = generate_container_sas(account["name"], c.container_name, account_key=account["key"], permission="rcwdl",
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    return c, sas


def _raw(ciel, account, request: bytes, body_parts: list[bytes], close_early: bool = False) -> bytes:
    """Sends bytes on one TLS connection to the account's host; returns what came back."""
    host = f"{account['name']}.blob.core.{DOMAIN}"
    ctx = ssl.create_default_context(cafile=ciel.ca)
    with socket.create_connection(("127.0.0.1", ciel.port), timeout=15) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(request)
            for p in body_parts:
                s.sendall(p)
            if close_early:
                return b""
            s.settimeout(10)
            out = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    out += chunk
            except (socket.timeout, ssl.SSLError, ConnectionResetError):
                pass
            return out


def _put(account, container: str, blob: str, sas: str, length: int) -> bytes:
    host = f"{account['name']}.blob.core.{DOMAIN}"
    return (f"PUT /{container}/{blob}?{sas} HTTP/1.1\r\nHost: {host}\r\nx-ms-blob-type: BlockBlob\r\n"
            f"x-ms-version: 2026-04-06\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n").encode()


def test_256_mib_upload_with_parallel_blocks(ciel, account, container):
    c, _ = container
    data = os.urandom(256 * 1024 * 1024)
    bc = BlobServiceClient(account["url"], credential=account["key"], connection_verify=ciel.ca,
                           max_block_size=8 * 1024 * 1024, max_single_put_size=8 * 1024 * 1024) \
        .get_blob_client(c.container_name, "quarter-gib.bin")
    bc.upload_blob(data, max_concurrency=4)
    committed, _ = bc.get_block_list("committed")
    assert len(committed) == 32 and sum(b.size for b in committed) == len(data)
    got = hashlib.sha256()
    for chunk in bc.download_blob(max_concurrency=4).chunks():
        got.update(chunk)
    assert got.digest() == hashlib.sha256(data).digest()


def test_body_shorter_than_content_length_stores_nothing(ciel, account, container):
    c, sas = container
    _raw(ciel, account, _put(account, c.container_name, "short.bin", sas, 100_000), [b"x" * 40_000], close_early=True)
    # The server sees the connection end mid-body; give it a moment, then nothing is visible.
    import time
    time.sleep(1)
    assert "short.bin" not in [b.name for b in c.list_blobs()]
    before = {p for p in (Path(ciel.data_dir) / "blobs").rglob("*.partial")}
    assert not before, before


def test_body_longer_than_content_length_is_cut_at_the_declared_length(ciel, account, container):
    c, sas = container
    out = _raw(ciel, account, _put(account, c.container_name, "long.bin", sas, 10), [b"0123456789EXTRA-BYTES"])
    assert out.startswith(b"HTTP/1.1 201"), out[:200]
    # The bytes past Content-Length are not part of the blob (they would be a next request).
    assert c.download_blob("long.bin").readall() == b"0123456789"


def test_names_never_leave_their_container(ciel, account, container):
    c, sas = container
    root = Path(ciel.data_dir).resolve()
    for name in ["..%2F..%2Fescape.txt", "a/../../escape2.txt", "%2E%2E/%2E%2E/escape3.txt"]:
        out = _raw(ciel, account, _put(account, c.container_name, name, sas, 3), [b"abc"])
        status = out.split(b" ", 2)[1] if out else b""
        assert status in (b"201", b"400"), out[:300]
    # Whatever was stored is a blob with a literal name inside the container, never a file path
    # (read back raw: HTTP libraries would fold the dot segments of such names).
    names = [b.name for b in c.list_blobs()]
    assert names, "no name was stored at all"
    host = f"{account['name']}.blob.core.{DOMAIN}"
    for name in ["..%2F..%2Fescape.txt", "a/../../escape2.txt", "%2E%2E/%2E%2E/escape3.txt"]:
        get = (f"GET /{c.container_name}/{name}?{sas} HTTP/1.1\r\nHost: {host}\r\nx-ms-version: 2026-04-06\r\n"
               "Connection: close\r\n\r\n").encode()
        out = _raw(ciel, account, get, [])
        assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"abc"), (names, out[:300])
    for p in [root.parent / "escape.txt", root / "escape.txt", root.parent / "escape2.txt", root.parent / "escape3.txt"]:
        assert not p.exists(), p
    # A container name that is a dot segment is refused.
    out = _raw(ciel, account, _put(account, "..", "x.txt", sas, 3), [b"abc"])
    assert out.split(b" ", 2)[1] in (b"400", b"403", b"404"), out[:300]


def _crc64_b64(data: bytes) -> str:
    import base64

    from azure.storage.extensions.checksums import crc64

    return base64.b64encode(crc64.compute(data, 0).to_bytes(8, "little")).decode()


def test_crc64_and_md5_checked_on_upload_and_returned_per_range(ciel, account, container):
    import base64

    import requests

    c, sas = container
    url = f"{account['url']}/{c.container_name}"
    v = {"x-ms-version": "2026-04-06"}
    data = os.urandom(3 * 1024 * 1024 + 11)
    # Put Blob with the right CRC64: stored, and the server's CRC64 echoed.
    r = requests.put(f"{url}/crc.bin?{sas}", data=data, verify=ciel.ca, timeout=60,
                     headers={**v, "x-ms-blob-type": "BlockBlob", "x-ms-content-crc64": _crc64_b64(data)})
    assert r.status_code == 201 and r.headers["x-ms-content-crc64"] == _crc64_b64(data), describe(r)
    # A wrong CRC64 stores nothing (Put Blob, Put Block, Append Block).
    wrong = _crc64_b64(data[:-1])
    r = requests.put(f"{url}/bad.bin?{sas}", data=data, verify=ciel.ca, timeout=60,
                     headers={**v, "x-ms-blob-type": "BlockBlob", "x-ms-content-crc64": wrong})
    assert r.status_code == 400 and r.headers["x-ms-error-code"] == "Crc64Mismatch", describe(r)
    block_id = base64.b64encode(b"block-01").decode()
    r = requests.put(f"{url}/blocks.bin?comp=block&blockid={block_id}&{sas}", data=data, verify=ciel.ca, timeout=60,
                     headers={**v, "x-ms-content-crc64": wrong})
    assert r.status_code == 400 and r.headers["x-ms-error-code"] == "Crc64Mismatch", describe(r)
    r = requests.put(f"{url}/blocks.bin?comp=block&blockid={block_id}&{sas}", data=data, verify=ciel.ca, timeout=60,
                     headers={**v, "x-ms-content-crc64": _crc64_b64(data)})
    assert r.status_code == 201 and r.headers["x-ms-content-crc64"] == _crc64_b64(data), describe(r)
    r = requests.put(f"{url}/log.txt?{sas}", verify=ciel.ca, timeout=60, headers={**v, "x-ms-blob-type": "AppendBlob"})
    assert r.status_code == 201, describe(r)
    r = requests.put(f"{url}/log.txt?comp=appendblock&{sas}", data=b"line\n", verify=ciel.ca, timeout=60,
                     headers={**v, "x-ms-content-crc64": _crc64_b64(b"other\n")})
    assert r.status_code == 400 and r.headers["x-ms-error-code"] == "Crc64Mismatch", describe(r)
    names = [b.name for b in c.list_blobs()]
    assert "bad.bin" not in names and c.get_blob_client("log.txt").get_blob_properties().size == 0

    # Per-range digests on download: the SDK's validate_content asks for the range's MD5 and
    # checks it; CRC64 on request. Azure's limit: ranges of at most 4 MiB.
    got = c.download_blob("crc.bin", offset=1_000_000, length=2_000_000, validate_content=True).readall()
    assert got == data[1_000_000:3_000_000]
    r = requests.get(f"{url}/crc.bin?{sas}", verify=ciel.ca, timeout=60,
                     headers={**v, "x-ms-range": "bytes=5-1048580", "x-ms-range-get-content-crc64": "true"})
    assert r.status_code == 206 and r.headers["x-ms-content-crc64"] == _crc64_b64(data[5:1048581]), describe(r)
    assert r.content == data[5:1048581]
    r = requests.get(f"{url}/crc.bin?{sas}", verify=ciel.ca, timeout=60,
                     headers={**v, "x-ms-range-get-content-md5": "true"})
    assert r.status_code == 400 and r.headers["x-ms-error-code"] == "OutOfRangeInput", describe(r)
    r = requests.get(f"{url}/crc.bin?{sas}", verify=ciel.ca, timeout=60,
                     headers={**v, "x-ms-range": "bytes=0-", "x-ms-range-get-content-crc64": "true"})
    assert r.status_code == 206 and r.headers["x-ms-content-crc64"] == _crc64_b64(data), describe(r)
