"""Issue 17: the unmodified Delta Sharing connector reads from replicas over
one S3 bucket (moto on loopback). The query goes to replica A, whose
public URL is replica B's, so every file link A signs is fetched from B:
B has never seen the ticket and must find it in the bucket, and must serve
the version A committed before its own poll has seen it.

moto runs under the interop venv's Python (`SLUICE_MOTO_PYTHON`, set by
scripts/test): the connector's venv pins its own packages."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from conftest import free_port, moto_server, running_server

CONNECTOR = """
import json, sys
import delta_sharing

profile, out = sys.argv[1], sys.argv[2]
url = f"{profile}#test.default.shared-wells"
delta_sharing.load_as_pandas(url).to_parquet(out)
print(json.dumps({"version": delta_sharing.get_table_version(url)}))
"""

MANIFEST = {
    "id": "shared-wells", "title": "Shared wells", "description": "Read through two replicas",
    "sector": "test", "publisher": "Interop Org", "license": "CC0-1.0", "tier": "registered",
    "columns": [{"name": "id", "description": "", "key": True}, {"name": "depth", "description": ""}],
}


def moto_python() -> str:
    python = os.environ.get("SLUICE_MOTO_PYTHON", "")
    assert python and Path(python).exists(), (
        "set SLUICE_MOTO_PYTHON to a Python with moto[server] and boto3 (scripts/test does)")
    return python


def test_the_connector_reads_a_file_signed_by_one_replica_from_another(tmp_path):
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(moto_server(moto_python(), tmp_path, ("sluice-sharing",)))
        url = "s3://sluice-sharing/datasets"
        # Polling slowly: B must not rely on having polled A's commit.
        storage = "poll_millis = 600000"
        b_port = free_port()
        a_work, b_work = tmp_path / "a", tmp_path / "b"
        a_work.mkdir()
        b_work.mkdir()
        a = stack.enter_context(running_server(
            a_work, datasets_url=url, storage=storage,
            env={**env, "SLUICE_SERVER__PUBLIC_URL": f"https://localhost:{b_port}",
                 "SLUICE_AUDIT__REPLICA_ID": "a"}))
        b = stack.enter_context(running_server(
            b_work, datasets_url=url, storage=storage, port=b_port,
            env={**env, "SLUICE_AUDIT__REPLICA_ID": "b"}, secrets_from=a_work / "state"))

        table = pa.table({"id": pa.array(range(300), pa.int64()),
                          "depth": pa.array([i * 1.5 for i in range(300)])})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        status, answer = a.send("POST", "/v1/datasets", json.dumps(MANIFEST).encode(), "application/json")
        assert status == 201, answer
        status, answer = a.send("PUT", "/v1/datasets/shared-wells/data", sink.getvalue(),
                                "application/vnd.apache.parquet")
        assert status == 201, answer

        # The profile names A's endpoint; A's links name B.
        profile = tmp_path / "sluice.share"
        profile.write_text(json.dumps({
            "shareCredentialsVersion": 1,
            "endpoint": a.url("/delta-sharing"),
            "bearerToken": a.token,
        }))
        out = tmp_path / "read.parquet"
        done = subprocess.run([sys.executable, "-c", CONNECTOR, str(profile), str(out)],
                              env=a.client_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["version"] == 1
        frame = pd.read_parquet(out).sort_values("id").reset_index(drop=True)
        assert frame["id"].tolist() == list(range(300))
        assert frame["depth"].tolist() == [i * 1.5 for i in range(300)]

        # B served the file: its trail has the read, A's has none.
        def reads(work):
            lines = []
            for path in sorted((work / "state" / "audit").glob("audit-*.jsonl")):
                lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            return [r for r in lines if r.get("event") == "snapshot-read" and r.get("dataset") == "shared-wells"]

        assert reads(b_work), "replica B served no file"
        assert not reads(a_work)
