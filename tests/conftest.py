"""Where the published reference figures live: shared/reference beside the clone (as in CI)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"
MISSING_REASON = f"reference figures not found at {REFERENCE_DIR} (CI checks shared/ out beside the clone)"


def reference_rows(filename: str, keep=lambda row: True, id_column: str = "id") -> list:
    """Rows of a reference CSV as pytest params, one test id per row; one skipped param if the folder is missing."""
    path = REFERENCE_DIR / filename
    if not path.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=MISSING_REASON), id="reference-missing")]
    with path.open(newline="") as handle:
        return [pytest.param(row, id=row[id_column]) for row in csv.DictReader(handle) if keep(row)]


@pytest.fixture
def reference_dir() -> Path:
    """The reference folder; skips the test with a clear reason when it is absent."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(MISSING_REASON)
    return REFERENCE_DIR
