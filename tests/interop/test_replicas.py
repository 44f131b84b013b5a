"""Replicas over one S3 bucket: moto's S3 server on loopback stands in for
the bucket, and two (or three) real `sluice` processes serve it. What one
replica commits, the others serve within the poll interval; two replicas
uploading at once never lose or mix a version; a replica killed in the
middle of an upload leaves nothing the others show."""

import contextlib
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest

from conftest import binary, moto_server, running_server

#: How often replicas look for changes in these tests (the default is 2 s).
POLL_MILLIS = 300
#: Checkpoints (and audit shipping) every second rather than every minute.
AUDIT = {"SLUICE_AUDIT__CHECKPOINT_SECS": "1"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server; the environment a replica needs, and a client."""
    import boto3

    with moto_server(sys.executable, tmp_path_factory.mktemp("moto")) as env:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT"], region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        yield env, client


#: A differentially private grant on `dp-shared`: four answers of 0.25.
DP_POLICY = """
[[grant]]
id = "dp-replicas"
subjects = ["alice@uni.example"]
dataset = "dp-shared"
purpose = "one budget, however many replicas answer"
mode = "dp"
project = "replicas"
epsilon = 1.0
epsilon_per_query = 0.25
expires = 2099-12-31
"""


def bucket_of(deployment: str) -> str:
    return f"sluice-{deployment}"


@contextlib.contextmanager
def replicas(tmp_path_factory, s3, deployment: str, count: int = 2, poll_millis: int = POLL_MILLIS):
    """A deployment: `count` replicas sharing secrets and a bucket of their
    own, whose catalogue is `s3://sluice-<deployment>/datasets`."""
    env, client = s3
    client.create_bucket(Bucket=bucket_of(deployment))
    url = f"s3://{bucket_of(deployment)}/datasets"
    prefix = deployment
    storage = f"poll_millis = {poll_millis}"
    with contextlib.ExitStack() as stack:
        first_work = tmp_path_factory.mktemp("replica")
        first = stack.enter_context(running_server(
            first_work, datasets_url=url, storage=storage, policy=DP_POLICY, env={**env, **AUDIT, "SLUICE_AUDIT__REPLICA_ID": f"{prefix}-r0"}))
        servers = [first]
        for n in range(1, count):
            servers.append(stack.enter_context(running_server(
                tmp_path_factory.mktemp("replica"), datasets_url=url, storage=storage, policy=DP_POLICY,
                env={**env, **AUDIT, "SLUICE_AUDIT__REPLICA_ID": f"{prefix}-r{n}"},
                secrets_from=first_work / "state")))
        yield servers


def manifest(dataset: str) -> bytes:
    return json.dumps({
        "id": dataset, "title": "Replicated", "description": "Rows written through one replica",
        "sector": "test", "publisher": "Interop Org", "license": "CC0-1.0", "tier": "open",
        "columns": [{"name": "id", "description": "", "key": True},
                    {"name": "label", "description": ""}],
    }).encode()


def parquet_of(ids: range, label: str) -> bytes:
    table = pa.table({"id": pa.array(list(ids), pa.int64()),
                      "label": pa.array([label] * len(ids), pa.string())})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def publish(server, dataset: str, ids: range, label: str, manifest_body: bytes | None = None) -> dict:
    """Registers `dataset` through `server` and uploads its first version."""
    status, answer = server.send("POST", "/v1/datasets", manifest_body or manifest(dataset),
                                 "application/json")
    assert status == 201, answer
    status, answer = upload(server, dataset, parquet_of(ids, label))
    assert status == 201 and answer["version"] == 1, answer
    return answer


def sluice(server, env: dict, *args: str) -> subprocess.CompletedProcess:
    """The `sluice` command with `server`'s settings and the bucket's environment."""
    return subprocess.run([binary(), "--config", server.work / "sluice.toml", *args],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=60)


def upload(server, dataset: str, body: bytes) -> tuple[int, dict]:
    return server.send("PUT", f"/v1/datasets/{dataset}/data", body, "application/vnd.apache.parquet")


def rows(server, dataset: str, version: int | None = None) -> list:
    query = f"?format=arrow" + (f"&version={version}" if version else "")
    body = server.get(f"/v1/datasets/{dataset}/data{query}", token=False)
    return pyarrow.ipc.open_stream(io.BytesIO(body)).read_all().to_pylist()


def status_of(server, path: str, token: str | None = None) -> int:
    """The status of a GET as alice, or with `token`."""
    request = urllib.request.Request(server.url(path))
    request.add_header("Authorization", f"Bearer {token or server.token}")
    try:
        with urllib.request.urlopen(request, context=server.context, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def wait_until(check, seconds: float = 15.0) -> float:
    """Seconds until `check()` held (fails after `seconds`)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, "replicas did not agree in time"
        time.sleep(0.05)
    return time.monotonic() - start


def test_what_one_replica_commits_the_other_serves(tmp_path_factory, s3):
    with replicas(tmp_path_factory, s3, "serve") as (a, b):
        status, answer = a.send("POST", "/v1/datasets", manifest("wells"), "application/json")
        assert status == 201, answer
        status, answer = upload(a, "wells", parquet_of(range(1000), "first"))
        assert status == 201, answer
        assert answer["version"] == 1 and answer["rows"] == 1000

        # Through the replica that took the upload, at once.
        got = rows(a, "wells")
        assert len(got) == 1000 and got[0]["label"] == "first"
        # Through the other one, within a few poll intervals.
        waited = wait_until(lambda: status_of(b, "/v1/datasets/wells") == 200)
        print(f"\nreplica B saw the new dataset after {waited:.2f} s (poll {POLL_MILLIS} ms)")
        assert sorted(r["id"] for r in rows(b, "wells")) == list(range(1000))

        # A second version through B reaches A; the first stays pinnable.
        status, answer = upload(b, "wells", parquet_of(range(10), "second"))
        assert status == 201 and answer["version"] == 2, answer
        waited = wait_until(lambda: len(rows(a, "wells")) == 10)
        print(f"replica A served version 2 after {waited:.2f} s")
        assert {r["label"] for r in rows(a, "wells")} == {"second"}
        assert len(rows(a, "wells", version=1)) == 1000

        # A retirement through A stops B serving it.
        status, answer = a.send("DELETE", "/v1/datasets/wells", b"", "application/json")
        assert status == 200, answer
        wait_until(lambda: status_of(b, "/v1/datasets/wells/data") == 404)


def test_two_replicas_uploading_at_once_never_lose_or_mix_a_version(tmp_path_factory, s3):
    with replicas(tmp_path_factory, s3, "race") as (a, b):
        # The first upload defines the columns; the race is on the next ones.
        publish(a, "race", range(5), "seed")
        wait_until(lambda: status_of(b, "/v1/datasets/race/data") == 200)

        # Each upload has its own label and row count, to tell them apart.
        uploads = {f"{name}{i}": (server, 100 + 10 * i + (5 if name == "b" else 0))
                   for name, server in (("a", a), ("b", b)) for i in range(3)}
        answers = {}

        def send(labels):
            for label in labels:
                server, count = uploads[label]
                answers[label] = upload(server, "race", parquet_of(range(count), label))

        threads = [threading.Thread(target=send, args=([f"{n}{i}" for i in range(3)],))
                   for n in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

        won = {}
        for label, (status, answer) in answers.items():
            # A replica that lost the race to a newer version says so.
            assert status in (201, 409), (label, status, answer)
            if status == 201:
                won[answer["version"]] = label
            else:
                assert answer["type"] == "change-stale" and "published meanwhile" in answer["detail"], answer
        print(f"\n{len(won)} of {len(answers)} concurrent uploads committed: {sorted(won)}")
        assert len(won) == sum(1 for s, _ in answers.values() if s == 201), "two uploads got one number"
        assert len(won) >= 2
        newest = max(won)
        for server in (a, b):
            wait_until(lambda: len(rows(server, "race")) == uploads[won[newest]][1])
            for version, label in won.items():
                got = rows(server, "race", version=version)
                # Whole and unmixed: exactly the rows of the upload that got it.
                assert {r["label"] for r in got} == {label}, (version, label)
                assert sorted(r["id"] for r in got) == list(range(uploads[label][1]))
            detail = json.loads(server.get("/v1/datasets/race", token=False))
            assert detail["version"] == newest


def test_a_replica_killed_mid_upload_leaves_no_partial_version(tmp_path_factory, s3):
    _, client = s3
    bucket = bucket_of("killed")
    with replicas(tmp_path_factory, s3, "killed") as (a, b):
        publish(a, "killed", range(7), "before")
        wait_until(lambda: status_of(b, "/v1/datasets/killed/data") == 200)

        # A large upload through A. Once its claim appears in the bucket, A
        # is frozen (SIGSTOP) and, if its manifest does not name the new
        # version yet, killed (SIGKILL) mid-upload. An upload that had
        # already committed is let finish, and the next one tried.
        big = parquet_of(range(3_000_000), "never-seen")
        current = 1
        for _ in range(5):
            number = current + 1
            thread = threading.Thread(target=lambda: upload_quietly(a, big))
            thread.start()
            claim = f"datasets/killed/versions/{number}/.claim"
            deadline = time.time() + 120
            while not client.list_objects_v2(Bucket=bucket, Prefix=claim).get("KeyCount"):
                assert time.time() < deadline, "the upload never reached the bucket"
                time.sleep(0.01)
            a.process.send_signal(signal.SIGSTOP)
            manifest_text = client.get_object(Bucket=bucket, Key="datasets/killed/dataset.toml")["Body"].read()
            if f"version = {number}\n".encode() not in manifest_text:
                a.process.send_signal(signal.SIGKILL)
                a.process.wait(timeout=30)
                thread.join(timeout=60)
                break
            a.process.send_signal(signal.SIGCONT)
            thread.join(timeout=120)
            current = number
        else:
            raise AssertionError("every upload committed before its replica could be stopped")

        # B serves the last committed version, whole, and nothing of the
        # killed one.
        time.sleep(3 * POLL_MILLIS / 1000)
        got = rows(b, "killed")
        expected = list(range(7)) if current == 1 else list(range(3_000_000))
        assert sorted(r["id"] for r in got) == expected
        assert status_of(b, f"/v1/datasets/killed/data?version={number}") == 404
        detail = json.loads(b.get("/v1/datasets/killed", token=False))
        assert detail["version"] == current

        # The next upload through B gets a number of its own and commits.
        status, answer = upload(b, "killed", parquet_of(range(9), "after"))
        assert status == 201, answer
        assert answer["version"] > current
        assert {r["label"] for r in rows(b, "killed")} == {"after"}


def upload_quietly(server, body: bytes):
    """An upload whose server may die under it."""
    try:
        upload(server, "killed", body)
    except OSError:
        pass


def test_every_replica_ships_its_trail_and_one_command_verifies_them(tmp_path_factory, s3):
    env, client = s3
    with replicas(tmp_path_factory, s3, "audited") as (a, b):
        status, answer = a.send("POST", "/v1/datasets", manifest("audited"), "application/json")
        assert status == 201, answer
        # A draft: only its stewards see it.
        wait_until(lambda: status_of(b, "/v1/datasets/audited", b.steward) == 200)
        status, answer = upload(b, "audited", parquet_of(range(3), "x"))
        assert status == 201, answer
        wait_until(lambda: status_of(a, "/v1/datasets/audited/data") == 200)
        rows(a, "audited")
        rows(b, "audited")

        def shipped(replica):
            listing = client.list_objects_v2(Bucket=bucket_of("audited"), Prefix=f"audit/{replica}/")
            return {o["Key"].rsplit("/", 1)[1] for o in listing.get("Contents", [])}

        wait_until(lambda: all("checkpoints.jsonl" in shipped(r) and len(shipped(r)) >= 2
                               for r in ("audited-r0", "audited-r1")), seconds=20)

        def verify(*args):
            # A's settings name the audit key both replicas share.
            return sluice(a, env, "audit", "verify", f"s3://{bucket_of('audited')}/audit", *args)

        done = verify()
        assert done.returncode == 0, done.stderr
        assert done.stdout.count(": ok,") == 2, done.stdout
        assert "/audited-r0: ok," in done.stdout and "/audited-r1: ok," in done.stdout, done.stdout
        assert "warning: no checkpoint key" not in done.stderr

    # A replica stopping gracefully ships its sealed trail as it was last.
    shipped_checkpoints = client.get_object(
        Bucket=bucket_of("audited"), Key="audit/audited-r0/checkpoints.jsonl")["Body"].read()
    assert shipped_checkpoints == (a.work / "state" / "audit" / "checkpoints.jsonl").read_bytes()

    # Every replica stopped: edit one shipped record and the check fails,
    # naming the replica.
    bucket = bucket_of("audited")
    key = sorted(k for k in (o["Key"] for o in client.list_objects_v2(
        Bucket=bucket, Prefix="audit/audited-r1/audit-")["Contents"]))[0]
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=body.replace(b'"register"', b'"retire"', 1)
                      .replace(b'"upload"', b'"retire"', 1))
    done = verify()
    assert done.returncode != 0
    assert "replica audited-r1" in done.stderr and "altered" in done.stderr, done.stderr

    # A replica's whole folder deleted: caught when the replicas are named.
    for key in [o["Key"] for o in client.list_objects_v2(
            Bucket=bucket, Prefix="audit/audited-r1/")["Contents"]]:
        client.delete_object(Bucket=bucket, Key=key)
    done = verify()
    assert done.returncode == 0 and "no --replica named" in done.stderr
    done = verify("--replica", "audited-r0", "--replica", "audited-r1")
    assert done.returncode != 0
    assert "replica audited-r1: no audit files" in done.stderr, done.stderr


def test_replicas_spend_one_privacy_budget(tmp_path_factory, s3):
    with replicas(tmp_path_factory, s3, "budget") as (a, b):
        body = json.loads(manifest("dp-shared"))
        body["tier"] = "controlled"
        body["columns"][1].update(groupable=True, categories=["x", "y"])
        publish(a, "dp-shared", range(500), "x", json.dumps(body).encode())
        wait_until(lambda: status_of(b, "/v1/datasets/dp-shared") == 200)

        def ask(server):
            return status_of(server, "/v1/datasets/dp-shared/aggregate?group_by=label&epsilon=0.25")

        # Alternating replicas: the budget of 1.0 pays four answers in all,
        # not four per replica.
        answered = [ask(server) for server in (a, b) * 4]
        assert answered[:4] == [200] * 4, answered
        assert set(answered[4:]) == {403} or set(answered[4:]) == {429}, answered
        # Each replica shows the total it last read (here, on a refusal).
        for server in (a, b):
            budget = json.loads(server.get("/v1/datasets/dp-shared"))["access"]["privacy_budget"]
            assert budget["remaining"] == 0 and budget["spent"] == 1.0, budget
        # So does the admin's explanation, read from the bucket.
        env, _ = s3
        explained = sluice(a, env, "policy", "explain", "--sub", "alice@uni.example",
                           "--role", "researcher", "--dataset", "dp-shared")
        assert explained.returncode == 0, explained.stderr
        assert "dp-replicas" in explained.stdout, explained.stdout
        assert "privacy budget: spent 1 of 1, 0 left (ledger in s3://sluice-budget/privacy-ledger)" in explained.stdout, explained.stdout


def test_a_link_one_replica_signs_works_on_every_other_until_access_ends(tmp_path_factory, s3):
    with replicas(tmp_path_factory, s3, "links") as (a, b):
        publish(a, "linked", range(40), "shared")
        link = a.post_json("/v1/datasets/linked/snapshot", {"columns": ["id"]}, a.token)
        assert link["rows"] == 40

        # The same link through B (a load balancer may send it anywhere),
        # even before B has polled for A's new version.
        path = link["url"].split("/v1/", 1)[1]
        try:
            body = b.get("/v1/" + path, token=False)
        except urllib.error.HTTPError as error:
            raise AssertionError(error.read()) from error
        table = pq.read_table(pa.BufferReader(body))
        assert table.column_names == ["id"]
        assert sorted(table.column("id").to_pylist()) == list(range(40))

        # A forged ticket id or signature is refused on B as on A.
        assert status_of(b, "/v1/" + path.replace("ticket=", "ticket=x")) in (403, 404, 410)

        # Retired through A: the link closes on B too.
        status, answer = a.send("DELETE", "/v1/datasets/linked", b"", "application/json")
        assert status == 200, answer
        wait_until(lambda: status_of(b, "/v1/datasets/linked") == 404)
        assert status_of(b, "/v1/" + path) in (403, 404, 410)


def test_a_steward_cannot_change_a_dataset_given_away_through_another_replica(tmp_path_factory, s3):
    env, _ = s3
    with replicas(tmp_path_factory, s3, "moved", count=1) as (a,):
        publish(a, "moved", range(3), "x")
        # B starts knowing the dataset, then never polls: it learns of A's
        # change only when its own commit conflicts.
        with running_server(tmp_path_factory.mktemp("replica"), datasets_url="s3://sluice-moved/datasets",
                            storage="poll_millis = 600000", env={**env, "SLUICE_AUDIT__REPLICA_ID": "moved-r1"},
                            secrets_from=a.work / "state") as b:
            assert status_of(b, "/v1/datasets/moved") == 200
            status, answer = request(a, "PATCH", "/v1/datasets/moved", {"publisher": "Other Org"}, a.admin)
            assert status == 200, answer
            # The old publisher's steward, through B (which still shows them
            # as the publisher): refused, nothing changed.
            status, answer = request(b, "PATCH", "/v1/datasets/moved", {"title": "Still mine?"}, b.steward)
            assert status == 409 and "publisher changed" in answer["detail"], (status, answer)
            status, answer = request(b, "DELETE", "/v1/datasets/moved", {}, b.steward)
            assert status in (403, 409), (status, answer)
        detail = json.loads(a.get("/v1/datasets/moved", token=a.admin))
        assert detail["publisher"] == "Other Org" and detail["title"] == "Replicated", detail
        assert detail["status"] == "published", detail


def request(server, method: str, path: str, body: dict, token: str) -> tuple[int, dict]:
    """A JSON request with `token`; the status and the JSON answer."""
    req = urllib.request.Request(server.url(path), data=json.dumps(body).encode(), method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, context=server.context, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_change_whose_body_arrives_after_the_dataset_was_given_away_is_refused(tmp_path_factory, s3):
    with replicas(tmp_path_factory, s3, "drip") as (a, b):
        publish(a, "drip", range(3), "x")
        wait_until(lambda: status_of(b, "/v1/datasets/drip") == 200)
        # The old publisher's steward starts a PATCH and an upload through
        # B, authorised while Interop Org still publishes the dataset...
        patch = dripping(b, "PATCH", "/v1/datasets/drip", b'{"publisher": "Interop Org", "title": "taken"}',
                         "application/json")
        data = dripping(b, "PUT", "/v1/datasets/drip/data", parquet_of(range(5), "evil"),
                        "application/vnd.apache.parquet")
        # ...an admin gives it away through A, and B polls that...
        status, answer = request(a, "PATCH", "/v1/datasets/drip", {"publisher": "Other Org"}, a.admin)
        assert status == 200, answer
        wait_until(lambda: json.loads(b.get("/v1/datasets/drip", token=b.admin))["publisher"] == "Other Org")
        # ...then the bodies finish: both refused, nothing changed.
        for finish in (patch, data):
            status, answer = finish()
            assert status == 409 and "publisher changed" in answer["detail"], (status, answer)
        detail = json.loads(a.get("/v1/datasets/drip", token=a.admin))
        assert (detail["publisher"], detail["title"], detail["version"]) == ("Other Org", "Replicated", 1)
        assert {r["label"] for r in rows(a, "drip")} == {"x"}


def dripping(server, method: str, path: str, body: bytes, content_type: str):
    """Starts a steward's request with the first bytes of `body`; returns a
    function that sends the rest and gives (status, JSON answer)."""
    port = int(server.base.rsplit(":", 1)[1])
    connection = http.client.HTTPSConnection("localhost", port, context=server.context, timeout=60)
    connection.putrequest(method, path)
    connection.putheader("Authorization", f"Bearer {server.steward}")
    connection.putheader("Content-Type", content_type)
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders()
    connection.send(body[:3])

    def finish():
        connection.send(body[3:])
        response = connection.getresponse()
        return response.status, json.loads(response.read())

    return finish


def test_publishing_a_review_another_replica_published_is_a_conflict(tmp_path_factory, s3):
    env, _ = s3
    with replicas(tmp_path_factory, s3, "review", count=1) as (a,):
        body = json.loads(manifest("reviewed"))
        body["columns"] = []  # the first upload defines them: held for review
        status, answer = a.send("POST", "/v1/datasets", json.dumps(body).encode(), "application/json")
        assert status == 201, answer
        status, answer = upload(a, "reviewed", parquet_of(range(4), "x"))
        assert status == 201 and answer["in_review"], answer
        # B starts seeing the version in review, then never polls.
        with running_server(tmp_path_factory.mktemp("replica"), datasets_url="s3://sluice-review/datasets",
                            storage="poll_millis = 600000", env={**env, "SLUICE_AUDIT__REPLICA_ID": "review-r1"},
                            secrets_from=a.work / "state") as b:
            status, answer = a.send("POST", "/v1/datasets/reviewed/publish", b"", "application/json")
            assert status == 200, answer
            status, answer = b.send("POST", "/v1/datasets/reviewed/publish", b"", "application/json")
            assert status == 409 and "changed meanwhile" in answer["detail"], (status, answer)
        assert len(rows(a, "reviewed")) == 4


def test_a_personal_token_made_on_one_replica_is_revoked_on_every_other(tmp_path_factory, s3):
    """Issue 34: personal tokens live in the bucket: made through A, used
    and listed through B, revoked through A and refused by B within the
    seconds a replica trusts what it read."""
    with replicas(tmp_path_factory, s3, "tokens") as (a, b):
        status, made = request(a, "POST", "/v1/me/tokens", {"name": "cluster job"}, a.token)
        assert status == 201, made
        pat = made["token"]
        assert status_of(b, "/v1/me", pat) == 200
        listed = json.loads(b.get("/v1/me/tokens"))
        assert [t["id"] for t in listed["tokens"]] == [made["id"]], listed
        revoke = urllib.request.Request(a.url(f"/v1/me/tokens/{made['id']}"), method="DELETE")
        revoke.add_header("Authorization", f"Bearer {a.token}")
        with urllib.request.urlopen(revoke, context=a.context, timeout=60) as response:
            assert response.status == 204
        assert status_of(a, "/v1/me", pat) == 401
        # Asked twice a second (more would meet the rate limit).
        seen = []
        start = time.monotonic()
        while time.monotonic() - start < 10 and (not seen or seen[-1] != 401):
            seen.append(status_of(b, "/v1/me", pat))
            time.sleep(0.5)
        assert seen[-1] == 401 and time.monotonic() - start < 7.5, seen
