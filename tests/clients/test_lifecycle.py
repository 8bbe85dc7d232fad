"""Process lifecycle and plumbing: restart and kill -9 keep acknowledged state, SIGTERM exits 0 even
with open connections, metadata discovery, health, metrics, TLS versions and host names."""

from __future__ import annotations

import re
import socket
import ssl
import time
import uuid

import pytest
import requests
from azure.identity import ClientSecretCredential

try:
    from azure.mgmt.resource.resources import ResourceManagementClient
except ImportError:
    from azure.mgmt.resource import ResourceManagementClient

from cieltest import DOMAIN, assert_request_ids, describe

RG_API = "2021-04-01"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _ok_token(s, client_id, secret, tenant=None) -> str:
    r = s.token_response({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
                          "scope": s.arm_scope}, tenant=tenant)
    assert r.status_code == 200, f"credentials no longer work\n{describe(r)}"
    return r.json()["access_token"]


def test_restart_keeps_state(server_factory):
    s = server_factory("restart")
    env1 = dict(s.env)
    port1 = s.port
    token_before = s.admin_token()
    rg = _name("keep")
    s.create_group(rg, tags={"survives": "restart"})
    sp = s.create_sp(_name("keep-sp"))
    user = s.create_user()
    t2 = s.cli("tenant", "create", "--name", _name("keep-tenant"), "--domain", "keep.example.fr")

    rc = s.stop()
    assert rc == 0, f"SIGTERM exit code {rc}\n{s.log_text(50)}"
    s.start()
    assert s.port == port1
    for k in ("AZURE_TENANT_ID", "AZURE_SUBSCRIPTION_ID", "AZURE_CLIENT_ID", "CIEL_ARM_ENDPOINT", "AZURE_AUTHORITY_HOST"):
        assert s.env.get(k) == env1[k], f"{k} changed across restart: {env1[k]} -> {s.env.get(k)}"

    # A token issued before the restart is still valid (the signing keys persisted).
    r = s.get_group(rg, token=token_before)
    assert r.status_code == 200, describe(r)
    assert r.json()["tags"] == {"survives": "restart"}
    # The original credentials, the new SP and the user still sign in.
    _ok_token(s, env1["AZURE_CLIENT_ID"], env1["AZURE_CLIENT_SECRET"], env1["AZURE_TENANT_ID"])
    _ok_token(s, s.client_id, s.secret)
    _ok_token(s, sp["appId"], sp["password"])
    r = s.user_token_response(user["userPrincipalName"], user["password"])
    assert r.status_code == 200, describe(r)
    assert t2["tenantId"] in [t["tenantId"] for t in s.cli("tenant", "list")]

    p = s.cli_raw("audit", "verify")
    assert p.returncode == 0, p.stdout + p.stderr


def test_kill9_keeps_acknowledged_writes(server_factory):
    s = server_factory("kill9")
    names = [_name("k9") for _ in range(4)]
    for n in names[:-1]:
        s.create_group(n)
    cred = ClientSecretCredential(s.tenant, s.client_id, s.secret, authority=s.login, disable_instance_discovery=True,
                                  connection_verify=s.ca)
    rm = ResourceManagementClient(cred, s.sub, base_url=s.arm, credential_scopes=[s.arm_scope], connection_verify=s.ca)
    g = rm.resource_groups.create_or_update(names[-1], {"location": "francecentral", "tags": {"last": "write"}})
    assert g.name == names[-1]
    rc = s.kill()  # right after the acknowledgement
    assert rc == -9, rc

    s.start()
    for n in names:
        r = s.get_group(n)
        assert r.status_code == 200, f"acknowledged group {n} lost by kill -9\n{describe(r)}"
    assert s.get_group(names[-1]).json()["tags"] == {"last": "write"}
    p = s.cli_raw("audit", "verify")
    assert p.returncode == 0, f"audit chain broken after kill -9\n{p.stdout}\n{p.stderr}"


def test_sigterm_with_open_connections_exits_zero(server_factory):
    s = server_factory("sigterm")
    idle = requests.Session()
    r = idle.get(f"{s.arm}subscriptions", params={"api-version": "2022-12-01"},
                 headers={"Authorization": f"Bearer {s.admin_token()}"}, verify=s.ca, timeout=30)
    assert r.status_code == 200
    raw = socket.create_connection(("127.0.0.1", s.port))  # a client that never completes its handshake
    try:
        t0 = time.monotonic()
        rc = s.stop(timeout=15)
        elapsed = time.monotonic() - t0
    finally:
        raw.close()
        idle.close()
    assert rc == 0, f"exit code {rc} after SIGTERM (None: still running after 15 s)\n{s.log_text(50)}"
    assert elapsed < 15


