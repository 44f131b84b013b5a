"""Starts the real `sluice` binary over HTTPS on a free loopback port, with
freshly generated sample data, for the interop tests."""

import json
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = 3000

POLICY = """
[[grant]]
id = "interop"
subjects = ["alice@uni.example"]
dataset = "hospital-admissions"
purpose = "interop tests"
expires = 2099-12-31
"""


def binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = target / "release" / "sluice"
    assert path.exists(), f"build first: {path} is missing"
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base: str, context: ssl.SSLContext, token: str, steward: str, ca: Path):
        self.base = base
        self.ca = ca
        self.context = context
        self.token = token
        self.steward = steward

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, token: bool = True, headers=None) -> bytes:
        request = urllib.request.Request(self.url(path), headers=headers or {})
        if token:
            request.add_header("Authorization", f"Bearer {self.token}")
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


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("sluice")
    exe = binary()
    subprocess.run(
        [exe, "demo-data", "--rows", str(ROWS), "--out", work / "datasets"], check=True
    )
    (work / "policy.toml").write_text(POLICY)
    port = free_port()
    config = work / "sluice.toml"
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
[tls]
mode = "self-signed"
[auth]
dev_mode = true
[storage]
datasets = "{work / 'datasets'}"
state = "{work / 'state'}"
policy = "{work / 'policy.toml'}"
"""
    )
    log = open(work / "server.log", "w")
    process = subprocess.Popen(
        [exe, "--config", config, "serve"], stdout=log, stderr=subprocess.STDOUT
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
        yield Server(f"https://localhost:{port}", context, token, steward, ca)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def metadata(server, dataset: str) -> dict:
    return json.loads(server.get(f"/v1/datasets/{dataset}"))
