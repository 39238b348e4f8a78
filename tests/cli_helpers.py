"""Running the CLI in tests, and what a user error must look like."""

from __future__ import annotations

from typing import Any

from typer.testing import CliRunner

from polyrec.cli import app

runner = CliRunner()


def run(*args: object) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result: Any, *fragments: str, max_lines: int = 2) -> None:
    """Exit status 2, no traceback, one ``error:`` message (soft-wrapped at most
    ``max_lines`` lines) that contains every fragment (white space folded)."""
    out = result.output
    assert result.exit_code == 2, out
    assert "Traceback" not in out
    assert out.strip().startswith("error:"), out
    assert len(out.strip().splitlines()) <= max_lines, out
    folded = " ".join(out.split())
    for f in fragments:
        assert " ".join(f.split()) in folded, (f, out)
