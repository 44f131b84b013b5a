"""Every Python and shell snippet on a dataset's page, copied out of the
page's HTML and run as written against a live server: each gets rows with
a token that holds a grant, and each shows the server's problem body (its
`type` and why) when refused."""

import shutil
import subprocess
import sys

from conftest import binary, page_snippets, run_snippet

PYTHON = ["snippet-pyarrow", "snippet-polars", "snippet-pandas", "snippet-duckdb"]


def run(code: str, tmp_path, token: str, shell: bool = False):
    command = ["sh", "-c", code] if shell else [sys.executable, "-c", code]
    return run_snippet(command, tmp_path, token, path_first=binary().parent)


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

    # The CLI's, with the sluice binary on PATH as an installed one is.
    cli = run(snippets["snippet-cli"], tmp_path, server.token, shell=True)
    assert cli.returncode == 0, cli.stderr
    assert '"id": "hospital-admissions"' in cli.stdout, cli.stdout
    refused = run(snippets["snippet-cli"], tmp_path, "not-a-token", shell=True)
    assert refused.returncode != 0
    assert "invalid-token" in refused.stderr + refused.stdout, refused.stderr


def test_the_pages_r_snippet_reads_rows_and_shows_why_when_refused(server, tmp_path):
    """R with httr2 (Debian's r-cran-httr2, which the test command installs)."""
    rscript = shutil.which("Rscript")
    assert rscript, "Rscript is missing: scripts/test installs r-base-core and r-cran-httr2"
    code = page_snippets(server, "hospital-admissions")["snippet-r"]
    ran = run_snippet([rscript, "-e", code], tmp_path, server.token)
    assert ran.returncode == 0, ran.stderr
    assert "age_band" in ran.stdout and "nhs_number" not in ran.stdout, ran.stdout
    refused = run_snippet([rscript, "-e", code], tmp_path, "not-a-token")
    assert refused.returncode != 0
    assert "invalid-token" in refused.stderr, refused.stderr
