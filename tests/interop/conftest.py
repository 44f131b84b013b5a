"""Starts the real `sluice` binary over HTTPS on a free loopback port, with
freshly generated sample data, for the interop tests."""

import contextlib
import html
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from benchlib import sealed_policy  # noqa: E402  (one sealing rule for benches and tests)
ROWS = 3000

POLICY = """
[[grant]]
id = "interop"
subjects = ["alice@uni.example"]
dataset = "hospital-admissions"
purpose = "interop tests"
expires = 2099-12-31

[[grant]]
id = "north-interop"
subjects = ["nora@nhs.example"]
dataset = "hospital-admissions"
purpose = "interop tests with a row filter"
row_filter = "region = 'north'"
expires = 2099-12-31
"""

#: The raw identifiers of the controlled dataset: no response may carry one.
RAW_IDENTIFIERS = ("nhs_number", "patient_id")


def binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = target / "release" / "sluice"
    assert path.exists(), f"build first: {path} is missing"
    return path


def page_snippets(server, dataset: str) -> dict:
    """The copy-paste snippets of a dataset's page, by their element id, as
    a visitor copies them out of the HTML."""
    request = urllib.request.Request(f"{server.base}/datasets/{dataset}",
                                     headers={"Accept": "text/html"})
    page = urllib.request.urlopen(request, context=server.context).read().decode()
    found = dict(re.findall(r'<pre id="(snippet-[a-z-]+)"><code>(.*?)</code></pre>', page, re.S))
    return {name: html.unescape(code) for name, code in found.items()}


def run_snippet(command: list, cwd, token: str, path_first=None):
    """Runs a pasted snippet with `SLUICE_TOKEN` set (and `path_first` at
    the head of `PATH`, where the tools it names are)."""
    env = dict(os.environ, SLUICE_TOKEN=token)
    if path_first:
        env["PATH"] = f"{path_first}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base: str, context: ssl.SSLContext, token: str, steward: str, ca: Path, work: Path):
        self.base = base
        self.ca = ca
        self.context = context
        self.token = token
        self.steward = steward
        self.work = work
        #: A researcher whose grant has a row filter (north only), masks on.
        self.north = ""

    def raw(self, dataset: str, column: str) -> list:
        """Every raw value of a column, read from the dataset's own file."""
        import pyarrow.parquet as pq

        path = self.work / "datasets" / dataset / "versions" / "1" / "part-0.parquet"
        return pq.read_table(path, columns=[column]).column(column).to_pylist()

    def client_env(self) -> dict:
        """The environment a separate client process needs to trust the
        server: a bundle of the system's CAs and the server's own, for the
        HTTP stacks that read SSL_CERT_FILE (OpenSSL, aiohttp) and those
        that read REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE."""
        bundle = self.work / "bundle.pem"
        if not bundle.exists():
            paths = ssl.get_default_verify_paths()
            found = [Path(p) for p in (paths.cafile, paths.openssl_cafile) if p and Path(p).exists()]
            system = found[0].read_text() if found else ""
            bundle.write_text(system + "\n" + self.ca.read_text())
        env = dict(os.environ)
        env.pop("SSL_CERT_DIR", None)
        for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            env[name] = str(bundle)
        return env

    def post_json(self, path: str, body: dict, token: str) -> dict:
        request = urllib.request.Request(self.url(path), data=json.dumps(body).encode(), method="POST")
        request.add_header("Authorization", f"Bearer {token}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, context=self.context, timeout=60) as response:
            return json.loads(response.read())

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, token=True, headers=None) -> bytes:
        """GET as alice (`token=True`), anonymously (`False`) or with the
        token given."""
        request = urllib.request.Request(self.url(path), headers=headers or {})
        if token:
            bearer = self.token if token is True else token
            request.add_header("Authorization", f"Bearer {bearer}")
        with urllib.request.urlopen(request, context=self.context, timeout=60) as response:
            return response.read()

    def send(self, method: str, path: str, body: bytes, content_type: str) -> tuple[int, dict]:
        """A steward's request; returns the status and the JSON answer."""
        request = urllib.request.Request(self.url(path), data=body, method=method)
        request.add_header("Authorization", f"Bearer {self.steward}")
        request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def open(self, path: str):
        request = urllib.request.Request(self.url(path))
        request.add_header("Authorization", f"Bearer {self.token}")
        return urllib.request.urlopen(request, context=self.context, timeout=60)


#: What replicas of one deployment share besides the bucket: the TLS
#: material and the keys (pseudonyms, snapshot links, development tokens,
#: audit checkpoints).
SHARED_SECRETS = ("tls", "dev-signing-key.pem", "pseudonym-secret", "snapshot-url-key",
                  "audit-signing-key")


