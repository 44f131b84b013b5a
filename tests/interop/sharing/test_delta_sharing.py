"""Issue 14, part 2: the unmodified `delta-sharing` connector (PyPI 1.4.2)
reads Sluice with a profile a researcher downloads: it lists the tables
the caller may read and loads the same masked, row-filtered slice the
Arrow stream serves, row for row, with and without a limit.

The connector runs in a child process: aiohttp (its file reader) loads the
trusted CAs when it is imported, so the server's CA must be in the
environment before Python starts, and the server's CA exists only once the
session's server has started."""

import io
import json
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.ipc

from conftest import RAW_IDENTIFIERS, canonical_rows

DATASET = "hospital-admissions"

CONNECTOR = """
import json, sys
import delta_sharing

profile, out = sys.argv[1], sys.argv[2]
client = delta_sharing.SharingClient(profile)
tables = sorted(f"{t.share}.{t.schema}.{t.name}" for t in client.list_all_tables())
url = f"{profile}#health.default.hospital-admissions"
delta_sharing.load_as_pandas(url).to_parquet(out + "-all.parquet")
delta_sharing.load_as_pandas(url, limit=25).to_parquet(out + "-25.parquet")
print(json.dumps({"tables": tables, "version": delta_sharing.get_table_version(url)}))
"""


def test_the_connector_reads_the_policy_applied_slice(server, tmp_path):
    profile = tmp_path / "sluice.share"
    profile.write_bytes(server.get("/v1/me/delta-sharing-profile", token=server.north))
    assert json.loads(profile.read_text())["endpoint"] == server.url("/delta-sharing")

    out = tmp_path / "read"
    done = subprocess.run(
        [sys.executable, "-c", CONNECTOR, str(profile), str(out)],
        env=server.client_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["tables"] == [
        "education.default.school-enrolment",
        "education.default.school-results",
        "health.default.hospital-admissions",
        "health.default.vaccination-coverage",
    ]
    assert answer["version"] == 1

    stream = server.get(f"/v1/datasets/{DATASET}/data?format=arrow", token=server.north)
    expected = pa.ipc.open_stream(io.BytesIO(stream)).read_all().to_pandas()
    everything = pd.read_parquet(f"{out}-all.parquet")
    assert list(everything.columns) == list(expected.columns)
    assert canonical_rows(everything) == canonical_rows(expected)
    assert set(everything["region"]) == {"north"}
    for column in RAW_IDENTIFIERS:
        assert not set(map(str, server.raw(DATASET, column))) & set(map(str, everything.get(column, [])))

    first = pd.read_parquet(f"{out}-25.parquet")
    assert len(first) == 25
    assert set(canonical_rows(first)) <= set(canonical_rows(expected))


def test_the_pages_delta_sharing_snippet_runs_as_pasted(server, tmp_path):
    """The dataset page's snippet, copied out of the HTML: it fetches the
    caller's profile with curl and loads the table with the connector
    (this venv's `python3` first on PATH, as a researcher's would be)."""
    from pathlib import Path

    from conftest import page_snippets, run_snippet

    code = page_snippets(server, DATASET)["snippet-delta-sharing"]
    ran = run_snippet(["sh", "-c", code], tmp_path, server.north,
                      path_first=Path(sys.executable).parent)
    assert ran.returncode == 0, ran.stderr
    assert "[5 rows x 11 columns]" in ran.stdout, ran.stdout
    for column in RAW_IDENTIFIERS:
        assert not any(str(raw) in ran.stdout for raw in server.raw(DATASET, column))
