"""Issue 14, part 3: the OpenAPI 3.1 document generated from the code, the
offline docs page, the catalogue as linked data, and Schemathesis
(pinned, in its own virtual environment) running every operation against
a fresh server: zero server errors and zero answers that break the
document."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import running_server

SCHEMATHESIS = Path(
    os.environ.get(
        "SLUICE_SCHEMATHESIS", Path.home() / ".cache" / "sluice-schemathesis-venv" / "bin" / "schemathesis"
    )
)
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def test_the_document_describes_every_route(server):
    doc = json.loads(server.get("/openapi.json", token=False))
    assert doc["openapi"] == "3.1.0"
    paths = doc["paths"]
    for path in [
        "/v1/datasets",
        "/v1/datasets/{id}/data",
        "/v1/datasets/{id}/snapshot",
        "/v1/snapshots/{name}",
        "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/query",
        "/v1/catalog.jsonld",
    ]:
        assert path in paths, path
    data = paths["/v1/datasets/{id}/data"]
    assert {p["name"] for p in data["get"]["parameters"]} >= {"id", "columns", "filter", "limit", "format"}
    assert "application/vnd.apache.arrow.stream" in data["get"]["responses"]["200"]["content"]
    assert "text/csv" in data["put"]["requestBody"]["content"]
    kinds = doc["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
    assert {"grant-required", "aggregate-only", "link-expired"} <= set(kinds)

    page = server.get("/docs", token=False).decode()
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert "/v1/datasets/{id}/snapshot" in page and "grant-required" in page


def test_the_catalogue_is_linked_data(server):
    catalog = json.loads(server.get("/v1/catalog.jsonld", token=False))
    assert catalog["@type"] == "dcat:Catalog"
    ids = {d["dct:identifier"] for d in catalog["dcat:dataset"]}
    assert {"hospital-admissions", "vaccination-coverage"} <= ids
    open_data = next(d for d in catalog["dcat:dataset"] if d["dct:identifier"] == "vaccination-coverage")
    assert open_data["dct:accessRights"]["@id"].endswith("/PUBLIC")
    assert any(x["dcat:accessURL"]["@id"].endswith("format=csv") for x in open_data["dcat:distribution"])

    dataset = json.loads(
        server.get("/v1/datasets/hospital-admissions", token=False, headers={"Accept": "application/ld+json"})
    )
    assert dataset["@type"] == "Dataset" and dataset["identifier"] == "hospital-admissions"
    assert dataset["conditionsOfAccess"].startswith("Approved projects")


def test_schemathesis_finds_no_server_error_and_no_violation(tmp_path_factory):
    assert SCHEMATHESIS.exists(), f"{SCHEMATHESIS} is missing: scripts/test installs it"
    # Rate limits high enough that operations are tested, not refused.
    limits = "requests_per_minute = 100000\nrequest_burst = 10000"
    with running_server(tmp_path_factory.mktemp("schemathesis"), limits) as server:
        # As an admin who stewards (reaching every steward route), then as
        # a researcher.
        for who, token in (("admin", server.admin), ("researcher", server.token)):
            run = subprocess.run(
                [
                    SCHEMATHESIS, "run", server.url("/openapi.json"),
                    "--checks", CHECKS,
                    "--header", f"Authorization: Bearer {token}",
                    "--tls-verify", str(server.ca),
                    "--max-examples", os.environ.get("SLUICE_SCHEMATHESIS_EXAMPLES", "20"),
                    "--seed", "14",
                    # One worker: with two threads, CPython 3.11's `ast`
                    # can fail inside Hypothesis ("AST constructor recursion
                    # depth mismatch", a known thread race in CPython), a
                    # crash of the tool rather than a finding.
                    "--workers", "1",
                    "--phases", "examples,coverage,fuzzing",
                    "--request-timeout", "30",
                    # The upload's many optional CSV options make Hypothesis
                    # discard many drawn examples for that one operation: a
                    # limit of the generator, not a finding about the server.
                    "--suppress-health-check", "filter_too_much",
                    "--no-color",
                ],
                capture_output=True, text=True, timeout=1500,
            )
            assert run.returncode == 0, f"as {who}:\n" + run.stdout[-8000:] + run.stderr[-2000:]
            assert server.process.poll() is None, "the server kept serving"
        assert json.loads(server.get("/healthz", token=False))["status"] == "ok"
