"""The activity log (`az monitor activity-log list`): a tenant's own control-plane events for a
subscription, drawn from the tamper-evident audit chain."""

from __future__ import annotations

import datetime
import sqlite3
import uuid

from cieltest import describe, expect_arm_error

API = "2015-04-01"


def _window() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    start = (now - datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (now + datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"eventTimestamp ge '{start}' and eventTimestamp le '{end}'"


def test_az_activity_log(az, ciel):
    rg = f"act-{uuid.uuid4().hex[:8]}"
    az("group", "create", "-n", rg, "-l", "francecentral")
    az("group", "update", "-n", rg, "--tags", "stage=test")
    refused = f"act-out-{uuid.uuid4().hex[:8]}"
    az.fails("group", "create", "-n", refused, "-l", "westeurope")

    events = az("monitor", "activity-log", "list", "-g", rg, "--max-events", "100")
    ops = [(e["operationName"]["value"], e["status"]["value"]) for e in events]
    assert ops.count(("Microsoft.Resources/subscriptions/resourceGroups/write", "Succeeded")) == 2, ops
    assert all(e["resourceGroupName"] == rg and e["subscriptionId"] == ciel.sub for e in events), events
    assert events[0]["eventTimestamp"] >= events[-1]["eventTimestamp"], "newest first"
    assert all(e["caller"] == ciel.client_id for e in events), [e["caller"] for e in events]

    failed = az("monitor", "activity-log", "list", "--status", "Failed", "--max-events", "200")
    mine = [e for e in failed if e["resourceId"].lower().endswith(f"/resourcegroups/{refused}")]
    assert mine and mine[0]["properties"]["reason"] == "Residency", failed[:3]

    # Each event names its entry in the audit chain.
    e = events[0]
    db = sqlite3.connect(f"file:{ciel.data_dir}/ciel.db?mode=ro", uri=True)
    row = db.execute("SELECT action, hash FROM audit_log WHERE seq = ?", (int(e["properties"]["auditSequence"]),)).fetchone()
    db.close()
    assert row == (e["operationName"]["value"], e["properties"]["auditHash"]), (row, e["properties"])


def test_activity_log_scope_and_tenants(ciel, tenant_b, role_ids):
    path = f"/subscriptions/{ciel.sub}/providers/microsoft.insights/eventtypes/management/values"
    r = ciel.arm_call("GET", path, params={"api-version": API, "$filter": _window()})
    assert r.status_code == 200 and r.json()["value"], describe(r)
    # Another tenant's principal: the subscription does not exist for it.
    b = tenant_b["sp"]
    tok = ciel.client_token(b["appId"], b["password"], tenant=tenant_b["tenantId"])
    r = ciel.request("GET", f"{ciel.arm}{path.lstrip('/')}?api-version={API}", token=tok)
    expect_arm_error(r, (403, 404))
    # A principal without a role is refused; a Reader may read.
    sp = ciel.create_sp(f"act-{uuid.uuid4().hex[:6]}")
    tok = ciel.client_token(sp["appId"], sp["password"])
    url = f"{ciel.arm}{path.lstrip('/')}"
    r = ciel.http.get(url, params={"api-version": API, "$filter": _window()}, headers={"Authorization": f"Bearer {tok}"},
                      verify=ciel.ca, timeout=30)
    expect_arm_error(r, (403, 404))
    ciel.assign_role(f"/subscriptions/{ciel.sub}", role_ids["Reader"], sp["objectId"])
    r = ciel.http.get(url, params={"api-version": API, "$filter": _window()}, headers={"Authorization": f"Bearer {tok}"},
                      verify=ciel.ca, timeout=30)
    assert r.status_code == 200, describe(r)
    # Bad filters are refused.
    for f in ("", "eventTimestamp gt '2026-01-01'", "resourceGroupName eq 'x'"):
        r = ciel.arm_call("GET", path, params={"api-version": API, "$filter": f})
        expect_arm_error(r, 400)