@pytest.mark.parametrize("base", ["management", "ip"])
def test_metadata_endpoints(ciel, base):
    root = ciel.arm if base == "management" else f"https://127.0.0.1:{ciel.port}/"
    r = requests.get(f"{root}metadata/endpoints", params={"api-version": "2022-09-01"}, verify=ciel.ca, timeout=30)
    assert r.status_code == 200, describe(r)
    assert_request_ids(r)
    doc = r.json()
    assert isinstance(doc, dict), doc
    assert doc["resourceManager"].rstrip("/") == ciel.arm.rstrip("/"), doc
    auth = doc["authentication"]
    assert auth["loginEndpoint"].rstrip("/") == ciel.login, doc
    assert any(a.rstrip("/") == ciel.arm.rstrip("/") for a in auth["audiences"]), doc
    assert doc["microsoftGraphResourceId"].rstrip("/") == ciel.graph.rstrip("/"), doc

    for old in ("2019-05-01", "2015-01-01"):
        r = requests.get(f"{root}metadata/endpoints", params={"api-version": old}, verify=ciel.ca, timeout=30)
        assert r.status_code == 200, describe(r)
        arr = r.json()
        assert isinstance(arr, list) and arr, arr
        assert any(c.get("resourceManager", "").rstrip("/") == ciel.arm.rstrip("/") for c in arr), arr


def test_ip_address_answers_arm_and_login(ciel):
    ip = f"https://127.0.0.1:{ciel.port}"
    r = requests.get(f"{ip}/{ciel.tenant}/v2.0/.well-known/openid-configuration", verify=ciel.ca, timeout=30)
    assert r.status_code == 200 and r.json().get("token_endpoint"), describe(r)
    r = requests.get(f"{ip}/subscriptions", params={"api-version": "2022-12-01"},
                     headers={"Authorization": f"Bearer {ciel.admin_token()}"}, verify=ciel.ca, timeout=30)
    assert r.status_code == 200, describe(r)
    assert ciel.sub in [x["subscriptionId"] for x in r.json()["value"]]


def test_health_without_auth(ciel):
    answers = {}
    for path in ("/healthz", "/health"):
        r = requests.get(f"{ciel.arm.rstrip('/')}{path}", verify=ciel.ca, timeout=30)
        answers[path] = r.status_code
        if r.status_code == 200:
            return
    pytest.fail(f"no health endpoint answered 200 without a token: {answers}")


METRIC_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})?\s+[-+0-9.eENaInf]+(\s+-?\d+)?$')


def test_metrics_are_prometheus_text(ciel):
    ciel.get_group("metrics-probe")  # at least one ARM request counted
    r = requests.get(f"{ciel.arm.rstrip('/')}/metrics", verify=ciel.ca, timeout=30)
    assert r.status_code == 200, describe(r)
    ctype = r.headers.get("content-type", "")
    assert ctype.startswith("text/plain") or ctype.startswith("application/openmetrics-text"), ctype
    lines = [ln for ln in r.text.splitlines() if ln.strip()]
    assert any(ln.startswith("# TYPE ") for ln in lines), r.text[:500]
    samples = [ln for ln in lines if not ln.startswith("#")]
    assert samples, r.text[:500]
    bad = [ln for ln in samples if not METRIC_LINE.match(ln)]
    assert not bad, f"lines that are not Prometheus samples: {bad[:5]}"


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_tls_versions_and_host_names(ciel, version):
    v = getattr(ssl.TLSVersion, version)
    names = [f"login.{DOMAIN}", f"management.{DOMAIN}", f"graph.{DOMAIN}", f"acct1.blob.core.{DOMAIN}",
             f"kv1.vault.{DOMAIN}", "127.0.0.1"]
    for name in names:
        ctx = ssl.create_default_context(cafile=ciel.ca)
        ctx.minimum_version = v
        ctx.maximum_version = v
        with socket.create_connection(("127.0.0.1", ciel.port), timeout=10) as sock:
            try:
                with ctx.wrap_socket(sock, server_hostname=name) as tls:
                    assert tls.version() == version.replace("_", "."), tls.version()
            except ssl.SSLError as e:
                pytest.fail(f"{version} handshake for {name} failed: {e}")
