"""Each memory constraint family in isolation: fix every variable but one and check how a term moves.

Units: bytes unless a test says GB (1e9) or GiB (2**30).
"""

from __future__ import annotations

import pytest

from planner.catalog import resolve_gpu, resolve_model
from planner.enums import Checkpointing, Framework, KvPrecision, Optimizer, TrainingMode, TrainPrecision, WeightPrecision, ZeroStage
from planner.layout import InferenceLayout, TrainingLayout
from planner.memory import (
    inference_memory,
    inference_weight_bytes_per_card,
    kv_bytes_per_token_per_card,
    kv_tokens_that_fit,
    max_concurrent_sequences,
    paged_tokens,
    stage_layer_ranges,
    stage_params,
    state_bytes_per_param,
    training_memory,
)
from planner.scenario import Assumptions, InferenceWorkload, LoraSettings, TrainingWorkload

GB = 1e9
GIB = 2**30
A = Assumptions.with_overrides()


def train(model_name: str, gpu: str = "H100-SXM", *, seq: int = 4096, mode: TrainingMode = TrainingMode.PRETRAIN,
          lora: LoraSettings | None = None, **layout):
    """training_memory with defaults: bf16, tp=pp=dp=1, ZeRO-0, full recompute, micro-batch 1."""
    model = resolve_model(model_name)
    card = resolve_gpu(gpu)
    fields = dict(gpu=card.name, precision=TrainPrecision.BF16, tp=1, pp=1, dp=1, zero=ZeroStage.NONE,
                  checkpointing=Checkpointing.FULL, micro_batch=1, grad_accum=8, sequence_parallel=True, flash_attention=True)
    fields.update(layout)
    workload = TrainingWorkload(kind="training", mode=mode, model=model_name, tokens=1e9, seq_len=seq, global_batch_seqs=64, lora=lora)
    return training_memory(model, workload, TrainingLayout(**fields), card, A)


def serve(model_name: str, prompt: int = 1000, output: int = 200, gpu: str = "H100-SXM", **layout):
    model = resolve_model(model_name)
    card = resolve_gpu(gpu)
    fields = dict(gpu=card.name, weight_precision=WeightPrecision.BF16, kv_precision=KvPrecision.BF16, tp=1, batch=1)
    fields.update(layout)
    workload = InferenceWorkload(kind="inference", model=model_name, prompt_tokens=prompt, output_tokens=output, concurrent_sequences=1)
    return model, workload, InferenceLayout(**fields), card


# ---- MoE: routed experts are split by EP x expert-TP, never by TP alone ----------------------


def test_routed_experts_split_by_ep_not_by_tp() -> None:
    v3 = resolve_model("deepseek-v3")
    layers = range(v3.num_layers)
    ep8 = stage_params(v3, layers, True, True, tp=1, ep=8, expert_tp=1)
    tp8 = stage_params(v3, layers, True, True, tp=8, ep=1, expert_tp=1)
    single = stage_params(v3, layers, True, True, tp=1, ep=1, expert_tp=1)
    assert single.experts == v3.routed_expert_params_total
    assert tp8.experts == single.experts  # TP alone leaves every routed expert on every TP rank
    assert tp8.experts == pytest.approx(8 * ep8.experts)  # EP=8 holds 1/8 of them
    # TP splits attention, dense MLPs and embeddings, but MLA's down-projections stay whole on every rank (vLLM ReplicatedLinear)
    replicated = v3.mla_replicated_params * v3.num_layers
    assert replicated == pytest.approx(0.92e9, rel=0.01)
    assert tp8.dense == pytest.approx((single.dense - replicated) / 8 + replicated)
    assert ep8.dense == single.dense
    # expert-TP splits within an expert: EP x expert-TP is what counts
    assert stage_params(v3, layers, True, True, tp=1, ep=4, expert_tp=2).experts == pytest.approx(ep8.experts)
    assert single.dense + single.experts == pytest.approx(v3.total_params)


# ---- inference weights split by PP ---------------------------------------------------------


