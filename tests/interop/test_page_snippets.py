"""Every Python and shell snippet on a dataset's page, copied out of the
page's HTML and run as written against a live server: each gets rows with
a token that holds a grant, and each shows the server's problem body (its
`type` and why) when refused."""

import html
import os
import re
import subprocess
import sys
import urllib.request

from conftest import binary

PYTHON = ["snippet-pyarrow", "snippet-polars", "snippet-pandas", "snippet-duckdb"]


def page_snippets(server, dataset: str) -> dict:
    request = urllib.request.Request(f"{server.base}/datasets/{dataset}",
                                     headers={"Accept": "text/html"})
    page = urllib.request.urlopen(request, context=server.context).read().decode()
    found = dict(re.findall(r'<pre id="(snippet-[a-z-]+)"><code>(.*?)</code></pre>', page, re.S))
    return {name: html.unescape(code) for name, code in found.items()}


def run(code: str, tmp_path, token: str, shell: bool = False):
    env = dict(os.environ, SLUICE_TOKEN=token)
    command = ["sh", "-c", code] if shell else [sys.executable, "-c", code]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_pages_snippets_run_and_show_why_when_refused(server, tmp_path):
    snippets = page_snippets(server, "hospital-admissions")
    assert set(PYTHON) <= set(snippets), snippets.keys()
    # The page says which identities hold grants here, in dev mode.
    for name in PYTHON:
        ran = run(snippets[name], tmp_path, server.token)
        assert ran.returncode == 0, f"{name}: {ran.stderr}"
        assert ran.stdout.strip(), name
    duck = run(snippets["snippet-duckdb"], tmp_path, server.token)
    assert "[(1000,)]" in duck.stdout, duck.stdout
    curl = run(snippets["snippet-curl"], tmp_path, server.token, shell=True)
    assert curl.returncode == 0, curl.stderr
    assert curl.stdout.startswith("patient_id,") or "," in curl.stdout.splitlines()[0]

    # A token without a grant: the server's problem, not a bare status.
    nobody = subprocess.run(
        [binary(), "--config", server.work / "sluice.toml", "token", "--sub",
         "nobody@uni.example", "--role", "researcher"],
        check=True, capture_output=True, text=True).stdout.strip()
    refused = run(snippets["snippet-pyarrow"], tmp_path, nobody)
    assert refused.returncode != 0
    assert "grant-required" in refused.stderr, refused.stderr
    refused = run(snippets["snippet-curl"], tmp_path, nobody, shell=True)
    assert refused.returncode != 0
    assert "grant-required" in refused.stdout, refused.stdout
