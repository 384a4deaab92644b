"""Hugging Face configs of common architectures load with their published parameter counts (issue 15, group 4).

Fixtures: real config.json contents under tests/data/hf_configs/, with the source of each
published count in published_params.csv (tolerance 1%). Falcon-7B has no exact published
count we could verify, so its count is checked against a tally of modeling_falcon.py's modules.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from planner.errors import InputError
from planner.modelspec import load_config_json, spec_from_hf_config

DATA = Path(__file__).resolve().parent / "data" / "hf_configs"
ROWS = list(csv.DictReader((DATA / "published_params.csv").open()))


@pytest.mark.parametrize("row", ROWS, ids=[r["config"] for r in ROWS])
def test_published_parameter_count_within_tolerance(row: dict[str, str]) -> None:
    spec = load_config_json(DATA / row["config"])
    published = float(row["published_total_params"])
    assert abs(spec.total_params - published) / published <= float(row["tolerance"]), (spec.total_params, published, row["count_source"])


def test_at_least_eight_families_beyond_the_catalog() -> None:
    families = {row["family"] for row in ROWS}
    assert len(families) >= 8 and {"gpt2", "gptj", "gpt_neox", "opt", "bloom", "phi", "gemma"} <= families


def test_opt_175b_is_175b_not_232b() -> None:
    spec = load_config_json(DATA / "opt-175b.json")
    assert not spec.gated_mlp and spec.learned_positions == 2050 and spec.mlp_bias and spec.norm_bias
    assert 174.0e9 < spec.total_params < 175.5e9  # a gated (SwiGLU) reading gave 232.5B


def test_falcon_7b_matches_a_tally_of_its_modules() -> None:
    spec = load_config_json(DATA / "falcon-7b.json")
    h, v, layers, head_dim = 4544, 65024, 32, 64
    per_layer = 2 * h + h * (h + 2 * head_dim) + h * h + 2 * h * 4 * h  # input_layernorm, query_key_value (MQA), dense, MLP
    assert spec.num_kv_heads == 1 and spec.norms_per_layer == 1 and spec.tied_embeddings
    assert spec.total_params == v * h + layers * per_layer + 2 * h


def test_family_details() -> None:
    gpt2 = load_config_json(DATA / "gpt2.json")
    assert gpt2.learned_positions == 1024 and gpt2.tied_embeddings and gpt2.qkv_bias and gpt2.attn_out_bias
    gptj = load_config_json(DATA / "gpt-j-6b.json")
    assert gptj.norms_per_layer == 1 and gptj.lm_head_bias and not gptj.qkv_bias and gptj.head_dim == 256
    bloom = load_config_json(DATA / "bloom-560m.json")
    assert bloom.embedding_norm and bloom.tied_embeddings
    gemma = load_config_json(DATA / "gemma-2b.json")
    assert gemma.gated_mlp and gemma.tied_embeddings and gemma.head_dim == 256 and gemma.num_kv_heads == 1
    phi = load_config_json(DATA / "phi-2.json")
    assert phi.lm_head_bias and not phi.tied_embeddings and phi.norms_per_layer == 1 and not phi.gated_mlp
    # the learned position table is a lookup, not a matmul (6N FLOPs per token count matmul parameters)
    assert gpt2.matmul_params_per_token == gpt2.total_params - 1024 * 768


def test_unsupported_shapes_are_named_not_guessed() -> None:
    cfg = json.loads((DATA / "opt-66b.json").read_text())
    with pytest.raises(InputError, match="word_embed_proj_dim"):
        spec_from_hf_config({**cfg, "word_embed_proj_dim": 512}, "opt-350m-like")


def test_unknown_architectures_are_refused_not_read_as_llama() -> None:
    cfg = json.loads((DATA / "gpt2.json").read_text())
    with pytest.raises(InputError, match="model_type 'gpt_bigcode' is not supported; supported: .*gpt2"):
        spec_from_hf_config({**cfg, "model_type": "gpt_bigcode"}, "starcoder-like")