def test_inference_weights_divided_by_pp() -> None:
    """llama-3.1-70b bf16: the most loaded of 4 stages holds between 1/4 and 1/3 of the whole model."""
    model = resolve_model("llama-3.1-70b")
    whole = sum(inference_weight_bytes_per_card(model, WeightPrecision.BF16, 1, 1, A))
    stage = sum(inference_weight_bytes_per_card(model, WeightPrecision.BF16, 1, 4, A))
    assert whole / 4 < stage < whole / 3
    assert whole / GB == pytest.approx(2 * 70.55, rel=0.01)


# ---- uneven pipeline stages --------------------------------------------------------------------


def test_stage_layer_ranges_uneven() -> None:
    ranges = stage_layer_ranges(95, 4)
    sizes = [len(r) for r in ranges]
    assert sum(sizes) == 95 and max(sizes) == 24 and min(sizes) == 23
    assert [r.start for r in ranges] == [0, 24, 48, 72]  # contiguous
    assert ranges[-1].stop == 95


def test_most_loaded_pipeline_stage_holds_embedding_or_head() -> None:
    """deepseek-llm-67b (95 layers) over pp=4: the reported stage is the first or the last, and heavier than 1/4 of the body."""
    model = resolve_model("deepseek-llm-67b")
    bd = train("deepseek-llm-67b", tp=8, pp=4, dp=1)
    assert bd.stage in (0, 3)
    body = model.total_params - model.embedding_params - model.lm_head_params
    balanced_quarter_bytes = 2.0 * body / 4 / 8  # bf16 weights, split by tp=8
    assert bd.term("weights") > balanced_quarter_bytes
    # stage 0 has 24 layers + embedding, and the most micro-batches in flight (1F1B): it is the heaviest
    assert bd.stage == 0
    assert bd.term("weights") == pytest.approx(2.0 * (sum(model.layer_params(i) for i in range(24)) + model.embedding_params) / 8)


# ---- terms add up --------------------------------------------------------------------------


@pytest.mark.parametrize("layout", [dict(), dict(tp=8, pp=4, dp=2, zero=ZeroStage.GRADIENTS), dict(dp=8, zero=ZeroStage.PARAMETERS)],
                         ids=["single", "tp8-pp4-dp2-z2", "dp8-z3"])
def test_training_memory_is_the_sum_of_terms(layout: dict) -> None:
    bd = train("llama-3.1-70b", **layout)
    assert bd.total_bytes == pytest.approx(sum(t.bytes for t in bd.terms), rel=1e-12)
    assert bd.total_bytes > max(t.bytes for t in bd.terms)
    assert bd.headroom_bytes == pytest.approx(bd.capacity_bytes - bd.total_bytes)
    assert len({t.name for t in bd.terms}) == len(bd.terms)  # no term counted twice


# ---- bytes per parameter of the model states ------------------------------------------------


def _sum(states) -> float:
    return states.weights + states.gradients + states.optimizer


def test_mixed_precision_adam_is_16_bytes_per_param() -> None:
    """ZeRO Sec. 3.1: 2 (bf16 weights) + 2 (bf16 grads) + 12 (fp32 master + two moments) = 16, not 18."""
    bf16 = state_bytes_per_param(TrainPrecision.BF16, Optimizer.ADAMW)
    assert (bf16.weights, bf16.gradients, bf16.optimizer) == (2, 2, 12)
    assert _sum(bf16) == 16
    assert _sum(state_bytes_per_param(TrainPrecision.FP16, Optimizer.ADAMW)) == 16


def test_fp32_adam_is_16_bytes_per_param() -> None:
    fp32 = state_bytes_per_param(TrainPrecision.FP32, Optimizer.ADAMW)
    assert (fp32.weights, fp32.gradients, fp32.optimizer) == (4, 4, 8)


