"""rclone (Debian's package, unchanged) against the Blob data plane: its azureblob backend with an
account key — make a container, copy a tree up (small files whole, large ones in blocks), list,
copy back, check, delete."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from cieltest import DOMAIN, describe

API = "2025-08-01"


def _rclone(ciel, account: str, key: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ,
               RCLONE_CONFIG_CIEL_TYPE="azureblob", RCLONE_CONFIG_CIEL_ACCOUNT=account, RCLONE_CONFIG_CIEL_KEY=key,
               RCLONE_CONFIG_CIEL_ENDPOINT=f"blob.core.{DOMAIN}:{ciel.port}",
               RCLONE_RETRIES="1", RCLONE_LOW_LEVEL_RETRIES="1", RCLONE_CONFIG="/dev/null")
    return subprocess.run(["rclone", "--ca-cert", ciel.ca, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_rclone_round_trip(ciel, tmp_path: Path):
    if shutil.which("rclone") is None:
        pytest.fail("rclone is not installed (scripts/test installs Debian's rclone)")
    rg = f"rclone-{uuid.uuid4().hex[:6]}"
    ciel.create_group(rg)
    name = f"rcl{uuid.uuid4().hex[:12]}"
    path = f"/subscriptions/{ciel.sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}"
    r = ciel.arm_call("PUT", path, params={"api-version": API},
                      json_body={"location": "francecentral", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"})
    assert r.status_code == 200, describe(r)
    key = ciel.arm_call("POST", f"{path}/listKeys", params={"api-version": API}).json()["keys"][0]["value"]

    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "small.txt").write_text("bonjour\n")
    (src / "empty.bin").write_bytes(b"")
    (src / "sub" / "deeper" / "x.txt").write_text("deep\n")
    (src / "big.bin").write_bytes(os.urandom(12 * 1024 * 1024 + 5))  # above rclone's upload cutoff: blocks

    def ok(*args):
        p = _rclone(ciel, name, key, *args)
        assert p.returncode == 0, f"rclone {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}"
        return p.stdout

    ok("mkdir", "ciel:data")
    ok("copy", str(src), "ciel:data")
    assert "data" in ok("lsd", "ciel:")
    listed = sorted(line.split(None, 1)[1] for line in ok("ls", "ciel:data").splitlines() if line.strip())
    assert listed == ["big.bin", "empty.bin", "small.txt", "sub/deeper/x.txt"], listed
    dst = tmp_path / "dst"
    ok("copy", "ciel:data", str(dst))
    cmp = filecmp.dircmp(src, dst)
    assert not cmp.left_only and not cmp.right_only and not cmp.diff_files, cmp.report()
    assert (dst / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    assert (dst / "sub" / "deeper" / "x.txt").read_text() == "deep\n"
    ok("check", str(src), "ciel:data")
    ok("delete", "ciel:data/small.txt")
    listed = [line.split(None, 1)[1] for line in ok("ls", "ciel:data").splitlines() if line.strip()]
    assert "small.txt" not in listed

    # A wrong key is refused.
    p = _rclone(ciel, name, key[:-4] + "AAA=", "ls", "ciel:data")
    assert p.returncode != 0