@contextlib.contextmanager
def moto_server(python: str, work: Path, buckets: tuple = ()):
    """moto's S3 server on a free loopback port, run by `python` (which has
    `moto[server]` and boto3: the interop venv's), with `buckets` made;
    yields the environment a replica needs to reach it."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(work / "moto.log", "w")
    process = subprocess.Popen([python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    env = {
        "AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    }
    make = ("import boto3, sys; c = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',"
            " aws_access_key_id='testing', aws_secret_access_key='testing');"
            " c.list_buckets(); [c.create_bucket(Bucket=b) for b in sys.argv[2:]]")
    try:
        deadline = time.time() + 60
        while subprocess.run([python, "-c", make, endpoint, *buckets], capture_output=True).returncode:
            assert process.poll() is None and time.time() < deadline, (work / "moto.log").read_text()
            time.sleep(0.2)
        yield env
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@contextlib.contextmanager
def running_server(work: Path, limits: str = "", datasets_url: str = "", storage: str = "",
                   env: dict | None = None, secrets_from: Path | None = None, policy: str = "",
                   port: int = 0, rows: int = ROWS, flight: str = ""):
    """The real binary serving fresh sample data from `work`, over HTTPS on
    a free loopback port, until the block ends; `limits` adds lines to the
    `[limits]` section. With `datasets_url` it serves that object-store
    catalogue instead (no sample data), with `env` added to its environment
    and, from `secrets_from` (another replica's state folder), the same
    secrets as that replica. `policy` adds grants to the policy file;
    `port` is the port to listen on (default: a free one); `rows` how many
    rows each sample dataset has; `flight` adds lines to `[flight]`."""
    exe = binary()
    if datasets_url:
        storage_lines = f'datasets_url = "{datasets_url}"\n{storage}'
        if secrets_from is not None:
            (work / "state").mkdir(parents=True, exist_ok=True)
            for name in SHARED_SECRETS:
                source = secrets_from / name
                if source.is_dir():
                    shutil.copytree(source, work / "state" / name)
                elif source.exists():
                    shutil.copy2(source, work / "state" / name)
    else:
        subprocess.run(
            [exe, "demo-data", "--rows", str(rows), "--out", work / "datasets"], check=True
        )
        storage_lines = f'datasets = "{work / "datasets"}"'
    (work / "policy.toml").write_text(sealed_policy(POLICY + policy))
    port = port or free_port()
    flight_port = free_port()
    config = work / "sluice.toml"
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
[tls]
mode = "self-signed"
[flight]
listen = "127.0.0.1:{flight_port}"
{flight}
[auth]
dev_mode = true
[storage]
{storage_lines}
state = "{work / 'state'}"
policy = "{work / 'policy.toml'}"
[limits]
{limits}
"""
    )
    log = open(work / "server.log", "w")
    process = subprocess.Popen(
        [exe, "--config", config, "serve"], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    try:
        ca = work / "state" / "tls" / "ca.pem"
        deadline = time.time() + 60
        context = None
        while time.time() < deadline:
            assert process.poll() is None, (work / "server.log").read_text()
            if ca.exists():
                try:
                    context = ssl.create_default_context(cafile=str(ca))
                    urllib.request.urlopen(
                        f"https://localhost:{port}/healthz", context=context, timeout=2
                    ).read()
                    break
                except OSError:
                    pass
            time.sleep(0.2)
        else:
            raise RuntimeError("server did not start: " + (work / "server.log").read_text())
        def mint(*args):
            return subprocess.run(
                [exe, "--config", config, "token", *args], check=True, capture_output=True, text=True
            ).stdout.strip()

        token = mint("--sub", "alice@uni.example", "--role", "researcher")
        steward = mint("--sub", "sam@interop.example", "--role", "steward", "--org", "Interop Org")
        server = Server(f"https://localhost:{port}", context, token, steward, ca, work)
        server.north = mint("--sub", "nora@nhs.example", "--role", "researcher")
        server.admin = mint("--sub", "ada@sluice.example", "--role", "admin", "--role", "steward", "--org", "Example Health Data Service")
        server.process = process
        #: Arrow Flight SQL, on its own port with the same TLS.
        server.flight = f"grpc+tls://localhost:{flight_port}"
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("sluice")) as server:
        yield server


def metadata(server, dataset: str) -> dict:
    return json.loads(server.get(f"/v1/datasets/{dataset}"))


def canonical_rows(frame) -> list:
    """A pandas frame's rows as sorted tuples of text, so slices read by
    different clients compare row for row whatever types they chose for
    dates, integers with nulls, and nulls themselves."""
    import math

    def text(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if str(value) in ("NaT", "<NA>", "nan"):
            return ""
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if hasattr(value, "isoformat"):
            iso = value.isoformat()
            return iso[:10] if iso.endswith("T00:00:00") or len(iso) == 10 else iso
        return str(value)

    columns = list(frame.columns)
    return sorted(tuple(text(v) for v in row) for row in frame[columns].itertuples(index=False))