def test_8bit_adam_is_10_bytes_per_param() -> None:
    eight = state_bytes_per_param(TrainPrecision.BF16, Optimizer.ADAMW_8BIT)
    assert (eight.weights + eight.gradients, eight.optimizer) == (4, 6)  # 2+2, fp32 master 4 + two 1-byte moments
    assert _sum(eight) == 10


def test_fp8_training_does_not_halve_persistent_memory() -> None:
    assert _sum(state_bytes_per_param(TrainPrecision.FP8, Optimizer.ADAMW)) >= 16


# ---- KV cache split by TP over KV heads -------------------------------------------------------


def test_kv_split_by_tp_and_replicated_beyond_kv_heads() -> None:
    """llama-3.1-70b has 8 KV heads: tp=8 stores 1/8 per card; tp=16 cannot split further (one replicated head each)."""
    model = resolve_model("llama-3.1-70b")
    tp1, note1 = kv_bytes_per_token_per_card(model, KvPrecision.BF16, 1, 1)
    tp8, note8 = kv_bytes_per_token_per_card(model, KvPrecision.BF16, 8, 1)
    tp16, note16 = kv_bytes_per_token_per_card(model, KvPrecision.BF16, 16, 1)
    assert tp1 == 327680 and tp8 == tp1 / 8
    assert tp16 == tp8
    assert note1 == note8 == "" and note16 and "replicated" in note16


def test_mla_latent_cache_is_not_divided_by_tp() -> None:
    v3 = resolve_model("deepseek-v3")
    tp1, _ = kv_bytes_per_token_per_card(v3, KvPrecision.BF16, 1, 1)
    tp8, note = kv_bytes_per_token_per_card(v3, KvPrecision.BF16, 8, 1)
    assert tp1 == tp8 == 70272 and "MLA" in note
    # PP does split it by layers: ceil(61/4) = 16 layers on the most loaded stage
    assert kv_bytes_per_token_per_card(v3, KvPrecision.BF16, 8, 4)[0] == (512 + 64) * 16 * 2


# ---- paged KV blocks --------------------------------------------------------------------------


def test_paged_tokens_round_up_to_whole_blocks() -> None:
    assert paged_tokens(17, 16) == 32
    assert paged_tokens(16, 16) == 16
    assert paged_tokens(1, 16) == 16


def test_max_concurrent_sequences_non_increasing_in_prompt_length() -> None:
    prompts = [100, 500, 1000, 4000, 16000, 64000]
    counts = []
    for prompt in prompts:
        model, workload, layout, card = serve("llama-3.1-8b", prompt=prompt)
        counts.append(max_concurrent_sequences(model, workload, layout, card, A))
    assert all(a >= b for a, b in zip(counts, counts[1:])), counts
    assert counts[0] > counts[-1] >= 1
    # the answer fits and one more does not
    model, workload, layout, card = serve("llama-3.1-8b", prompt=4000)
    n = max_concurrent_sequences(model, workload, layout, card, A)
    assert inference_memory(model, workload, layout.model_copy(update={"batch": n}), card, A).fits
    assert not inference_memory(model, workload, layout.model_copy(update={"batch": n + 1}), card, A).fits


def test_kv_tokens_that_fit_whole_blocks() -> None:
    model, workload, layout, card = serve("llama-3.1-8b")
    tokens = kv_tokens_that_fit(model, layout, card, A, workload)
    assert tokens > 0 and tokens % A.kv_block_tokens == 0
    # ~ (0.9 x 79.65 GiB - 16 GB weights - workspace - 1 GiB) / 128 KiB per token: several hundred thousand tokens
    assert 300_000 < tokens < 500_000


# ---- activation recomputation ----------------------------------------------------------------


