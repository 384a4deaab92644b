"""Model shapes from Hugging Face `config.json`, and parameter counts computed from the shape.

`ModelSpec` is the one description of a model that every formula reads. Parameter counts are
summed matrix by matrix (embedding, attention or MLA projections, dense or MoE MLP, norms, LM
head) so that per-layer, per-stage and per-expert counts come from the same code as the total.
Field names follow the Hugging Face configs of Llama, Qwen2, Mistral/Mixtral, DeepSeek-V2/V3
(`modeling_deepseek.py`) and MPT.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from planner.errors import InputError


class ModelSpec(BaseModel):
    """Architecture of a decoder-only transformer, dense or MoE, with MHA/GQA/MQA or MLA."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Model id (catalog name or the config file's stem).")
    hidden_size: int = Field(gt=0, description="Model width h.")
    intermediate_size: int = Field(gt=0, description="Dense MLP inner width.")
    num_layers: int = Field(gt=0, description="Transformer blocks L.")
    num_heads: int = Field(gt=0, description="Attention (query) heads a.")
    num_kv_heads: int = Field(gt=0, description="Key/value heads (= a for MHA, < a for GQA, 1 for MQA).")
    head_dim: int = Field(gt=0, description="Per-head width of q/k/v (non-MLA models).")
    vocab_size: int = Field(gt=0, description="Vocabulary size v.")
    max_position_embeddings: int = Field(gt=0, description="Longest context the model supports.")
    tied_embeddings: bool = Field(description="LM head shares the input embedding matrix.")
    gated_mlp: bool = Field(default=True, description="SwiGLU (3 matrices) instead of GELU (2 matrices).")
    qkv_bias: bool = Field(default=False, description="q/k/v projections carry biases (Qwen2).")
    dropout: bool = Field(default=False, description="Training uses dropout (stores 1-byte masks); modern LLM configs set 0.")
    n_routed_experts: int = Field(default=0, ge=0, description="Routed experts per MoE layer (0 = dense).")
    n_shared_experts: int = Field(default=0, ge=0, description="Always-active shared experts per MoE layer.")
    experts_per_token: int = Field(default=0, ge=0, description="Routed experts each token uses (top-k).")
    moe_intermediate_size: int = Field(default=0, ge=0, description="Inner width of one expert MLP.")
    first_k_dense: int = Field(default=0, ge=0, description="Leading layers with a dense MLP (DeepSeek).")
    moe_layer_freq: int = Field(default=1, ge=1, description="Every n-th layer after the dense ones is MoE.")
    q_lora_rank: int = Field(default=0, ge=0, description="MLA query compression rank (0 = no compression).")
    kv_lora_rank: int = Field(default=0, ge=0, description="MLA latent KV rank (0 = not MLA).")
    qk_nope_head_dim: int = Field(default=0, ge=0, description="MLA per-head q/k width without RoPE.")
    qk_rope_head_dim: int = Field(default=0, ge=0, description="MLA per-head decoupled RoPE width.")
    v_head_dim: int = Field(default=0, ge=0, description="MLA per-head value width.")

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
        bias = (q_width + 2 * kv_width) if self.qkv_bias else 0
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
        """One MLP of inner width `inner`: 3*h*inner for SwiGLU (Shazeer 2020), 2*h*inner for GELU."""
        return (3 if self.gated_mlp else 2) * self.hidden_size * inner

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
        norms = 2 * self.hidden_size
        base = norms + self.attention_params
        if not self.is_moe_layer(layer):
            return base + self.mlp_params(self.intermediate_size)
        held = self.n_routed_experts if routed_experts_held is None else routed_experts_held
        return base + self.router_params + self.shared_expert_params + held * self.expert_params

    @property
    def embedding_params(self) -> int:
        """Input embedding v x h."""
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """Output projection v x h (0 when tied to the embedding) plus the final norm."""
        return (0 if self.tied_embeddings else self.vocab_size * self.hidden_size) + self.hidden_size

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
        (the llm-foundry / PaLM Appendix B MFU convention of 6N FLOPs per token).
        """
        return self.active_params - (0 if self.tied_embeddings else self.embedding_params)


# ---- loading from config.json ------------------------------------------------------------


def _first(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return default


def spec_from_hf_config(cfg: dict[str, Any], name: str) -> ModelSpec:
    """Map a Hugging Face config dict (Llama, Qwen2, Mistral, Mixtral, DeepSeek V2/V3, MPT) to `ModelSpec`."""
    model_type = str(cfg.get("model_type", "")).lower()
    if model_type == "mpt":
        d_model = cfg["d_model"]
        n_heads = cfg["n_heads"]
        fields: dict[str, Any] = dict(
            hidden_size=d_model,
            intermediate_size=int(cfg.get("expansion_ratio", 4) * d_model),
            num_layers=cfg["n_layers"],
            num_heads=n_heads,
            num_kv_heads=cfg.get("attn_config", {}).get("kv_n_heads", n_heads),
            head_dim=d_model // n_heads,
            vocab_size=cfg["vocab_size"],
            max_position_embeddings=cfg.get("max_seq_len", 2048),
            tied_embeddings=True,
            gated_mlp=False,
            dropout=any(float(cfg.get(k) or cfg.get("attn_config", {}).get(k) or 0) > 0 for k in ("resid_pdrop", "attn_pdrop", "emb_pdrop")),
        )
        return ModelSpec(name=name, **fields)
    hidden = _first(cfg, "hidden_size", "n_embd", "d_model")
    heads = _first(cfg, "num_attention_heads", "n_head")
    n_routed = int(_first(cfg, "n_routed_experts", "num_local_experts", "num_experts", default=0) or 0)
    fields = dict(
        hidden_size=hidden,
        intermediate_size=_first(cfg, "intermediate_size", "ffn_dim"),
        num_layers=_first(cfg, "num_hidden_layers", "n_layer"),
        num_heads=heads,
        num_kv_heads=_first(cfg, "num_key_value_heads", default=heads),
        head_dim=_first(cfg, "head_dim", default=(hidden // heads) if hidden and heads else None),
        vocab_size=cfg.get("vocab_size"),
        max_position_embeddings=_first(cfg, "max_position_embeddings", "n_positions", default=2048),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        gated_mlp=True,
        qkv_bias=model_type.startswith("qwen2") or bool(cfg.get("attention_bias", False)),
        dropout=any(float(cfg.get(k) or 0) > 0 for k in ("attention_dropout", "hidden_dropout", "resid_pdrop", "attn_pdrop", "dropout")),
        n_routed_experts=n_routed,
        n_shared_experts=int(cfg.get("n_shared_experts") or 0),
        experts_per_token=int(cfg.get("num_experts_per_tok") or 0) if n_routed else 0,
        moe_intermediate_size=int(_first(cfg, "moe_intermediate_size", default=0) or 0)
        or (int(cfg.get("intermediate_size", 0)) if n_routed else 0),
        first_k_dense=int(cfg.get("first_k_dense_replace") or 0),
        moe_layer_freq=int(cfg.get("moe_layer_freq") or 1),
        q_lora_rank=int(cfg.get("q_lora_rank") or 0),
        kv_lora_rank=int(cfg.get("kv_lora_rank") or 0),
        qk_nope_head_dim=int(cfg.get("qk_nope_head_dim") or 0),
        qk_rope_head_dim=int(cfg.get("qk_rope_head_dim") or 0),
        v_head_dim=int(cfg.get("v_head_dim") or 0),
    )
    missing = [k for k, v in fields.items() if v is None]
    if missing:
        raise InputError(f"{name}: config.json lacks {', '.join(missing)} (Hugging Face field names expected).")
    return ModelSpec(name=name, **fields)


def load_config_json(path: Path) -> ModelSpec:
    """Read a Hugging Face `config.json` from disk into a validated `ModelSpec`."""
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found.") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}).") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{path}: expected a JSON object with Hugging Face config fields.")
    name = path.stem if path.stem != "config" else path.parent.name or "custom"
    try:
        return spec_from_hf_config(cfg, name)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "config"
        raise InputError(f"{path}: {field}: {first['msg']}.") from None
    except (KeyError, TypeError) as err:
        raise InputError(f"{path}: missing or wrong-typed field {err}.") from None
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
