"""Issue 14, part 4: one policy-applied slice (masks on, a grant's row
filter active) read by every client a researcher brings, each agreeing row
for row with the Arrow stream, and no raw identifier in any byte served.
The unmodified Delta Sharing connector reads the same slice in
`sharing/test_delta_sharing.py` (its own virtual environment)."""

import io
import json
import subprocess
import sys

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq

from conftest import RAW_IDENTIFIERS, canonical_rows

DATASET = "hospital-admissions"
SLICE = f"/v1/datasets/{DATASET}/data"
OTHER_REGIONS = (b"south", b"midlands", b"london")


def assert_no_raw_identifier(server, name: str, body: bytes):
    for column in RAW_IDENTIFIERS:
        for value in server.raw(DATASET, column):
            assert str(value).encode() not in body, f"{name} carries a raw {column}"


def reference(server) -> pa.Table:
    return pa.ipc.open_stream(io.BytesIO(server.get(SLICE + "?format=arrow", token=server.north))).read_all()


def test_every_client_reads_the_same_masked_filtered_slice(server, tmp_path):
    ipc = server.get(SLICE + "?format=arrow", token=server.north)
    table = pa.ipc.open_stream(io.BytesIO(ipc)).read_all()
    expected = canonical_rows(table.to_pandas())
    assert table.num_rows > 0
    assert "nhs_number" not in table.column_names
    assert set(table.column("region").to_pylist()) == {"north"}
    assert all(d.day == 1 for d in table.column("admission_date").to_pylist() if d)
    raw_patients = set(server.raw(DATASET, "patient_id"))
    assert not raw_patients & set(table.column("patient_id").to_pylist())

    # polars, from the same stream.
    assert pl.read_ipc_stream(io.BytesIO(ipc)).equals(pl.from_arrow(table))

    # pandas: CSV and Parquet responses.
    csv = server.get(SLICE + "?format=csv", token=server.north)
    frame = pd.read_csv(io.BytesIO(csv), dtype=str, keep_default_na=False)
    assert canonical_rows(frame) == expected
    parquet = server.get(SLICE + "?format=parquet", token=server.north)
    assert canonical_rows(pd.read_parquet(io.BytesIO(parquet))) == expected
    ndjson = server.get(SLICE + "?format=ndjson", token=server.north)

    # A snapshot link, read by URL with pandas and pyarrow in a fresh
    # process (no token: the link is the proof).
    issued = server.post_json(f"/v1/datasets/{DATASET}/snapshot", {}, server.north)
    assert issued["rows"] == table.num_rows
    out = tmp_path / "by-url.parquet"
    script = (
        "import sys, pandas as pd, pyarrow.parquet as pq, urllib.request\n"
        "url, out = sys.argv[1], sys.argv[2]\n"
        "frame = pd.read_parquet(url)\n"
        "frame.to_parquet(out)\n"
        "print(len(frame))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, issued["url"], str(out)],
        env=server.client_env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert canonical_rows(pd.read_parquet(out)) == expected

    # curl: a broken download resumed with a Range request.
    part = tmp_path / "resumed.parquet"
    curl = ["curl", "--silent", "--show-error", "--fail", "--cacert", str(server.ca)]
    subprocess.run(curl + ["--range", "0-999", "-o", str(part), issued["url"]], check=True)
    assert part.stat().st_size == 1000
    subprocess.run(curl + ["-C", "-", "-o", str(part), issued["url"]], check=True)
    snapshot = part.read_bytes()
    assert len(snapshot) == issued["size"]
    assert canonical_rows(pq.read_table(pa.BufferReader(snapshot)).to_pandas()) == expected

    # No raw identifier in any byte served; no other region's rows either.
    bodies = {"arrow": ipc, "csv": csv, "ndjson": ndjson, "parquet": parquet, "snapshot": snapshot}
    for name, body in bodies.items():
        assert_no_raw_identifier(server, name, body)
    for name in ("arrow", "csv", "ndjson"):
        for region in OTHER_REGIONS:
            assert region not in bodies[name], f"{name} carries {region!r}"
    footer = pq.ParquetFile(pa.BufferReader(snapshot)).metadata.metadata or {}
    assert all(k.startswith(b"sluice.") or k == b"ARROW:schema" for k in footer), footer.keys()
    assert not any(b"region = " in v for v in footer.values()), "the grant's row filter stays out of the footer"