def test_recomputation_reduces_activation_memory() -> None:
    """tp=4 with SP, no FlashAttention (so selective recomputation has an s^2 term to drop), all else fixed."""
    kwargs = dict(tp=4, dp=2, zero=ZeroStage.PARAMETERS, micro_batch=2, flash_attention=False)
    none = train("llama-3.1-8b", checkpointing=Checkpointing.NONE, **kwargs)
    selective = train("llama-3.1-8b", checkpointing=Checkpointing.SELECTIVE, **kwargs)
    full = train("llama-3.1-8b", checkpointing=Checkpointing.FULL, **kwargs)
    assert full.term("activations") < selective.term("activations") < none.term("activations")
    assert full.total_bytes < selective.total_bytes < none.total_bytes
    # model states do not move
    for name in ("weights", "gradients", "optimizer_states"):
        assert none.term(name) == selective.term(name) == full.term(name)


# ---- ZeRO stages --------------------------------------------------------------------------


def test_zero_stage_ordering_at_dp8() -> None:
    """DeepSpeed (the framework offering all four stages, 2-byte gradients): each stage holds less; ZeRO-3 divides all
    16 B/param by N_d = 8."""
    ds = Framework.DEEPSPEED
    totals = [train("llama-3.1-8b", dp=8, zero=stage, framework=ds).total_bytes for stage in ZeroStage]
    assert all(a > b for a, b in zip(totals, totals[1:])), totals
    states = [sum(train("llama-3.1-8b", dp=8, zero=stage, framework=ds).term(n) for n in ("weights", "gradients", "optimizer_states"))
              for stage in ZeroStage]
    assert states[0] / states[3] == pytest.approx(8.0)


def test_framework_conventions_in_memory() -> None:
    """Megatron keeps fp32 main gradients (4 B/param: Megatron-LM accumulate_allreduce_grads_in_fp32) where DeepSpeed keeps
    2 B; activations follow the per-term derivation for every framework."""
    model = resolve_model("llama-3.1-8b")
    mega = train("llama-3.1-8b", dp=8, zero=ZeroStage.OPTIMIZER, framework=Framework.MEGATRON, checkpointing=Checkpointing.NONE)
    ds = train("llama-3.1-8b", dp=8, zero=ZeroStage.OPTIMIZER, framework=Framework.DEEPSPEED, checkpointing=Checkpointing.NONE)
    assert mega.term("gradients") == pytest.approx(4.0 * model.total_params, rel=1e-9)
    assert ds.term("gradients") == pytest.approx(2.0 * model.total_params, rel=1e-9)
    assert ds.term("activations") == pytest.approx(mega.term("activations"), rel=1e-9)


def test_context_parallel_divides_activations() -> None:
    """Ring attention (Liu et al. 2023): each of cp ranks holds seq_len/cp tokens, so activations and logits divide by cp;
    the ZeRO-1 optimizer shard divides over DP x CP."""
    one = train("llama-3.1-8b", seq=32768, dp=2, zero=ZeroStage.OPTIMIZER, checkpointing=Checkpointing.NONE)
    four = train("llama-3.1-8b", seq=32768, dp=2, cp=4, zero=ZeroStage.OPTIMIZER, checkpointing=Checkpointing.NONE)
    assert four.term("activations") == pytest.approx(one.term("activations") / 4, rel=1e-9)
    assert four.term("logits") == pytest.approx(one.term("logits") / 4, rel=1e-9)
    assert four.term("optimizer_states") == pytest.approx(one.term("optimizer_states") / 4, rel=1e-9)


def test_hybrid_sharding_divides_by_the_group() -> None:
    """FSDP HYBRID_SHARD: ZeRO-3 within a group of 8 ranks, replicated across 4 groups: states divide by 8, not 32."""
    full = train("llama-3.1-70b", dp=32, zero=ZeroStage.PARAMETERS)
    hybrid = train("llama-3.1-70b", dp=32, zero=ZeroStage.PARAMETERS, zero_group=8)
    for term in ("weights", "gradients", "optimizer_states"):
        assert hybrid.term(term) == pytest.approx(full.term(term) * 4, rel=1e-9), term


# ---- LoRA / QLoRA -------------------------------------------------------------------------


def _lora(mode: TrainingMode):
    return train("deepseek-llm-7b", "RTX-4090", seq=2048, mode=mode, lora=LoraSettings(rank=16), micro_batch=1,
                 checkpointing=Checkpointing.FULL)


