"""Stewards upload files written by the tools researchers use (polars
Parquet, pandas CSV, pyarrow Arrow IPC with dictionary strings); each
becomes a version that reads back with the same values."""

import datetime
import io
import json

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.ipc

ROWS = [
    {"id": 1, "region": "north", "day": datetime.date(2024, 1, 31), "value": 1.5},
    {"id": 2, "region": "south", "day": datetime.date(2024, 2, 29), "value": None},
    {"id": 3, "region": "east", "day": datetime.date(2024, 3, 1), "value": -2.25},
]


def read_version(server, version):
    body = server.get(f"/v1/datasets/interop-uploads/data?version={version}&format=arrow", token=False)
    return pyarrow.ipc.open_stream(io.BytesIO(body)).read_all().to_pylist()


def test_files_from_polars_pandas_and_pyarrow_become_versions(server):
    manifest = {
        "id": "interop-uploads", "title": "Interop uploads", "description": "Files from Python tools",
        "sector": "test", "publisher": "Interop Org", "license": "CC0-1.0", "tier": "open",
        "columns": [{"name": "id", "description": "", "key": True},
                    {"name": "region", "description": ""},
                    {"name": "day", "description": ""},
                    {"name": "value", "description": ""}],
    }
    status, answer = server.send("POST", "/v1/datasets", json.dumps(manifest).encode(), "application/json")
    assert status == 201, answer

    # Version 1: polars Parquet (its strings are large/view strings).
    buffer = io.BytesIO()
    pl.DataFrame(ROWS).write_parquet(buffer)
    status, answer = server.send("PUT", "/v1/datasets/interop-uploads/data", buffer.getvalue(),
                                 "application/vnd.apache.parquet")
    assert status == 201, answer
    assert answer["version"] == 1 and answer["rows"] == 3
    assert [c["type"] for c in answer["schema"]] == ["Int64", "Utf8", "Date32", "Float64"]

    # Version 2: pandas CSV, read with version 1's types.
    csv = pd.DataFrame(ROWS).to_csv(index=False).encode()
    status, answer = server.send("PUT", "/v1/datasets/interop-uploads/data", csv, "text/csv")
    assert status == 201, answer
    assert answer["version"] == 2

    # Version 3: pyarrow IPC stream with a dictionary-encoded string column.
    table = pa.Table.from_pylist(ROWS, schema=pa.schema([
        ("id", pa.int64()), ("region", pa.dictionary(pa.int8(), pa.string())),
        ("day", pa.date32()), ("value", pa.float64()),
    ]))
    sink = io.BytesIO()
    with pyarrow.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    status, answer = server.send("PUT", "/v1/datasets/interop-uploads/data", sink.getvalue(),
                                 "application/vnd.apache.arrow.stream")
    assert status == 201, answer
    assert answer["version"] == 3

    for version in [1, 2, 3]:
        assert read_version(server, version) == ROWS, f"version {version}"

    # A file with another type for a column is refused, naming it.
    wrong = pl.DataFrame(ROWS).with_columns(pl.col("id").cast(pl.Utf8))
    buffer = io.BytesIO()
    wrong.write_parquet(buffer)
    status, answer = server.send("PUT", "/v1/datasets/interop-uploads/data", buffer.getvalue(),
                                 "application/vnd.apache.parquet")
    assert status == 422 and answer["type"] == "schema-mismatch", answer
    assert "'id'" in answer["detail"]
