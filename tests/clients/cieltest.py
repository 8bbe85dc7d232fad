"""Helpers shared by the black-box client tests: starting and stopping `ciel up`, the operator
CLI, raw HTTPS calls, tokens, and the Azure CLI in an isolated configuration directory.

Fixtures live in conftest.py; this module holds the plain code so that test files can import it.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
DOMAIN = "ciel.localhost"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0

# Well-known client id of the Azure CLI (a public client: password and refresh grants).
AZ_CLI_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"

# Prerequisites that scripts/test installs: under it (CIEL_TEST_STRICT=1) a missing one fails
# the test instead of skipping it.
STRICT = os.environ.get("CIEL_TEST_STRICT") == "1"


def ciel_bin() -> str:
    b = os.environ.get("CIEL_BIN") or str(REPO / "target" / "release" / "ciel")
    if not os.path.isabs(b):
        b = str((REPO / b).resolve())
    return b


def az_command() -> list[str]:
    """The Azure CLI of the venv running the tests (falls back to `python -m azure.cli`)."""
    explicit = os.environ.get("CIEL_AZ")
    if explicit:
        return [explicit]
    venv_az = Path(sys.executable).parent / "az"
    if venv_az.exists():
        return [str(venv_az)]
    return [sys.executable, "-m", "azure.cli"]


def missing_prerequisite(msg: str):
    if STRICT:
        pytest.fail(msg)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_available(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main_server_port() -> int | None:
    """The port of the shared server: 443 when it can be bound (as in production, and because MSAL's
    username/password flow asks https://login.D/common/userrealm/... on port 443 whatever the
    authority's port), else a free port. CIEL_TEST_PORT overrides (0 = any free port)."""
    env = os.environ.get("CIEL_TEST_PORT")
    if env is not None:
        return int(env) or None
    return 443 if port_available(443) else None


def parse_env_file(path: Path) -> dict[str, str]:
    """Parses `export NAME=value` lines (values may be shell-quoted)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line, comments=True)
        if words and words[0] == "export":
            words = words[1:]
        for w in words:
            if "=" in w:
                k, v = w.split("=", 1)
                out[k] = v
    return out


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def is_guid(s: Any) -> bool:
    try:
        uuid.UUID(str(s))
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Response checks
# ---------------------------------------------------------------------------------------------

def describe(resp: requests.Response) -> str:
    req = resp.request
    body = resp.text if resp.request.method != "HEAD" else ""
    if len(body) > 2000:
        body = body[:2000] + "...(truncated)"
    return (
        f"{req.method} {req.url} -> {resp.status_code}\n"
        f"response headers: {dict(resp.headers)}\nresponse body: {body}"
    )


def assert_request_ids(resp: requests.Response):
    for h in ("x-ms-request-id", "x-ms-correlation-request-id"):
        assert resp.headers.get(h), f"missing {h} header\n{describe(resp)}"


def arm_error(resp: requests.Response) -> dict:
    """Asserts the ARM error envelope {"error":{"code","message"}} and returns the inner object."""
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error response is not JSON\n{describe(resp)}")
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not an ARM error envelope\n{describe(resp)}"
    err = body["error"]
    assert isinstance(err.get("code"), str) and err["code"], f"error.code missing\n{describe(resp)}"
    assert isinstance(err.get("message"), str) and err["message"], f"error.message missing\n{describe(resp)}"
    return err


def expect_status(resp: requests.Response, *statuses: int):
    assert resp.status_code in statuses, f"expected {statuses}\n{describe(resp)}"


def expect_arm_error(resp: requests.Response, status, code=None) -> dict:
    statuses = status if isinstance(status, (tuple, list, set)) else (status,)
    expect_status(resp, *statuses)
    assert_request_ids(resp)
    if resp.request.method == "HEAD":
        return {}
    err = arm_error(resp)
    if code is not None:
        if callable(code):
            assert code(err["code"]), f"unexpected error code {err['code']!r}\n{describe(resp)}"
        else:
            codes = code if isinstance(code, (tuple, list, set)) else (code,)
            assert err["code"] in codes, f"expected error code {codes}\n{describe(resp)}"
    return err


def is_authn_code(code: str) -> bool:
    """ARM's 401 codes: AuthenticationFailed*, InvalidAuthenticationToken*, ExpiredAuthenticationToken."""
    return code.startswith("AuthenticationFailed") or "AuthenticationToken" in code


def wait_until(pred, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Polls `pred` until it returns a truthy value (returned) or fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------

STRACE = None if os.environ.get("CIEL_TEST_NO_STRACE") else shutil.which("strace")


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
                out += [int(k) for k in kids]
                todo += [int(k) for k in kids]
        except OSError:
            pass
    return out


def _traced_child(strace_pid: int, binary: str, timeout: float = 10) -> int:
    """The pid of the server strace started: the descendant running the server binary (a
    wrapper such as faketime may stand between them)."""
    want = os.path.realpath(binary)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in _descendants(strace_pid):
            try:
                if os.path.realpath(f"/proc/{p}/exe") == want:
                    return p
            except OSError:
                pass
        time.sleep(0.01)
    return strace_pid


def _signal(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


_LOOPBACK = re.compile(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"|inet_pton\(AF_INET6, "::ffff:127\.')


def outbound_connections(trace_text: str) -> list[str]:
    """The connect() calls of a strace log that leave the machine: anything but AF_UNIX and
    loopback addresses (AF_UNSPEC is a socket's disconnection, not a connection)."""
    out = []
    for line in trace_text.splitlines():
        if "connect(" not in line:
            continue
        if "AF_UNIX" in line or "AF_UNSPEC" in line or _LOOPBACK.search(line):
            continue
        out.append(line.strip())
    return out


class CielServer:
    """One `ciel up` process on its own data directory."""

    def __init__(self, base_dir: Path, name: str, extra_env: dict | None = None, port: int | None = None):
        self.name = name
        self.base = base_dir
        self.data_dir = base_dir / "data"
        self.log_path = base_dir / "server.log"
        self.extra_env = dict(extra_env or {})
        self.port: int | None = port
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}
        self._log_lock = threading.Lock()
        self._ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self._tokens: dict[tuple, tuple[str, float]] = {}
        self.http = requests.Session()
        self.starts = 0
        # Every connect() the server makes is recorded here (see `outbound_connections`).
        self.trace_dir = base_dir / "connect-trace"
        self.pid: int | None = None

    # --- process ---------------------------------------------------------------------------

    def _log(self, line: str):
        with self._log_lock:
            with open(self.log_path, "a", encoding="utf-8", errors="replace") as f:
                f.write(line if line.endswith("\n") else line + "\n")

    def _drain(self, stream, label: str):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            self._log(f"[{label}] {line}")
            if label == "stdout" and re.search(r"\bready\b", line, re.IGNORECASE):
                self._ready.set()
        stream.close()

    def log_text(self, tail: int = 200) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(lines[-tail:])

    def start(self) -> "CielServer":
        binary = ciel_bin()
        if not os.path.exists(binary):
            pytest.fail(f"ciel binary not found at {binary} (build it with `cargo build --release -p ciel` or set CIEL_BIN)")
        if self.port is None:
            self.port = free_port()
        self.base.mkdir(parents=True, exist_ok=True)
        self._ready.clear()
        self.starts += 1
        self._log(f"===== start #{self.starts} on 127.0.0.1:{self.port} =====")
        env = os.environ.copy()
        env.setdefault("RUST_BACKTRACE", "1")
        # Customer-managed keys are asked again every 2 s (60 s by default), so that the tests
        # see a revoked key bite quickly.
        env.setdefault("CIEL_CMK_CHECK_SECS", "2")
        env.update(self.extra_env)
        cmd = [binary, "up", "--data-dir", str(self.data_dir), "--domain", DOMAIN, "--listen", f"127.0.0.1:{self.port}"]
        launch = cmd
        if STRACE:
            # strace with a seccomp filter stops the server only on connect(): the sovereignty
            # check of every run (no connection leaves the machine) at negligible cost.
            self.trace_dir.mkdir(parents=True, exist_ok=True)
            launch = [STRACE, "-f", "-qq", "--seccomp-bpf", "-e", "trace=connect",
                      "-o", str(self.trace_dir / f"start-{self.starts}.txt"), *cmd]
        self.proc = subprocess.Popen(launch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        self.pid = self.proc.pid
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, "stderr"), daemon=True),
        ]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None:
                self._join_drains()
                pytest.fail(f"ciel up ({self.name}) exited with {self.proc.returncode} before printing 'ready'.\n"
                            f"command: {shlex.join(cmd)}\n--- log {self.log_path} ---\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"ciel up ({self.name}) did not print 'ready' within {READY_TIMEOUT}s.\n"
                            f"command: {shlex.join(cmd)}\n--- log {self.log_path} ---\n{self.log_text()}")
        if STRACE:
            self.pid = _traced_child(self.proc.pid, binary)
            self._log(f"===== server pid {self.pid} (under strace pid {self.proc.pid}) =====")
        env_file = self.data_dir / "ciel.env"
        try:
            wait_until(env_file.exists, 5, what=f"{env_file}")
        except AssertionError:
            self.kill()
            pytest.fail(f"{env_file} does not exist after 'ready'\n{self.log_text()}")
        self.env = parse_env_file(env_file)
        missing = [k for k in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_SUBSCRIPTION_ID",
                               "AZURE_AUTHORITY_HOST", "CIEL_ARM_ENDPOINT", "CIEL_GRAPH_ENDPOINT", "REQUESTS_CA_BUNDLE")
                   if not self.env.get(k)]
        assert not missing, f"{env_file} lacks {missing}: {self.env}"
        self._tokens.clear()
        return self

    def _join_drains(self):
        for t in self._threads:
            t.join(timeout=5)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Sends `sig` and waits up to `timeout`; returns the exit code (None on timeout, after SIGKILL)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            # Signals go to the server itself (under strace, self.proc is strace, which exits
            # with the server's status).
            _signal(self.pid or self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._log(f"===== did not exit {timeout}s after signal {sig}; sending SIGKILL =====")
                _signal(self.pid or self.proc.pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
                self._join_drains()
                return None
        self._join_drains()
        self.http.close()
        self.http = requests.Session()
        rc = self.proc.returncode
        self._log(f"===== exited with {rc} =====")
        return rc

    def kill(self) -> int | None:
        return self.stop(signal.SIGKILL, timeout=10)

    def outbound_connections(self) -> list[str]:
        """Every connect() this server made to a non-loopback address, over all its starts."""
        found = []
        for f in sorted(self.trace_dir.glob("*.txt")) if self.trace_dir.exists() else []:
            found += [f"{f.name}: {line}" for line in outbound_connections(f.read_text(errors="replace"))]
        return found

    # --- deployment facts ------------------------------------------------------------------

    @property
    def ca(self) -> str:
        return str(self.data_dir / "tls" / "ca.pem")

    @property
    def tenant(self) -> str:
        return self.env["AZURE_TENANT_ID"]

    @property
    def sub(self) -> str:
        return self.env["AZURE_SUBSCRIPTION_ID"]

    @property
    def client_id(self) -> str:
        return self.env["AZURE_CLIENT_ID"]

    @property
    def secret(self) -> str:
        return self.env["AZURE_CLIENT_SECRET"]

    @property
    def arm(self) -> str:
        """ARM endpoint with its trailing slash, e.g. https://management.ciel.localhost:8443/"""
        a = self.env["CIEL_ARM_ENDPOINT"]
        return a if a.endswith("/") else a + "/"

    @property
    def arm_scope(self) -> str:
        return self.arm + ".default"

    @property
    def graph(self) -> str:
        g = self.env["CIEL_GRAPH_ENDPOINT"]
        return g if g.endswith("/") else g + "/"

    @property
    def graph_scope(self) -> str:
        return self.graph + ".default"

    @property
    def login(self) -> str:
        return self.env["AZURE_AUTHORITY_HOST"].rstrip("/")

    def host_url(self, label: str) -> str:
        return f"https://{label}.{DOMAIN}" + ("" if self.port == 443 else f":{self.port}")

    def require_port_443(self, why: str):
        if self.port != 443:
            missing_prerequisite(f"the shared server is on port {self.port}, not 443: {why}")

    # --- operator CLI ----------------------------------------------------------------------

    def cli_raw(self, *args: str, output_json: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [ciel_bin(), *args, "--data-dir", str(self.data_dir)]
        if output_json:
            cmd += ["--output", "json"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        self._log(f"[cli] {shlex.join(cmd)} -> {p.returncode}")
        return p

    def cli(self, *args: str, timeout: float = 60) -> Any:
        """Runs `ciel ARGS --data-dir DIR --output json`; returns the parsed JSON (fails the test otherwise)."""
        p = self.cli_raw(*args, output_json=True, timeout=timeout)
        assert p.returncode == 0, f"`ciel {shlex.join(args)}` exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
        try:
            return json.loads(p.stdout)
        except ValueError:
            raise AssertionError(f"`ciel {shlex.join(args)} --output json` did not print JSON\nstdout: {p.stdout}\nstderr: {p.stderr}")

    def create_sp(self, name: str | None = None, tenant: str | None = None) -> dict:
        name = name or f"sp-{uuid.uuid4().hex[:8]}"
        sp = self.cli("sp", "create", "--tenant", tenant or self.tenant, "--name", name)
        for k in ("appId", "objectId", "tenantId", "password"):
            assert sp.get(k), f"`ciel sp create` output lacks {k}: {sp}"
        return sp

    def default_domain(self, tenant: str | None = None) -> str:
        tenant = tenant or self.tenant
        for t in self.cli("tenant", "list"):
            if t.get("tenantId") == tenant:
                return t["defaultDomain"]
        raise AssertionError(f"tenant {tenant} not in `ciel tenant list`")

    def create_user(self, upn: str | None = None, password: str = "Ciel-Test-Passw0rd!", tenant: str | None = None) -> dict:
        tenant = tenant or self.tenant
        upn = upn or f"user-{uuid.uuid4().hex[:8]}@{self.default_domain(tenant)}"
        u = self.cli("user", "create", "--tenant", tenant, "--upn", upn, "--password", password)
        for k in ("objectId", "userPrincipalName", "tenantId"):
            assert u.get(k), f"`ciel user create` output lacks {k}: {u}"
        u["password"] = password
        return u

    # --- HTTP ------------------------------------------------------------------------------

    def request(self, method: str, url: str, token: str | None = None, json_body: Any = None, data: Any = None,
                headers: dict | None = None, params: dict | None = None, timeout: float = 30) -> requests.Response:
        if not url.startswith("https://"):
            url = self.arm.rstrip("/") + url
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            data = json.dumps(json_body)
            h.setdefault("Content-Type", "application/json")
        return self.http.request(method, url, data=data, headers=h, params=params, verify=self.ca, timeout=timeout,
                                 allow_redirects=False)

    def arm_call(self, method: str, path: str, token: str | None = "admin", **kw) -> requests.Response:
        if token == "admin":
            token = self.admin_token()
        return self.request(method, path, token=token, **kw)

    def assign_role(self, scope: str, role_definition_id: str, principal_id: str,
                    principal_type: str = "ServicePrincipal", token: str | None = None) -> str:
        """PUTs a role assignment with the admin token; returns its name (a GUID)."""
        name = str(uuid.uuid4())
        r = self.request("PUT", f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}",
                         token=token or self.admin_token(), params={"api-version": "2022-04-01"},
                         json_body={"properties": {"roleDefinitionId": role_definition_id, "principalId": principal_id,
                                                   "principalType": principal_type}})
        assert r.status_code in (200, 201), f"role assignment failed\n{describe(r)}"
        return name

    def create_group(self, name: str, location: str = "francecentral", tags: dict | None = None,
                     token: str | None = None) -> dict:
        r = self.request("PUT", f"/subscriptions/{self.sub}/resourcegroups/{name}", token=token or self.admin_token(),
                         params={"api-version": "2021-04-01"}, json_body={"location": location, "tags": tags or {}})
        assert r.status_code in (200, 201), f"resource group create failed\n{describe(r)}"
        return r.json()

    def get_group(self, name: str, token: str | None = None) -> requests.Response:
        return self.request("GET", f"/subscriptions/{self.sub}/resourcegroups/{name}", token=token or self.admin_token(),
                            params={"api-version": "2021-04-01"})

    # --- tokens ----------------------------------------------------------------------------

    def token_response(self, data: dict, tenant: str | None = None) -> requests.Response:
        return self.http.post(f"{self.login}/{tenant or self.tenant}/oauth2/v2.0/token", data=data, verify=self.ca, timeout=30)

    def client_token(self, client_id: str, secret: str, tenant: str | None = None, scope: str | None = None) -> str:
        key = (client_id, secret, tenant, scope)
        cached = self._tokens.get(key)
        if cached and cached[1] > time.time() + 120:
            return cached[0]
        r = self.token_response({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
                                 "scope": scope or self.arm_scope}, tenant=tenant)
        assert r.status_code == 200, f"token request failed\n{describe(r)}"
        body = r.json()
        assert body.get("access_token"), f"no access_token: {body}"
        exp = time.time() + float(body.get("expires_in", 300))
        self._tokens[key] = (body["access_token"], exp)
        return body["access_token"]

    def admin_token(self, scope: str | None = None) -> str:
        return self.client_token(self.client_id, self.secret, self.tenant, scope)

    def user_token_response(self, username: str, password: str, tenant: str | None = None, scope: str | None = None,
                            client_id: str = AZ_CLI_CLIENT_ID) -> requests.Response:
        return self.token_response({
            "grant_type": "password", "client_id": client_id, "username": username, "password": password,
            "scope": scope or f"{self.arm_scope} openid profile offline_access", "client_info": "1",
        }, tenant=tenant)

    def discovery(self, tenant: str | None = None) -> dict:
        r = self.http.get(f"{self.login}/{tenant or self.tenant}/v2.0/.well-known/openid-configuration", verify=self.ca, timeout=30)
        assert r.status_code == 200, describe(r)
        return r.json()

    def jwks(self, tenant: str | None = None) -> jwt.PyJWKSet:
        uri = self.discovery(tenant)["jwks_uri"]
        r = self.http.get(uri, verify=self.ca, timeout=30)
        assert r.status_code == 200, describe(r)
        return jwt.PyJWKSet.from_dict(r.json())

    def verify_jwt(self, token: str, audience: str | None, issuer: str | None = None, tenant: str | None = None) -> dict:
        """Verifies the RS256 signature against the tenant's JWKS (and aud/iss/exp/nbf), returns the claims."""
        header = jwt.get_unverified_header(token)
        assert header.get("alg") == "RS256", f"token alg is {header.get('alg')!r}, expected RS256"
        kid = header.get("kid")
        assert kid, f"token header has no kid: {header}"
        keys = self.jwks(tenant)
        try:
            key = keys[kid]
        except KeyError:
            raise AssertionError(f"kid {kid} not in JWKS {[k.key_id for k in keys.keys]}")
        opts = {"verify_aud": audience is not None, "require": ["exp", "iat", "nbf"]}
        return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=issuer, options=opts, leeway=60)


class ServerPool:
    def __init__(self, root: Path):
        self.root = root
        self.servers: list[CielServer] = []

    def new(self, name: str, extra_env: dict | None = None, port: int | None = None) -> CielServer:
        base = self.root / f"{name}-{len(self.servers)}"
        s = CielServer(base, name, extra_env, port)
        self.servers.append(s)
        return s

    def kill_all(self):
        for s in self.servers:
            if s.running:
                s.kill()


# ---------------------------------------------------------------------------------------------
# Azure CLI
# ---------------------------------------------------------------------------------------------

def _mask(args) -> list[str]:
    return ["***" if i and args[i - 1] in ("-p", "--password") else a for i, a in enumerate(args)]


class AzError(AssertionError):
    def __init__(self, args, rc, stdout, stderr):
        self.args_ = args
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"`az {shlex.join(_mask(args))}` exited {rc}\nstdout: {stdout}\nstderr: {stderr}")


class AzCli:
    """`az` with its own AZURE_CONFIG_DIR, trusting one server's CA."""

    def __init__(self, server: CielServer, config_dir: Path):
        self.server = server
        self.config_dir = config_dir
        config_dir.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSAL_", "IDENTITY_"))}
        env.update({
            "AZURE_CONFIG_DIR": str(self.config_dir),
            "REQUESTS_CA_BUNDLE": self.server.ca,
            "SSL_CERT_FILE": self.server.ca,
            "AZURE_CORE_INSTANCE_DISCOVERY": "false",
            "AZURE_CORE_COLLECT_TELEMETRY": "false",
            "AZURE_CORE_ONLY_SHOW_ERRORS": "true",
            "AZURE_CORE_NO_COLOR": "true",
            "AZURE_CORE_SURVEY_MESSAGE": "false",
            "AZURE_CORE_LOGIN_EXPERIENCE_V2": "off",
            "AZURE_CORE_DISABLE_CONFIRM_PROMPT": "true",
            "AZURE_EXTENSION_USE_DYNAMIC_INSTALL": "no",
        })
        return env

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        cmd = az_command() + list(args) + ["--output", "json"]
        t0 = time.monotonic()
        p = subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=timeout, stdin=subprocess.DEVNULL)
        shown = _mask(args)
        with open(self.config_dir / "az-commands.log", "a") as f:
            f.write(f"$ az {shlex.join(shown)}  ({time.monotonic() - t0:.1f}s, rc={p.returncode})\n{p.stdout}\n{p.stderr}\n")
        return p

    def __call__(self, *args: str, timeout: float = 180) -> Any:
        p = self.run(*args, timeout=timeout)
        if p.returncode != 0:
            raise AzError(list(args), p.returncode, p.stdout, p.stderr)
        out = p.stdout.strip()
        if not out:
            return None
        try:
            return json.loads(out)
        except ValueError:
            raise AzError(list(args), p.returncode, p.stdout, p.stderr + "\n(stdout is not JSON)")

    def fails(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        p = self.run(*args, timeout=timeout)
        assert p.returncode != 0, f"`az {shlex.join(_mask(args))}` unexpectedly succeeded\nstdout: {p.stdout}\nstderr: {p.stderr}"
        return p

    def register_cloud(self, name: str = "Ciel"):
        self("cloud", "register", "-n", name, "--endpoint-resource-manager", self.server.arm)
        self("cloud", "set", "-n", name)

    def login_sp(self, client_id: str | None = None, secret: str | None = None, tenant: str | None = None):
        s = self.server
        return self("login", "--service-principal", "-u", client_id or s.client_id, "-p", secret or s.secret,
                    "--tenant", tenant or s.tenant)


def faketime_library() -> str | None:
    for pattern in ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1",
                    "/usr/local/lib/faketime/libfaketime.so.1"):
        hits = glob.glob(pattern)
        if hits:
            return hits[0]
    return None


def copy_data_dir(src: Path, dst: Path):
    shutil.copytree(src, dst)
