"""The README's Python snippet, run as written (copied out of README.md)
against a live server, from a folder outside the repository."""

import os
import re
import subprocess
import sys

from conftest import ROOT


def readme_python() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "the README has a Python snippet"
    return blocks[0]


def test_the_readme_python_snippet_runs_as_written(server, tmp_path):
    snippet = tmp_path / "snippet.py"
    snippet.write_text(readme_python())
    env = dict(os.environ,
               SLUICE_URL=server.base, SLUICE_CA=str(server.ca), SLUICE_TOKEN=server.token)
    run = subprocess.run([sys.executable, str(snippet)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    # table rows, then the three frames' (rows, columns): the grant's 1000-row page of 3 columns.
    assert run.stdout.split() == ["1000", "(1000,", "3)", "(1000,", "3)", "(1000,", "3)"], run.stdout
