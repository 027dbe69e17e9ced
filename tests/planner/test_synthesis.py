"""Models given by size: the synthesized architecture has the size (within 2 %, counted exactly) and is a valid spec."""

from __future__ import annotations

import pytest

from planner import InferenceRequest, ModelSpec, SpecError, count_params, estimate_inference, load_catalog
from planner.model.synthesis import SizeSpec, parse_size, synthesize_spec
from planner.refs import resolve_model
from planner.training.estimate import TrainingRequest, estimate_training

TOLERANCE = 0.02  # the contract: within 2 % of the requested size
CATALOG = [m.spec for m in load_catalog().models]
DENSE_SIZES = ["0.5B", "1B", "1.5B", "3B", "7B", "8B", "13B", "32B", "70B", "180B", "405B", "1T"]
MOE_SIZES = [("0.5B", 8, 2), ("3B", 64, 8), ("47B", 8, 2), ("120B", 128, 4), ("235B", 128, 8), ("1T", 384, 8)]


def _check(size: SizeSpec) -> ModelSpec:
    spec = synthesize_spec(size, CATALOG)
    assert ModelSpec.model_validate(spec.model_dump()) == spec  # a valid spec, round-tripped
    error = count_params(spec).total / size.target_params - 1
    assert abs(error) <= TOLERANCE, f"{size.size}: {error:+.2%}"
    return spec


@pytest.mark.parametrize("size", DENSE_SIZES)
@pytest.mark.parametrize("attention", ["GQA", "MHA", "MQA", "MLA"])
def test_dense_sizes_within_two_percent(size: str, attention: str) -> None:
    spec = _check(SizeSpec(size=size, attention=attention))
    assert spec.attention_kind == attention
    assert spec.moe is None


@pytest.mark.parametrize(("size", "experts", "top_k"), MOE_SIZES)
@pytest.mark.parametrize("attention", ["GQA", "MLA"])
def test_moe_sizes_within_two_percent(size: str, experts: int, top_k: int, attention: str) -> None:
    spec = _check(SizeSpec(size=size, attention=attention, num_experts=experts, experts_per_token=top_k))
    assert spec.moe is not None
    assert (spec.moe.num_experts, spec.moe.experts_per_token) == (experts, top_k)


@pytest.mark.parametrize("family", sorted({s.family for s in CATALOG}))
@pytest.mark.parametrize("size", ["1B", "30B", "600B"])
def test_every_catalog_family_synthesizes(family: str, size: str) -> None:
    attention = "MLA" if family.startswith("deepseek") else "GQA"
    spec = _check(SizeSpec(size=size, family=family, attention=attention))
    assert spec.family == family
    moe_family = all(s.moe for s in CATALOG if s.family == family)
    assert (spec.moe is not None) == moe_family  # a named MoE family keeps its experts


def test_llama_sizes_look_like_llama() -> None:
    # Llama-3-8B: 32 layers, h 4096, 32 heads, 8 KV heads, f 14336 (planner/catalog/models/llama-3-8b.json)
    spec = _check(SizeSpec(size="8B"))
    assert (spec.num_layers, spec.hidden_size, spec.num_heads, spec.kv_heads) == (32, 4096, 32, 8)
    assert abs(spec.ffn_dim / 14336 - 1) < 0.01
    assert not spec.tie_embeddings and spec.vocab_size == 128256


def test_small_models_tie_their_embeddings() -> None:
    assert _check(SizeSpec(size="1B")).tie_embeddings  # as Llama-3.2-1B and Qwen2.5 ≤ 3B do
    assert not _check(SizeSpec(size="8B")).tie_embeddings


def test_options_are_kept() -> None:
    spec = _check(SizeSpec(size="13B", vocab_size=32000, max_context=131072))
    assert (spec.vocab_size, spec.max_context) == (32000, 131072)


@pytest.mark.parametrize(
    ("text", "params"), [("70B", 70 * 10**9), ("1.5T", 15 * 10**11), ("500M", 5 * 10**8), ("7e9", 7 * 10**9)]
)
def test_size_parsing(text: str, params: int) -> None:
    assert parse_size(text) == params
    assert SizeSpec(size=text).target_params == params


@pytest.mark.parametrize("size", ["70", "seventy", "70Q", "1k", "100T"])
def test_bad_sizes_are_rejected(size: str) -> None:
    with pytest.raises(ValueError, match="size"):
        SizeSpec(size=size)


def test_unknown_family_names_the_field() -> None:
    with pytest.raises(SpecError) as info:
        resolve_model(SizeSpec(size="7B", family="gpt9"), load_catalog())
    assert info.value.problems[0].loc == ("model", "family")


def test_mla_needs_an_mla_family() -> None:
    with pytest.raises(SpecError) as info:
        resolve_model(SizeSpec(size="7B", family="llama", attention="MLA"), load_catalog())
    assert info.value.problems[0].loc == ("model", "attention")


def test_a_size_answers_inexactly_with_the_assumed_architecture() -> None:
    body = {"model": {"size": "70B", "attention": "GQA", "max_context": 131072}, "serving": {"tensor_parallel": 4}}
    estimate = estimate_inference(InferenceRequest.model_validate(body), load_catalog())
    assert estimate.model.exact is False
    assert estimate.model.assumed_from == SizeSpec(size="70B", attention="GQA", max_context=131072)
    assert estimate.model.spec == synthesize_spec(SizeSpec(size="70B", max_context=131072), CATALOG)
    assert "architecture assumed from size 70B" in estimate.model.warnings[0]
    training = estimate_training(TrainingRequest.model_validate({"model": {"size": "8B"}}), load_catalog())
    assert training.model.exact is False


def test_a_hugging_face_id_is_not_read_by_the_planner() -> None:
    with pytest.raises(SpecError, match="Hugging Face id"):
        resolve_model("Qwen/Qwen2.5-7B", load_catalog())