def test_lora_on_a_24gb_card() -> None:
    """deepseek-llm-7b LoRA r=16 on an RTX 4090: frozen 16-bit base = 6.91e9 x 2 B = 13.8 GB (1e9), adapters small."""
    bd = _lora(TrainingMode.LORA)
    assert bd.term("weights") / GB == pytest.approx(13.82, rel=0.02)
    adapter_bytes = sum(bd.term(f"adapter_{name}") for name in ("weights", "gradients", "optimizer_states"))
    assert 0 < adapter_bytes < 1 * GB
    assert bd.term("gradients") == 0 and bd.term("optimizer_states") == 0
    # r x (d_in + d_out) on q,k,v,o,gate,up,down x 30 layers x (2 + 2 + 12) bytes
    h, inner, r = 4096, 11008, 16
    adapters = 30 * r * (4 * 2 * h + 3 * (h + inner))
    assert adapter_bytes == pytest.approx(adapters * 16.0)
    assert bd.term("adapter_optimizer_states") == pytest.approx(adapters * 12.0)


def test_lora_zero1_shards_only_the_adapter_optimizer_states() -> None:
    """ZeRO-1 over 4 ranks: adapter weights and gradients stay whole, the 12 optimizer bytes are divided by 4 (ZeRO Sec. 5.1)."""
    one = train("deepseek-llm-7b", "RTX-4090", seq=2048, mode=TrainingMode.LORA, lora=LoraSettings(rank=16), micro_batch=1,
                checkpointing=Checkpointing.FULL)
    four = train("deepseek-llm-7b", "RTX-4090", seq=2048, mode=TrainingMode.LORA, lora=LoraSettings(rank=16), micro_batch=1,
                 checkpointing=Checkpointing.FULL, dp=4, zero=ZeroStage.OPTIMIZER)
    assert four.term("adapter_weights") == pytest.approx(one.term("adapter_weights"))
    assert four.term("adapter_gradients") == pytest.approx(one.term("adapter_gradients"))
    assert four.term("adapter_optimizer_states") == pytest.approx(one.term("adapter_optimizer_states") / 4)


def test_lora_70b_under_zero3_on_8_gpus_shards_the_frozen_base_by_8() -> None:
    """ZeRO-3 / FSDP FULL_SHARD shards every parameter, frozen ones included (Rajbhandari et al. 2020, Sec. 5.3): a
    70B LoRA on 8 GPUs holds 1/8 of the 16-bit base per card (~17.6 GB, not ~141 GB) plus two gathered layers."""
    kw = dict(seq=4096, mode=TrainingMode.LORA, lora=LoraSettings(rank=16), micro_batch=1, checkpointing=Checkpointing.FULL)
    one = train("llama-3.1-70b", "H100-SXM", **kw)
    eight = train("llama-3.1-70b", "H100-SXM", dp=8, zero=ZeroStage.PARAMETERS, **kw)
    model = resolve_model("llama-3.1-70b")
    assert one.term("weights") == pytest.approx(2.0 * model.total_params, rel=1e-9)
    assert eight.term("weights") == pytest.approx(one.term("weights") / 8, rel=1e-9)
    gathered = eight.term("zero3_gathered_layers")
    assert 0 < gathered < one.term("weights") / model.num_layers * 2.5
    zero1 = train("llama-3.1-70b", "H100-SXM", dp=8, zero=ZeroStage.OPTIMIZER, **kw)
    assert zero1.term("weights") == pytest.approx(one.term("weights"))  # ZeRO-1/2 replicate the frozen base


def test_qlora_weights_nf4_plus_16bit_embeddings() -> None:
    """QLoRA base in GB (1e9): NF4 (~0.516 B/param) for the linear layers + 16-bit embedding and LM head, 3.5-5.5 GB."""
    bd = _lora(TrainingMode.QLORA)
    assert 3.5 * GB < bd.term("weights") < 5.5 * GB
    assert bd.term("weights") < _lora(TrainingMode.LORA).term("weights") / 2.5


