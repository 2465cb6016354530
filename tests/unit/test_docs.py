"""The documentation does what it says: every tutorial block runs as written, and the references list every
configuration key and every command-line option."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dtb.cli import describe as describe_cli
from dtb.config import describe

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.S | re.M)


def _blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(page.read_text())]


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(p.name for p in (DOCS / "tutorial").glob("*.md")))
def test_tutorial_runs_as_written(page, tmp_path, monkeypatch):
    """The blocks of one page, in order, in one empty folder: Python in one namespace (as in a notebook), shell
    with this environment's dtb and python first on PATH."""
    blocks = _blocks(DOCS / "tutorial" / page)
    assert blocks, f"{page} has no code"
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    namespace = {}
    for k, (lang, code) in enumerate(blocks):
        if lang == "python":
            exec(compile(code, f"{page} block {k + 1}", "exec"), namespace)
        else:
            res = subprocess.run(["bash", "-euo", "pipefail", "-c", code], capture_output=True, text=True, env=env,
                                 timeout=600)
            assert res.returncode == 0, f"{page} block {k + 1}:\n{code}\n{res.stdout}\n{res.stderr}"
            assert "Traceback" not in res.stderr


def test_the_configuration_reference_is_current():
    assert describe().strip() in (DOCS / "reference" / "config.md").read_text()


def test_the_cli_reference_is_current():
    """docs/reference/cli.md holds `dtb.cli.describe()`, which lists every command and option of the parser."""
    text = describe_cli()
    assert text.strip() in (DOCS / "reference" / "cli.md").read_text()
    for flag in ("--lengths", "--sc-rows", "--transient-s", "--cpus-per-task", "--resume", "--ranks-per-node"):
        assert f"`{flag}`" in text
