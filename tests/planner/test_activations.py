"""Saved-activation bytes: the planner's ledger against what autograd really saves in transformers + peft.

Oracle: `torch.autograd.graph.saved_tensors_hooks` on a tiny real Llama (CPU), counting every saved tensor's
storage once and leaving out parameters. The planner must match to the byte.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from planner.activations import LayerGrads, TrainShapes, model_saved_bytes  # noqa: E402
from planner.model_spec import ModelSpec  # noqa: E402

B, S, H, F, HEADS, V, R = 2, 16, 64, 160, 4, 300, 4
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def measured_saved_bytes(attn: str, dtype: Any, kv_heads: int, lora: tuple[str, ...], checkpointing: bool) -> int:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=H,
        intermediate_size=F,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        num_key_value_heads=kv_heads,
        vocab_size=V,
        max_position_embeddings=64,
        attn_implementation=attn,
        use_cache=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.set_default_dtype(dtype)
        try:
            model = transformers.LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(torch.float32)
        if lora:
            model = peft.get_peft_model(model, peft.LoraConfig(r=R, target_modules=list(lora), lora_dropout=0.0))
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if lora:
                model.enable_input_require_grads()
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: Any) -> Any:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    ids = torch.randint(0, V, (B, S))
    with warnings.catch_warnings(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        warnings.simplefilter("ignore")
        model(input_ids=ids, labels=ids)
    return sum(saved.values())


def planned_saved_bytes(attn: str, dtype: Any, kv_heads: int, lora: tuple[str, ...], checkpointing: bool) -> int:
    spec = ModelSpec(num_layers=2, hidden_size=H, num_heads=HEADS, num_kv_heads=kv_heads, ffn_dim=F, vocab_size=V)
    shapes = TrainShapes(B, S, 2 if dtype == torch.bfloat16 else 4, sdpa=attn == "sdpa")
    grads = LayerGrads(lora=frozenset(lora), lora_rank=R) if lora else LayerGrads(weights=True)
    saved = model_saved_bytes(
        spec,
        shapes,
        grads,
        embeddings_train=not lora,
        head_trains=not lora,
        inputs_need_grad=checkpointing,
        checkpointing="full" if checkpointing else "none",
    )
    return saved.blocks.total + saved.outer.total


CASES = [
    *itertools.product(["sdpa", "eager"], ["bfloat16", "float32"], [4, 2, 1], [()], [False, True]),
    *itertools.product(["sdpa", "eager"], ["bfloat16", "float32"], [2],
                       [("q_proj", "v_proj"), ALL_LINEAR, ("o_proj",), ("down_proj",)], [False, True]),
]  # fmt: skip


@pytest.mark.parametrize(("attn", "dtype", "kv_heads", "lora", "checkpointing"), CASES)
def test_saved_activation_bytes_match_autograd(
    attn: str, dtype: str, kv_heads: int, lora: tuple[str, ...], checkpointing: bool
) -> None:
    args = (attn, getattr(torch, dtype), kv_heads, lora, checkpointing)
    assert planned_saved_bytes(*args) == measured_saved_bytes(*args)


def test_frozen_linears_save_no_inputs() -> None:
    # LoRA on q, v keeps fp32 copies of the adapted inputs but none of the frozen projections' inputs:
    # its activations are smaller than full fine-tuning's (DESIGN.md §4).
    args = ("sdpa", torch.bfloat16, 2)
    assert measured_saved_bytes(*args, ("q_proj", "v_proj"), False) < measured_saved_bytes(*args, (), False)