# ---- the reserve is always stated ----------------------------------------------------------


@pytest.mark.parametrize("case", ["train-single", "train-pp4", "lora", "serve-bf16", "serve-int4-tp4"])
def test_reserve_is_a_stated_term(case: str) -> None:
    if case == "train-single":
        bd = train("llama-3.1-8b")
    elif case == "train-pp4":
        bd = train("deepseek-llm-67b", tp=8, pp=4)
    elif case == "lora":
        bd = _lora(TrainingMode.LORA)
    else:
        model, workload, layout, card = serve("llama-3.1-70b", weight_precision=WeightPrecision.INT4 if "int4" in case else WeightPrecision.BF16,
                                              tp=4 if "tp4" in case else 1)
        bd = inference_memory(model, workload, layout, card, A)
    reserve = [t for t in bd.terms if t.name == "reserve"]
    assert len(reserve) == 1 and reserve[0].bytes > 0 and reserve[0].source


def test_most_loaded_stage_is_found_when_dense_layers_spill_past_stage_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """DeepSeek-V3 at pp=32 (2 layers per stage, 3 leading dense layers): stage 2 (two MoE layers) outweighs stages 0 and 1.

    The stage shortcut must give exactly what checking every stage gives."""
    import planner.memory as memory

    for pp, tp, ep in ((32, 1, 8), (32, 1, 1), (16, 2, 4), (61, 1, 8)):
        fast = train("deepseek-v3", "H200", pp=pp, tp=tp, dp=ep, ep=ep, zero=ZeroStage.OPTIMIZER,
                     checkpointing=Checkpointing.SELECTIVE)
        with monkeypatch.context() as patch:
            patch.setattr(memory, "candidate_stages", lambda model, pp: list(range(pp)))
            every = train("deepseek-v3", "H200", pp=pp, tp=tp, dp=ep, ep=ep, zero=ZeroStage.OPTIMIZER,
                          checkpointing=Checkpointing.SELECTIVE)
        assert fast.total_bytes == pytest.approx(every.total_bytes, rel=1e-12)
        assert fast.stage == every.stage
    assert train("deepseek-v3", "H200", pp=32, tp=1, dp=8, ep=8, zero=ZeroStage.OPTIMIZER).stage == 2


def test_offload_moves_states_off_the_card() -> None:
    """ZeRO-Offload puts the optimizer states in CPU memory; ZeRO-Infinity also the parameter shards (ZeRO-3 only)."""
    base = train("llama-3.1-8b", dp=8, zero=ZeroStage.PARAMETERS)
    opt = train("llama-3.1-8b", dp=8, zero=ZeroStage.PARAMETERS, offload_optimizer=True)
    both = train("llama-3.1-8b", dp=8, zero=ZeroStage.PARAMETERS, offload_optimizer=True, offload_params=True)
    assert base.term("optimizer_states") > 0 and opt.term("optimizer_states") == 0
    assert opt.term("weights") > 0 and both.term("weights") == 0
    assert both.term("zero3_gathered_layers") == base.term("zero3_gathered_layers") > 0
    with pytest.raises(ValueError):
        train("llama-3.1-8b", dp=8, zero=ZeroStage.GRADIENTS, offload_params=True)


def test_batch_splits_exact_and_nearest() -> None:
    """micro-batch x DP x accumulation = global batch exactly, or within the tolerance when the scenario allows a range."""
    from planner.space import batch_splits

    exact = batch_splits(1024, 0.0, 2, 4096)
    assert all(2 * dp * accum == 1024 for dp, accum in exact)
    assert [dp for dp, _ in exact] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    near = dict(batch_splits(1000, 0.05, 1, 64))
    assert 24 in near and abs(24 * near[24] - 1000) <= 50  # 24 x 42 = 1008, not a divisor of 1000
    assert all(abs(dp * accum - 1000) <= 50 for dp, accum in near.items())
    assert 3 not in dict(batch_splits(1000, 0.0, 1, 64))
