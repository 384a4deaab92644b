"""Model shapes from Hugging Face `config.json`, and parameter counts computed from the shape.

`ModelSpec` is the one description of a model that every formula reads. Parameter counts are
summed matrix by matrix (embedding, attention or MLA projections, dense or MoE MLP, norms, LM
head) so that per-layer, per-stage and per-expert counts come from the same code as the total.
Field names follow the Hugging Face configs of Llama, Qwen2, Mistral/Mixtral, DeepSeek-V2/V3
(`modeling_deepseek.py`) and MPT; `spec_from_hf_config` also maps GPT-2, GPT-J, GPT-NeoX/Pythia,
OPT, BLOOM, Falcon, Phi and Gemma, whose module shapes (biases, LayerNorm with bias, one shared
norm for parallel attention, learned positions, embedding norm, LM-head bias) follow the
`modeling_*.py` of each family in Hugging Face transformers.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from planner.errors import InputError
from planner.files import read_text_file, parse_structured, shorten

MAX_DIM = 1_000_000
"""Largest width accepted from a config (hidden, inner, vocab); larger is a typo, not a model."""

MAX_LAYERS = 10_000
"""Most layers accepted from a config."""


class ModelSpec(BaseModel):
    """Architecture of a decoder-only transformer, dense or MoE, with MHA/GQA/MQA or MLA."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    name: str = Field(description="Model id (catalog name or the config file's stem).")
    hidden_size: int = Field(gt=0, le=MAX_DIM, description="Model width h.")
    intermediate_size: int = Field(gt=0, le=10 * MAX_DIM, description="Dense MLP inner width.")
    num_layers: int = Field(gt=0, le=MAX_LAYERS, description="Transformer blocks L.")
    num_heads: int = Field(gt=0, le=MAX_DIM, description="Attention (query) heads a.")
    num_kv_heads: int = Field(gt=0, le=MAX_DIM, description="Key/value heads (= a for MHA, < a for GQA, 1 for MQA).")
    head_dim: int = Field(gt=0, le=MAX_DIM, description="Per-head width of q/k/v (non-MLA models).")
    vocab_size: int = Field(gt=0, le=10 * MAX_DIM, description="Vocabulary size v.")
    max_position_embeddings: int = Field(gt=0, le=2**40, description="Longest context the model supports.")
    tied_embeddings: bool = Field(description="LM head shares the input embedding matrix.")
    gated_mlp: bool = Field(default=True, description="SwiGLU/GeGLU (3 matrices) instead of a plain GELU/ReLU MLP (2 matrices).")
    qkv_bias: bool = Field(default=False, description="q/k/v projections carry biases (Qwen2, GPT-2, OPT, BLOOM, NeoX, Phi).")
    attn_out_bias: bool = Field(default=False, description="The attention output projection carries a bias (GPT-2, OPT, BLOOM, NeoX, Phi).")
    mlp_bias: bool = Field(default=False, description="MLP projections carry biases (GPT-2, GPT-J, OPT, BLOOM, NeoX, Phi).")
    norm_bias: bool = Field(default=False, description="Norms are LayerNorm with a bias (2h parameters) rather than RMSNorm (h).")
    norms_per_layer: int = Field(default=2, ge=1, le=2, description="Norms per block: 1 where attention and MLP share one (GPT-J, Falcon-7B, Phi).")
    learned_positions: int = Field(default=0, ge=0, le=2**24, description="Rows of a learned position-embedding table (GPT-2, OPT); 0 for RoPE/ALiBi.")
    embedding_norm: bool = Field(default=False, description="A LayerNorm right after the token embedding (BLOOM).")
    lm_head_bias: bool = Field(default=False, description="The LM head carries a bias (GPT-J, Phi).")
    dropout: bool = Field(default=False, description="Training uses dropout (stores 1-byte masks); modern LLM configs set 0.")
    n_routed_experts: int = Field(default=0, ge=0, le=100_000, description="Routed experts per MoE layer (0 = dense).")
    n_shared_experts: int = Field(default=0, ge=0, le=100_000, description="Always-active shared experts per MoE layer.")
    experts_per_token: int = Field(default=0, ge=0, description="Routed experts each token uses (top-k).")
    moe_intermediate_size: int = Field(default=0, ge=0, le=10 * MAX_DIM, description="Inner width of one expert MLP.")
    first_k_dense: int = Field(default=0, ge=0, le=MAX_LAYERS, description="Leading layers with a dense MLP (DeepSeek).")
    moe_layer_freq: int = Field(default=1, ge=1, le=MAX_LAYERS, description="Every n-th layer after the dense ones is MoE.")
    q_lora_rank: int = Field(default=0, ge=0, le=MAX_DIM, description="MLA query compression rank (0 = no compression).")
    kv_lora_rank: int = Field(default=0, ge=0, le=MAX_DIM, description="MLA latent KV rank (0 = not MLA).")
    qk_nope_head_dim: int = Field(default=0, ge=0, le=MAX_DIM, description="MLA per-head q/k width without RoPE.")
    qk_rope_head_dim: int = Field(default=0, ge=0, le=MAX_DIM, description="MLA per-head decoupled RoPE width.")
    v_head_dim: int = Field(default=0, ge=0, le=MAX_DIM, description="MLA per-head value width.")

    @model_validator(mode="after")
    def _check_shape(self) -> ModelSpec:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_attention_heads {self.num_heads} not divisible by num_key_value_heads {self.num_kv_heads}")
        if self.n_routed_experts and not (0 < self.experts_per_token <= self.n_routed_experts):
            raise ValueError("num_experts_per_tok must be between 1 and the number of routed experts")
        if self.n_routed_experts and not self.moe_intermediate_size:
            raise ValueError("an MoE model needs moe_intermediate_size")
        return self

    # ---- structure -------------------------------------------------------------------------

    @property
    def is_moe(self) -> bool:
        """True when some layers route tokens to experts."""
        return self.n_routed_experts > 0

    @property
    def is_mla(self) -> bool:
        """True for Multi-head Latent Attention (DeepSeek-V2 paper, Sec. 2.1)."""
        return self.kv_lora_rank > 0

    def is_moe_layer(self, layer: int) -> bool:
        """DeepSeek `modeling_deepseek.py`: MoE when layer >= first_k_dense_replace and layer % moe_layer_freq == 0."""
        return self.is_moe and layer >= self.first_k_dense and layer % self.moe_layer_freq == 0

    @cached_property
    def num_moe_layers(self) -> int:
        """Number of layers with routed experts."""
        return sum(self.is_moe_layer(i) for i in range(self.num_layers))

    @cached_property
    def q_dim(self) -> int:
        """Width of all query heads together."""
        return self.num_heads * (self.qk_nope_head_dim + self.qk_rope_head_dim if self.is_mla else self.head_dim)

    @cached_property
    def kv_dim(self) -> int:
        """Width of all key heads together (= value heads for non-MLA)."""
        return self.num_heads * (self.qk_nope_head_dim + self.qk_rope_head_dim) if self.is_mla else self.num_kv_heads * self.head_dim

    @cached_property
    def v_dim(self) -> int:
        """Width of all value heads together (input of the output projection)."""
        return self.num_heads * self.v_head_dim if self.is_mla else self.num_kv_heads * self.head_dim

    @cached_property
    def o_dim(self) -> int:
        """Input width of the attention output projection."""
        return self.num_heads * self.v_head_dim if self.is_mla else self.num_heads * self.head_dim

    # ---- parameter counts (matrix by matrix) -----------------------------------------------

    @cached_property
    def attention_params(self) -> int:
        """Attention parameters of one layer: q/k/v/o projections (GQA) or MLA's down/up projections.

        MLA after DeepSeek-V2 (arXiv:2405.04434) Sec. 2.1.2-2.1.3, Eqs. 9-14: W^DQ, W^UQ (or W^Q
        when q_lora_rank = 0), W^DKV and W^KR fused (`kv_a_proj_with_mqa`), W^UK and W^UV fused
        (`kv_b_proj`), W^O, plus the two latent RMSNorms.
        """
        h = self.hidden_size
        if self.is_mla:
            qk_head = self.qk_nope_head_dim + self.qk_rope_head_dim
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * self.num_heads * qk_head
            else:
                q = h * self.num_heads * qk_head
            kv = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
            kv += self.kv_lora_rank * self.num_heads * (self.qk_nope_head_dim + self.v_head_dim)
            return q + kv + self.num_heads * self.v_head_dim * h
        kv_width = self.num_kv_heads * self.head_dim
        q_width = self.num_heads * self.head_dim
        bias = ((q_width + 2 * kv_width) if self.qkv_bias else 0) + (h if self.attn_out_bias else 0)
        return h * q_width + 2 * h * kv_width + q_width * h + bias

    @cached_property
    def mla_replicated_params(self) -> int:
        """MLA parameters every TP rank holds whole per layer: W^DQ, W^DKV + W^KR and the two latent norms (0 for non-MLA)."""
        if not self.is_mla:
            return 0
        h = self.hidden_size
        q_down = h * self.q_lora_rank + self.q_lora_rank if self.q_lora_rank else 0
        return q_down + h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank

    def mlp_params(self, inner: int) -> int:
        """One MLP of inner width `inner`: 3*h*inner for SwiGLU/GeGLU (Shazeer 2020), 2*h*inner for GELU/ReLU, plus biases."""
        matrices = (3 if self.gated_mlp else 2) * self.hidden_size * inner
        bias = ((2 if self.gated_mlp else 1) * inner + self.hidden_size) if self.mlp_bias else 0
        return matrices + bias

    @property
    def norm_params(self) -> int:
        """One norm: h weights (RMSNorm) or h weights + h biases (LayerNorm)."""
        return (2 if self.norm_bias else 1) * self.hidden_size

    @cached_property
    def expert_params(self) -> int:
        """Parameters of one routed expert."""
        return self.mlp_params(self.moe_intermediate_size)

    @cached_property
    def shared_expert_params(self) -> int:
        """Parameters of all shared experts of one MoE layer (DeepSeekMoE: one MLP of n_shared x inner)."""
        return self.mlp_params(self.moe_intermediate_size * self.n_shared_experts) if self.n_shared_experts else 0

    @property
    def router_params(self) -> int:
        """Router (gate) of one MoE layer: h x n_routed_experts."""
        return self.hidden_size * self.n_routed_experts

    def layer_params(self, layer: int, routed_experts_held: float | None = None) -> float:
        """Parameters of layer `layer`: 2 norms + attention + (dense MLP | router + shared + routed experts).

        `routed_experts_held` counts the routed experts present (default: all of them); pass
        top-k for the parameters a token touches, or n_routed / EP for the experts on one rank.
        """
        norms = self.norms_per_layer * self.norm_params
        base = norms + self.attention_params
        if not self.is_moe_layer(layer):
            return base + self.mlp_params(self.intermediate_size)
        held = self.n_routed_experts if routed_experts_held is None else routed_experts_held
        return base + self.router_params + self.shared_expert_params + held * self.expert_params

    @property
    def embedding_params(self) -> int:
        """Input embedding v x h, plus a learned position table and an embedding norm where the model has them."""
        return (self.vocab_size + self.learned_positions) * self.hidden_size + (self.norm_params if self.embedding_norm else 0)

    @property
    def lm_head_params(self) -> int:
        """Output projection v x h (0 when tied to the embedding) and its bias, plus the final norm."""
        head = 0 if self.tied_embeddings else self.vocab_size * self.hidden_size
        return head + (self.vocab_size if self.lm_head_bias else 0) + self.norm_params

    @cached_property
    def layer_prefix_sums(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Prefix sums over layers of (params without routed experts, routed-expert params): O(1) stage sums."""
        dense, experts = [0.0], [0.0]
        for i in range(self.num_layers):
            dense.append(dense[-1] + self.layer_params(i, routed_experts_held=0))
            experts.append(experts[-1] + (self.n_routed_experts * self.expert_params if self.is_moe_layer(i) else 0))
        return tuple(dense), tuple(experts)

    @cached_property
    def moe_layer_prefix(self) -> tuple[int, ...]:
        """Prefix counts of MoE layers: MoE layers in [a, b) = prefix[b] - prefix[a]."""
        counts = [0]
        for i in range(self.num_layers):
            counts.append(counts[-1] + int(self.is_moe_layer(i)))
        return tuple(counts)

    @cached_property
    def total_params(self) -> int:
        """All parameters, as published model sizes count them (MTP modules excluded)."""
        layers = sum(self.layer_params(i) for i in range(self.num_layers))
        return int(self.embedding_params + layers + self.lm_head_params)

    @cached_property
    def active_params(self) -> int:
        """Parameters touched per token: all but the unused routed experts (DeepSeek-V2 Sec. 1 convention)."""
        k = self.experts_per_token
        layers = sum(self.layer_params(i, routed_experts_held=k) for i in range(self.num_layers))
        return int(self.embedding_params + layers + self.lm_head_params)

    @cached_property
    def routed_expert_params_total(self) -> int:
        """All routed-expert parameters of the model (what expert parallelism splits)."""
        return self.num_moe_layers * self.n_routed_experts * self.expert_params

    @cached_property
    def matmul_params_per_token(self) -> int:
        """Active parameters that take part in a matmul per token: active minus the input embedding lookup.

        With tied embeddings the shared matrix still serves as LM head, so it stays counted once
        (the llm-foundry / PaLM Appendix B MFU convention of 6N FLOPs per token). A learned
        position table is a lookup too.
        """
        lookup = self.learned_positions * self.hidden_size
        return self.active_params - lookup - (0 if self.tied_embeddings else self.vocab_size * self.hidden_size)


# ---- loading from config.json ------------------------------------------------------------


def _value(cfg: dict[str, Any], keys: tuple[str, ...], default: Any, kind: str) -> Any:
    """The first present key's value, type-checked: 'int' (a whole number, not a bool), 'num' or 'bool'."""
    for key in keys:
        value = cfg.get(key)
        if value is None:
            continue
        if kind == "bool":
            if not isinstance(value, bool):
                raise InputError(f"{key}: expected true or false, got {shorten(value)}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{key}: expected a number, got {shorten(value)}")
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise InputError(f"{key}: expected a whole number, got {value!r}")
            if not 0 <= value <= 2**40:
                raise InputError(f"{key}: {value!r} is out of range (0 to 2^40)")
            return int(value)
        if value != value or value in (float("inf"), float("-inf")) or value < 0:
            raise InputError(f"{key}: expected a finite non-negative number, got {value!r}")
        return float(value)
    return default


def _int(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    return _value(cfg, keys, default, "int")


def _num(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    return _value(cfg, keys, default, "num")


def _flag(cfg: dict[str, Any], *keys: str, default: bool = False) -> bool:
    return _value(cfg, keys, default, "bool")


def _positive(name: str, value: Any) -> int:
    if value is None:
        raise InputError(f"config.json lacks {name} (Hugging Face field names expected)")
    if value <= 0:
        raise InputError(f"{name}: must be > 0, got {value}")
    return value


def _head_dim(cfg: dict[str, Any], hidden: int, heads: int) -> int:
    """Explicit head_dim, else hidden / heads, which must then divide exactly (no silent truncation)."""
    explicit = _int(cfg, "head_dim")
    if explicit:
        return explicit
    if hidden % heads:
        raise InputError(f"hidden_size {hidden} is not divisible by num_attention_heads {heads}; give head_dim explicitly")
    return hidden // heads


def _dropout(cfg: dict[str, Any], *keys: str) -> bool:
    return any((_num(cfg, k, default=0.0) or 0.0) > 0 for k in keys)


LEGACY_FAMILIES = ("gpt2", "gptj", "gpt_neox", "opt", "bloom", "falcon", "refinedweb", "refinedwebmodel", "phi")
"""model_type values mapped by `_legacy_fields`: plain (non-gated) MLPs, biases and LayerNorm as in their modeling files."""


def _legacy_fields(cfg: dict[str, Any], model_type: str) -> dict[str, Any]:
    """Shape of GPT-2, GPT-J, GPT-NeoX/Pythia, OPT, BLOOM, Falcon and Phi configs (transformers `modeling_<type>.py`)."""
    hidden = _positive("hidden_size", _int(cfg, "hidden_size", "n_embd", "n_embed", "d_model"))
    heads = _positive("num_attention_heads", _int(cfg, "num_attention_heads", "n_head", "n_heads"))
    layers = _positive("num_hidden_layers", _int(cfg, "num_hidden_layers", "n_layer", "n_layers"))
    vocab = _positive("vocab_size", _int(cfg, "vocab_size"))
    inner = _int(cfg, "intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size") or 4 * hidden
    fields: dict[str, Any] = dict(
        hidden_size=hidden, intermediate_size=inner, num_layers=layers, num_heads=heads, num_kv_heads=heads,
        head_dim=_head_dim(cfg, hidden, heads), vocab_size=vocab, gated_mlp=False, norm_bias=True,
        max_position_embeddings=_int(cfg, "max_position_embeddings", "n_positions", "seq_length", default=2048) or 2048,
        dropout=_dropout(cfg, "attention_dropout", "hidden_dropout", "resid_pdrop", "attn_pdrop", "embd_pdrop", "dropout"),
    )
    if model_type == "gpt2":  # modeling_gpt2.py: Conv1D c_attn/c_proj/c_fc with biases, learned wpe, tied head
        fields.update(qkv_bias=True, attn_out_bias=True, mlp_bias=True, learned_positions=fields["max_position_embeddings"],
                      tied_embeddings=_flag(cfg, "tie_word_embeddings", default=True))
    elif model_type == "gptj":  # modeling_gptj.py: q/k/v/out without bias, one ln_1 (parallel block), lm_head with bias
        fields.update(mlp_bias=True, norms_per_layer=1, lm_head_bias=True, tied_embeddings=_flag(cfg, "tie_word_embeddings"))
    elif model_type == "gpt_neox":  # modeling_gpt_neox.py: biased qkv/dense/MLP, two LayerNorms even with parallel residual
        bias = _flag(cfg, "attention_bias", default=True)
        fields.update(qkv_bias=bias, attn_out_bias=bias, mlp_bias=True, tied_embeddings=_flag(cfg, "tie_word_embeddings"))
    elif model_type == "opt":  # modeling_opt.py: biased projections, learned positions with an offset of 2
        if _int(cfg, "word_embed_proj_dim", default=hidden) != hidden:
            raise InputError("word_embed_proj_dim differs from hidden_size (OPT-350m's project_in/out); not supported")
        bias = _flag(cfg, "enable_bias", default=True)
        fields.update(qkv_bias=bias, attn_out_bias=bias, mlp_bias=bias, learned_positions=fields["max_position_embeddings"] + 2,
                      tied_embeddings=_flag(cfg, "tie_word_embeddings", default=True))
    elif model_type == "bloom":  # modeling_bloom.py: biased projections, word_embeddings_layernorm, ALiBi, tied head
        fields.update(qkv_bias=True, attn_out_bias=True, mlp_bias=True, embedding_norm=True,
                      tied_embeddings=_flag(cfg, "tie_word_embeddings", default=True))
    elif model_type in ("falcon", "refinedweb", "refinedwebmodel"):  # modeling_falcon.py
        new_arch = _flag(cfg, "new_decoder_architecture")
        if new_arch:
            kv = _int(cfg, "num_kv_heads", "n_head_kv", default=heads)
        else:
            kv = 1 if _flag(cfg, "multi_query", default=True) else heads
        bias = _flag(cfg, "bias")
        parallel = _flag(cfg, "parallel_attn", default=True)
        one_norm = (not new_arch and parallel) or (new_arch and _int(cfg, "num_ln_in_parallel_attn", default=2) == 1)
        fields.update(num_kv_heads=kv, qkv_bias=bias, attn_out_bias=bias, mlp_bias=bias, norms_per_layer=1 if one_norm else 2,
                      tied_embeddings=_flag(cfg, "tie_word_embeddings", default=True))
        if _flag(cfg, "alibi"):
            fields["max_position_embeddings"] = _int(cfg, "max_position_embeddings", default=2048) or 2048
    elif model_type == "phi":  # modeling_phi.py: biased q/k/v/dense and fc1/fc2, one input_layernorm, lm_head with bias
        fields.update(num_kv_heads=_int(cfg, "num_key_value_heads", default=heads), qkv_bias=True, attn_out_bias=True,
                      mlp_bias=True, norms_per_layer=1, lm_head_bias=True, tied_embeddings=_flag(cfg, "tie_word_embeddings"))
    return fields


def _mpt_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """MPT (llm-foundry): d_model, n_heads, expansion_ratio, ALiBi, tied head, no biases."""
    d_model = _positive("d_model", _int(cfg, "d_model"))
    n_heads = _positive("n_heads", _int(cfg, "n_heads"))
    attn = cfg.get("attn_config") or {}
    if not isinstance(attn, dict):
        raise InputError(f"attn_config: expected a mapping, got {shorten(attn)}")
    ratio = _num(cfg, "expansion_ratio", default=4.0)
    if not ratio:
        raise InputError("expansion_ratio: must be > 0")
    return dict(
        hidden_size=d_model, intermediate_size=int(ratio * d_model), num_layers=_positive("n_layers", _int(cfg, "n_layers")),
        num_heads=n_heads, num_kv_heads=_int(attn, "kv_n_heads", default=n_heads), head_dim=_head_dim({}, d_model, n_heads),
        vocab_size=_positive("vocab_size", _int(cfg, "vocab_size")), max_position_embeddings=_int(cfg, "max_seq_len", default=2048) or 2048,
        tied_embeddings=True, gated_mlp=False,
        dropout=any((_num(cfg, k, default=0.0) or _num(attn, k, default=0.0) or 0.0) > 0 for k in ("resid_pdrop", "attn_pdrop", "emb_pdrop")),
    )


GATED_TIED_BY_DEFAULT = ("gemma",)
"""Families whose config class ties the LM head to the embedding unless the config says otherwise."""

GATED_FAMILIES = ("", "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "deepseek", "deepseek_v2", "deepseek_v3", "gemma",
                  "phi3", "yi", "baichuan")
"""model_type values read as Llama-style (gated MLP, RMSNorm, no biases but Qwen2's q/k/v); '' = a config without model_type."""


def _gated_fields(cfg: dict[str, Any], model_type: str) -> dict[str, Any]:
    """Llama-style configs (Llama, Mistral, Mixtral, Qwen2, DeepSeek V2/V3, Gemma): gated MLP, RMSNorm, RoPE."""
    hidden = _positive("hidden_size", _int(cfg, "hidden_size", "n_embd", "d_model"))
    heads = _positive("num_attention_heads", _int(cfg, "num_attention_heads", "n_head"))
    n_routed = _int(cfg, "n_routed_experts", "num_local_experts", "num_experts", default=0) or 0
    intermediate = _int(cfg, "intermediate_size", "ffn_dim")
    return dict(
        hidden_size=hidden,
        intermediate_size=_positive("intermediate_size", intermediate),
        num_layers=_positive("num_hidden_layers", _int(cfg, "num_hidden_layers", "n_layer")),
        num_heads=heads,
        num_kv_heads=_positive("num_key_value_heads", _int(cfg, "num_key_value_heads", default=heads)),
        head_dim=_head_dim(cfg, hidden, heads) if not _int(cfg, "kv_lora_rank") else (_int(cfg, "head_dim") or max(hidden // heads, 1)),
        vocab_size=_positive("vocab_size", _int(cfg, "vocab_size")),
        max_position_embeddings=_int(cfg, "max_position_embeddings", "n_positions", default=2048) or 2048,
        tied_embeddings=_flag(cfg, "tie_word_embeddings", default=model_type in GATED_TIED_BY_DEFAULT),
        gated_mlp=True,
        qkv_bias=model_type.startswith("qwen2") or _flag(cfg, "attention_bias"),
        dropout=_dropout(cfg, "attention_dropout", "hidden_dropout", "resid_pdrop", "attn_pdrop", "dropout"),
        n_routed_experts=n_routed,
        n_shared_experts=_int(cfg, "n_shared_experts", default=0) or 0,
        experts_per_token=(_int(cfg, "num_experts_per_tok", default=0) or 0) if n_routed else 0,
        moe_intermediate_size=(_int(cfg, "moe_intermediate_size", default=0) or 0) or (intermediate or 0 if n_routed else 0),
        first_k_dense=_int(cfg, "first_k_dense_replace", default=0) or 0,
        moe_layer_freq=_int(cfg, "moe_layer_freq", default=1) or 1,
        q_lora_rank=_int(cfg, "q_lora_rank", default=0) or 0,
        kv_lora_rank=_int(cfg, "kv_lora_rank", default=0) or 0,
        qk_nope_head_dim=_int(cfg, "qk_nope_head_dim", default=0) or 0,
        qk_rope_head_dim=_int(cfg, "qk_rope_head_dim", default=0) or 0,
        v_head_dim=_int(cfg, "v_head_dim", default=0) or 0,
    )


def spec_from_hf_config(cfg: dict[str, Any], name: str) -> ModelSpec:
    """Map a Hugging Face config dict to `ModelSpec`; a field of the wrong type or a missing one is an `InputError` naming it.

    Llama-style (Llama, Qwen2, Mistral, Mixtral, DeepSeek V2/V3, Gemma), MPT, and the
    plain-MLP families GPT-2, GPT-J, GPT-NeoX/Pythia, OPT, BLOOM, Falcon and Phi.
    """
    model_type = str(cfg.get("model_type", "")).lower()
    if model_type == "mpt":
        fields = _mpt_fields(cfg)
    elif model_type in LEGACY_FAMILIES:
        fields = _legacy_fields(cfg, model_type)
    elif model_type in GATED_FAMILIES:
        fields = _gated_fields(cfg, model_type)
    else:  # no silent guess at an unknown architecture's parameter count
        known = sorted({"mpt", *LEGACY_FAMILIES, *GATED_FAMILIES} - {""})
        raise InputError(f"model_type {shorten(model_type, 40)} is not supported; supported: {', '.join(known)}")
    return ModelSpec(name=name, **fields)


def load_config_json(path: Path, where: str = "") -> ModelSpec:
    """Read a Hugging Face `config.json` from disk into a validated `ModelSpec` (`where` names the field that gave the path)."""
    prefix = f"{where}: " if where else ""
    try:
        text = read_text_file(path, "config.json")
    except InputError as err:
        raise InputError(f"{prefix}{err}") from None
    cfg = parse_structured(text, path if path.suffix.lower() == ".json" else path.with_suffix(".json"))
    if not isinstance(cfg, dict):
        raise InputError(f"{path}: expected a JSON object with Hugging Face config fields.")
    name = path.stem if path.stem != "config" else path.parent.name or "custom"
    try:
        return spec_from_hf_config(cfg, name)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "config"
        raise InputError(f"{path}: {field}: {first['msg']} (got {shorten(first.get('input'))}).") from None
    except InputError as err:
        raise InputError(f"{path}: {err}.") from None
