"""Shared helpers for tests against ../shared/reference (published figures with sources)."""

from __future__ import annotations

import csv
from pathlib import Path

from planner.modelspec import ModelSpec, spec_from_hf_config

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"

MPT_SHAPES = {  # llm-foundry scripts/train/yamls/pretrain/mpt-*.yaml: d_model, n_heads, n_layers
    "125m": (768, 12, 12), "350m": (1024, 16, 24), "760m": (1536, 12, 24), "1b": (2048, 16, 24),
    "3b": (2560, 20, 32), "7b": (4096, 32, 32), "13b": (5120, 40, 40), "30b": (7168, 56, 48), "70b": (8192, 64, 80),
}


def reference_rows(name: str) -> list[dict[str, str]]:
    """Rows of a reference CSV."""
    with (REFERENCE_DIR / name).open(newline="") as handle:
        return list(csv.DictReader(handle))


def mosaic_rows() -> list[dict[str, str]]:
    """MosaicML llm-foundry benchmark rows (each a configuration that fit and its measured speed)."""
    return [r for r in reference_rows("training_runs.csv") if r["group"].startswith("MosaicML")]


def mpt_spec(row: dict[str, str]) -> ModelSpec:
    """The MPT model of a MosaicML row, from the llm-foundry yaml shapes (vocab 50368, expansion 4)."""
    size = row["model"].split()[0].split("-")[1].lower()
    d_model, heads, layers = MPT_SHAPES[size]
    cfg = dict(model_type="mpt", d_model=d_model, n_heads=heads, n_layers=layers, expansion_ratio=4, vocab_size=50368,
               max_seq_len=int(row["seq_len"]))
    return spec_from_hf_config(cfg, f"mpt-{size}")
