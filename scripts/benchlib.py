"""Shared pieces of the benchmark scripts: a free loopback port, RSS
sampling of the server (and its worker processes), and starting the release
binary over HTTPS on a work folder. Only ever talks to 127.0.0.1."""

import hashlib
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "sluice"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def children(pid):
    """Child processes of any of the process's threads."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


class PeakSampler(threading.Thread):
    """Samples RSS every 50 ms (VmHWM can only be reset by root): the
    server's, and separately the largest of its child processes'."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.child_peak, self.running = pid, 0, 0, True

    def run(self):
        while self.running:
            try:
                self.peak = max(self.peak, rss_kb(self.pid, "VmRSS"))
            except OSError:
                return
            for child in children(self.pid):
                try:
                    self.child_peak = max(self.child_peak, rss_kb(child, "VmRSS"))
                except OSError:
                    pass
            time.sleep(0.05)

    def stop(self):
        self.running = False
        self.join()
        return self.peak


def start_server(work, datasets, policy_text, extra=""):
    """Starts `sluice serve` over HTTPS on a free port, with `extra` TOML
    appended to its config; returns (process, base URL, CA path, config
    path) once it answers /healthz."""
    work = Path(work)
    (work / "policy.toml").write_text(sealed_policy(policy_text))
    port = free_port()
    config = work / "sluice.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
[tls]
mode = "self-signed"
[auth]
dev_mode = true
[storage]
datasets = "{datasets}"
state = "{work / 'state'}"
policy = "{work / 'policy.toml'}"
{extra}""")
    log = open(work / "server.log", "w")
    server = subprocess.Popen([BIN, "--config", config, "serve"], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "RUST_LOG": "warn"})
    ca = str(work / "state" / "tls" / "ca.pem")
    base = f"https://localhost:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(base + "/healthz", context=ssl.create_default_context(cafile=ca), timeout=1)
            break
        except Exception:
            time.sleep(0.1)
    return server, base, ca, config


def flight_sql_command(sql, kind="CommandStatementQuery"):
    """A Flight SQL `CommandStatementQuery` (or another command whose field
    1 is its only field: `CommandPreparedStatementQuery` and its handle)
    packed in a protobuf `Any`, for `pyarrow.flight.FlightDescriptor.for_command`
    (written by hand: field 1 of each is the query, then the type URL;
    field 2 of `Any` the value)."""
    def field(number, value):
        length, out = len(value), bytearray()
        while True:
            byte = length & 0x7F
            length >>= 7
            out.append(byte | (0x80 if length else 0))
            if not length:
                break
        return bytes([number << 3 | 2]) + bytes(out) + value

    url = b"type.googleapis.com/arrow.flight.protocol.sql." + kind.encode()
    if sql is None:  # a command with nothing set
        return field(1, url) + field(2, b"")
    value = sql.encode() if isinstance(sql, str) else sql
    return field(1, url) + field(2, field(1, value))


def token(config, *args):
    return subprocess.run([BIN, "--config", config, "token", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def sealed_policy(text):
    """`text` as `sluice policy apply` writes it: every seal line it held
    dropped, and a last line that seals every byte before it (the server
    refuses an unsealed policy file). The interop tests use it too."""
    prefix = "# sluice-seal sha256:"
    body = "".join(line for line in text.splitlines(keepends=True) if not line.startswith(prefix))
    body = body.rstrip("\n") + "\n" if body.strip() else ""
    return body + prefix + hashlib.sha256(body.encode()).hexdigest() + "\n"
