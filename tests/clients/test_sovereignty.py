"""The sovereignty statement (`ciel sovereignty` and GET /providers/Ciel.Sovereignty/statement):
facts built from the running configuration, matching the checked-in OpenAPI document."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import requests

from cieltest import ciel_bin, describe

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "ciel.json"
PATH = "/providers/Ciel.Sovereignty/statement"


def _check(value, schema, defs, where="statement"):
    """A small validator for the subset of JSON Schema the document uses; fails loudly."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    types = schema.get("type")
    if types is not None:
        allowed = types if isinstance(types, list) else [types]
        kinds = {"object": dict, "array": list, "string": str, "null": type(None), "boolean": bool, "integer": int}
        assert any(isinstance(value, kinds[t]) for t in allowed), f"{where}: {value!r} is not {allowed}"
    if "const" in schema:
        assert value == schema["const"], f"{where}: {value!r} != {schema['const']!r}"
    if isinstance(value, dict):
        for k in schema.get("required", []):
            assert k in value, f"{where}: missing {k}"
        if schema.get("additionalProperties") is False:
            extra = set(value) - set(schema.get("properties", {}))
            assert not extra, f"{where}: undocumented {sorted(extra)}"
        for k, sub in schema.get("properties", {}).items():
            if k in value:
                _check(value[k], sub, defs, f"{where}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], defs, f"{where}[{i}]")


def test_statement_matches_the_openapi_document_and_the_cli(ciel):
    doc = json.loads(DOC.read_text())
    op = doc["paths"][PATH]["get"]
    version = op["parameters"][0]["schema"]["const"]
    r = ciel.arm_call("GET", PATH, params={"api-version": version})
    assert r.status_code == 200, describe(r)
    body = r.json()
    _check(body, op["responses"]["200"]["content"]["application/json"]["schema"], doc["components"]["schemas"])
    assert [x["name"] for x in body["regions"]] == ["francecentral", "francesouth"]
    assert all(x["country"] == "FR" for x in body["regions"])
    assert body["replication"]["targets"] == [] and body["outboundConnections"]["allowedDestinations"] == []
    assert body["customerData"]["blobContents"]["path"] == str((Path(ciel.data_dir) / "blobs").resolve())
    # The CLI prints the same facts.
    out = subprocess.run([ciel_bin(), "sovereignty", "--data-dir", str(ciel.data_dir)], capture_output=True, text=True,
                         timeout=60, check=True)
    cli = json.loads(out.stdout)
    for k in ("generatedAt",):
        cli.pop(k), body.pop(k)
    assert cli == body
    # Bad input: no token, a wrong api-version, another method.
    r = requests.get(f"{ciel.arm}{PATH.lstrip('/')}", params={"api-version": version}, verify=ciel.ca, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"], describe(r)
    r = ciel.arm_call("GET", PATH, params={"api-version": "2020-01-01"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidApiVersionParameter", describe(r)
    r = ciel.arm_call("PUT", PATH, params={"api-version": version}, json_body={})
    assert r.status_code == 405, describe(r)


def test_operator_declarations_come_from_the_configuration(server_factory):
    s = server_factory("sovereign", start=False)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    (s.data_dir / "ciel.toml").write_text(
        '[sovereignty]\noperator = "Opérateur de confiance SAS"\njurisdiction = "FR"\n'
        'administration_locations = ["Paris, FR", "Marseille, FR"]\nsite = "PAR-1"\n')
    s.start()
    body = s.arm_call("GET", PATH, params={"api-version": "2026-11-01"}).json()
    assert body["operator"] == {"name": "Opérateur de confiance SAS", "jurisdiction": "FR",
                                "administrationLocations": ["Paris, FR", "Marseille, FR"]}
    assert body["nodes"][0]["site"] == "PAR-1"
    s.stop()
    # A jurisdiction that is not a country code stops the start, with a clear message.
    (s.data_dir / "ciel.toml").write_text('[sovereignty]\njurisdiction = "France"\n')
    out = subprocess.run([ciel_bin(), "sovereignty", "--data-dir", str(s.data_dir)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "ISO 3166-1" in out.stderr, out.stderr
