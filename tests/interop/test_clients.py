"""Real responses read by unmodified pyarrow, polars and pandas."""

import io
import urllib.parse

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest

from conftest import ROWS, metadata

QUERY = urllib.parse.urlencode(
    {
        "columns": "age_band,region,length_of_stay",
        "filter": "length_of_stay > 7 AND region = 'north'",
        "limit": "1000",
    }
)
PATH = f"/v1/datasets/hospital-admissions/data?{QUERY}"


def test_pyarrow_reads_the_arrow_stream_from_the_socket(server):
    with server.open(PATH + "&format=arrow") as response:
        assert response.headers["Content-Type"] == "application/vnd.apache.arrow.stream"
        table = pa.ipc.open_stream(response).read_all()
    assert table.column_names == ["age_band", "region", "length_of_stay"]
    assert table.num_rows > 0
    assert set(table.column("region").to_pylist()) == {"north"}
    assert min(table.column("length_of_stay").to_pylist()) > 7


def test_polars_reads_arrow_and_parquet(server):
    arrow = pl.read_ipc_stream(io.BytesIO(server.get(PATH + "&format=arrow")))
    parquet = pl.read_parquet(io.BytesIO(server.get(PATH + "&format=parquet")))
    assert arrow.shape == parquet.shape
    assert arrow.equals(parquet)
    assert arrow["length_of_stay"].min() > 7


def test_compressed_arrow_is_read_as_is_by_pyarrow_and_polars(server):
    plain = pa.ipc.open_stream(io.BytesIO(server.get(PATH + "&format=arrow"))).read_all()
    for codec in ("lz4", "zstd"):
        body = server.get(PATH + f"&format=arrow&compression={codec}")
        table = pa.ipc.open_stream(io.BytesIO(body)).read_all()
        assert table.equals(plain), codec
        frame = pl.read_ipc_stream(io.BytesIO(body))
        assert frame.equals(pl.from_arrow(plain)), codec


def test_pandas_reads_parquet_csv_and_ndjson_alike(server):
    parquet = pd.read_parquet(io.BytesIO(server.get(PATH + "&format=parquet")))
    csv = pd.read_csv(io.BytesIO(server.get(PATH + "&format=csv")))
    ndjson = pd.read_json(io.BytesIO(server.get(PATH + "&format=ndjson")), lines=True)
    assert len(parquet) == len(csv) == len(ndjson) > 0
    assert list(csv.columns) == ["age_band", "region", "length_of_stay"]
    assert csv["length_of_stay"].tolist() == parquet["length_of_stay"].tolist()
    assert ndjson["region"].tolist() == parquet["region"].tolist()


def test_a_full_open_dataset_round_trips(server):
    table = pa.ipc.open_stream(
        io.BytesIO(server.get("/v1/datasets/vaccination-coverage/data", token=False))
    ).read_all()
    assert table.num_rows == ROWS == metadata(server, "vaccination-coverage")["rows"]
    parquet = pq.read_table(
        io.BytesIO(
            server.get("/v1/datasets/vaccination-coverage/data?format=parquet", token=False)
        )
    )
    assert parquet.equals(table)


def test_dates_survive_every_format(server):
    path = "/v1/datasets/hospital-admissions/data?columns=admission_date&limit=5"
    arrow = pa.ipc.open_stream(io.BytesIO(server.get(path + "&format=arrow"))).read_all()
    assert arrow.schema.field("admission_date").type == pa.date32()
    csv = pd.read_csv(io.BytesIO(server.get(path + "&format=csv")), parse_dates=["admission_date"])
    assert [d.date() for d in csv["admission_date"]] == arrow.column("admission_date").to_pylist()


def test_errors_are_problem_json(server):
    import json
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as info:
        server.get("/v1/datasets/hospital-admissions/data?columns=nhs_number")
    assert info.value.code == 400
    assert info.value.headers["Content-Type"] == "application/problem+json"
    body = json.loads(info.value.read())
    assert body["type"] == "unknown-column"
