"""Fixtures of the black-box client tests.

The session server (`ciel`) is one `ciel up` shared by all tests that do not need to stop it;
tests that restart, kill or tamper with a server take their own from `server_factory`.
Everything runs under a temporary directory in /tmp; server logs are printed when a start fails.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import pytest

from cieltest import DOMAIN, STRACE, AzCli, ServerPool, ciel_bin, main_server_port

os.environ.setdefault("AZURE_CORE_COLLECT_TELEMETRY", "false")


def pytest_report_header(config):
    return [f"ciel binary: {ciel_bin()}"]


@pytest.fixture(scope="session")
def test_root():
    keep = os.environ.get("CIEL_TEST_KEEP") == "1"
    root = Path(tempfile.mkdtemp(prefix="ciel-client-tests-", dir="/tmp"))
    yield root
    if not keep:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def servers(test_root):
    try:
        socket.getaddrinfo(f"login.{DOMAIN}", 443)
    except socket.gaierror as e:
        pytest.exit(f"login.{DOMAIN} does not resolve ({e}); install libnss-myhostname and add `myhostname` to the "
                    f"hosts: line of /etc/nsswitch.conf (scripts/test does both)", returncode=3)
    pool = ServerPool(test_root)
    atexit.register(pool.kill_all)
    yield pool
    pool.kill_all()
    # Sovereignty: no server of this run opened a connection to anything but the loopback.
    if STRACE:
        leaks = [f"{s.name}: {line}" for s in pool.servers for line in s.outbound_connections()]
        assert not leaks, "ciel connected outside the machine:\n" + "\n".join(leaks[:20])


@pytest.fixture(scope="session")
def ciel(servers):
    """The shared server. Its teardown checks that SIGTERM stops it with exit code 0 within 15 s."""
    s = servers.new("main", port=main_server_port()).start()
    yield s
    rc = s.stop()
    assert rc == 0, f"ciel up exited with {rc} after SIGTERM (None = still running after 15 s)\n{s.log_text(80)}"


@pytest.fixture
def server_factory(servers):
    """Returns new(name, **extra_env) -> a started server on its own data dir, stopped after the test."""
    mine = []

    def new(name: str = "extra", extra_env: dict | None = None, start: bool = True):
        s = servers.new(name, extra_env)
        mine.append(s)
        return s.start() if start else s

    yield new
    for s in mine:
        if s.running:
            s.stop()


@pytest.fixture(scope="session")
def make_az(test_root):
    """make_az(server, name=None) -> AzCli with its own fresh AZURE_CONFIG_DIR."""

    def make(server, name: str | None = None) -> AzCli:
        return AzCli(server, test_root / "az" / (name or uuid.uuid4().hex[:8]))

    return make


@pytest.fixture(scope="session")
def az(ciel, make_az):
    """The Azure CLI on the session server, Ciel cloud registered and the admin SP logged in."""
    cli = make_az(ciel, "admin")
    cli.register_cloud()
    cli.login_sp()
    return cli


@pytest.fixture(scope="session")
def tenant_b(ciel):
    """A second tenant with one service principal (which holds no role)."""
    t = ciel.cli("tenant", "create", "--name", f"tenant-b-{uuid.uuid4().hex[:6]}", "--domain", "tenantb.example.fr")
    for k in ("tenantId", "subscriptionId"):
        assert t.get(k), f"`ciel tenant create` output lacks {k}: {t}"
    assert t["tenantId"] != ciel.tenant
    sp = ciel.create_sp("tenant-b-sp", tenant=t["tenantId"])
    assert sp["tenantId"] == t["tenantId"]
    return {"tenant": t, "sp": sp, "tenantId": t["tenantId"], "subscriptionId": t["subscriptionId"]}


@pytest.fixture(scope="session")
def role_ids(ciel):
    """roleName -> full role definition id at the session subscription scope."""
    r = ciel.arm_call("GET", f"/subscriptions/{ciel.sub}/providers/Microsoft.Authorization/roleDefinitions",
                      params={"api-version": "2022-04-01"})
    assert r.status_code == 200, r.text
    out = {}
    for d in r.json()["value"]:
        out[d["properties"]["roleName"]] = d["id"]
    for n in ("Owner", "Contributor", "Reader", "User Access Administrator"):
        assert n in out, f"built-in role {n} missing from {sorted(out)}"
    return out
