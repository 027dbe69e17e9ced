"""A model given by its size ("70B, GQA"): an architecture synthesized from the catalog families' conventions.

Derivation (derived here). A decoder's parameter count is, for fixed width h and depth L,
affine in the FFN width f:  N(f) = V·h·(2 − tie) + h + L·(attention(h) + norms(h)) + L·3·h·f  (count_params).
So the width and depth follow the family's shape conventions, and f (f_e for MoE layers) is solved for N:
  1. conventions from the family's catalog entries (medians): aspect ratio a = h / L (Llama-3/3.1: 102-130),
     FFN ratio r = f / h (Llama: 3.25-3.5), head width d_h (128), KV heads n_kv (8), vocabulary V (mode), biases
     and q/k norms (mode); MoE: E, k, f_e / h, shared width / h, leading dense layers; MLA: the latent dims and
     n_h / h.
  2. h* = the smallest width (a multiple of 2·d_h) whose conventional model (L = h / a, f = r·h) reaches N.
  3. around h* (±2 width steps) and L* = h / a (±3 layers), f is solved from the affine relation and rounded to
     the coarsest of 128, 64, 32, 16 whose step moves N by at most 0.5 %; the count is then exact (count_params).
  4. among the candidates within 1 % of N, the one closest to the conventions (|log(f/h ÷ r)| + |log(h/L ÷ a)|)
     wins; if none is within 1 %, the closest count.
Embeddings are tied when untied ones (2·V·h) would exceed a fifth of N (Llama-3.2-1B/3B and Qwen2.5 ≤ 3B tie;
Llama-3-8B, 2·V·h = 13 % of N, does not).
Source: the conventions are those of the catalog entries (planner/catalog/models), read at call time.
Assumes: the family's block layout (gated MLP, pre-norms) at every size; no sliding windows.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import median
from typing import Annotated, TypeVar

from pydantic import Field, field_validator

from planner._base import FrozenSpec
from planner.errors import FieldProblem, SpecError
from planner.model.params import count_params
from planner.model.spec import AttentionKind, MLASpec, ModelSpec, MoESpec

__all__ = ["SizeSpec", "parse_size", "synthesize_spec"]

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?(?:[eE]\d+)?)\s*([KMBGT]?)\s*$", re.IGNORECASE)
MIN_PARAMS = 10**7  # below 10 M parameters no catalog convention means anything
MAX_PARAMS = 10**13
TIE_SHARE = 0.2  # tie embeddings when untied ones would be more than this share of N (Llama-3.2, Qwen2.5 small)
CLOSE_ENOUGH = 0.01  # candidates within 1 % of N compete on the conventions
FFN_STEP_SHARE = 0.005  # the FFN rounding step may move N by at most 0.5 %
MIN_LAYERS = 4
DEFAULT_FAMILY = {"dense": "llama", "moe_coarse": "mixtral", "moe_fine": "qwen3_moe", "mla": "deepseek_v3"}
COARSE_MOE_EXPERTS = 16  # up to 16 experts: Mixtral-style full-width experts; more: fine-grained (Qwen3-MoE)


def parse_size(size: str | int | float) -> int:
    """'70B', '1.5T', '500M', 7e9 or 7000000000 → parameters."""
    if isinstance(size, int | float):
        return int(size)
    match = _SIZE.match(size)
    if match is None:
        raise ValueError(f"size {size!r} is not a parameter count such as '70B', '1.5T', '500M' or 7e9")
    return round(float(match.group(1)) * _SUFFIX[match.group(2).upper()])


class SizeSpec(FrozenSpec):
    """A model given by its size and a few choices; the rest follows the catalog family's conventions."""

    size: str | Annotated[int, Field(ge=1)] = Field(
        description="Total parameters: '70B', '1.5T', '500M', or a number (7e9)."
    )
    attention: AttentionKind = Field(default=AttentionKind.GQA, description="MHA, MQA, GQA or MLA.")
    family: str | None = Field(
        default=None,
        max_length=64,
        description="Catalog family whose conventions to follow (llama, qwen2, qwen3, mistral, mixtral, qwen3_moe, "
        "deepseek_v3, ...); null = llama (dense), mixtral (≤ 16 experts), qwen3_moe (more), deepseek_v3 (MLA).",
    )
    max_context: Annotated[int, Field(ge=1, le=1 << 30)] | None = Field(
        default=None, description="Longest context; null = the family's longest."
    )
    vocab_size: Annotated[int, Field(ge=1, le=16_777_216)] | None = Field(
        default=None, description="V; null = the family's."
    )
    num_experts: Annotated[int, Field(ge=1, le=16_384)] | None = Field(
        default=None, description="Routed experts E: an MoE model (null = dense unless the family is MoE)."
    )
    experts_per_token: Annotated[int, Field(ge=1, le=16_384)] | None = Field(
        default=None, description="Experts per token k; null = the family's."
    )

    @field_validator("size")
    @classmethod
    def _readable_size(cls, size: str | int) -> str | int:
        params = parse_size(size)
        if not MIN_PARAMS <= params <= MAX_PARAMS:
            raise ValueError(f"size {size!r} = {params:,} parameters; give between 10M and 10T")
        return size

    @property
    def target_params(self) -> int:
        return parse_size(self.size)


@dataclass(frozen=True, slots=True)
class _Conventions:
    """A family's shape conventions, read off its catalog entries."""

    family: str
    aspect: float  # h / L
    ffn_ratio: float  # f / h (dense layers)
    head_dim: int
    q_width_ratio: float  # n_h·d_h / h (Llama 1; Qwen3 1.6-2)
    kv_heads: int
    vocab: int
    max_context: int
    qkv_bias: bool
    o_bias: bool
    qk_norm: bool
    qk_norm_type: str
    mla: MLASpec | None
    mla_heads_per_width: float
    experts: int | None
    experts_per_token: int | None
    expert_ratio: float  # f_e / h
    shared_ratio: float  # shared expert width / h
    first_dense: int


T = TypeVar("T")


def _mode(values: Sequence[T]) -> T:
    return Counter(values).most_common(1)[0][0]


def _conventions(family: str, refs: Sequence[ModelSpec], moe_refs: Sequence[ModelSpec]) -> _Conventions:
    """Medians (shapes) and modes (flags, vocabulary) over the family's catalog specs."""
    moe = [s.moe for s in moe_refs if s.moe is not None]
    mla_refs = [s for s in refs if s.mla is not None]
    gqa = [s.kv_heads for s in refs if s.attention_kind is AttentionKind.GQA]
    return _Conventions(
        family=family,
        aspect=median(s.hidden_size / s.num_layers for s in refs),
        ffn_ratio=median(s.ffn_dim / s.hidden_size for s in refs),
        head_dim=int(median(s.resolved_head_dim for s in refs if s.mla is None)) if len(mla_refs) < len(refs) else 128,
        q_width_ratio=median(s.num_heads * s.resolved_head_dim / s.hidden_size for s in refs if s.mla is None)
        if len(mla_refs) < len(refs)
        else 1.0,
        kv_heads=int(median(gqa)) if gqa else 8,
        vocab=_mode([s.vocab_size for s in refs]),
        max_context=max(s.max_context for s in refs),
        qkv_bias=_mode([s.qkv_bias for s in refs]),
        o_bias=_mode([s.o_bias for s in refs]),
        qk_norm=_mode([s.qk_norm for s in refs]),
        qk_norm_type=_mode([s.qk_norm_type for s in refs]),
        mla=_mode([s.mla for s in mla_refs]) if mla_refs else None,
        mla_heads_per_width=median(s.num_heads / s.hidden_size for s in mla_refs) if mla_refs else 0.0,
        experts=_mode([m.num_experts for m in moe]) if moe else None,
        experts_per_token=_mode([m.experts_per_token for m in moe]) if moe else None,
        expert_ratio=median(m.expert_ffn_dim / s.hidden_size for s, m in zip(moe_refs, moe, strict=True))
        if moe
        else 0.0,
        shared_ratio=median(m.shared_expert_ffn_dim / s.hidden_size for s, m in zip(moe_refs, moe, strict=True))
        if moe
        else 0.0,
        first_dense=int(median(m.first_dense_layers for m in moe)) if moe else 0,
    )


def _family_for(size: SizeSpec) -> str:
    if size.family is not None:
        return size.family
    if size.attention is AttentionKind.MLA:
        return DEFAULT_FAMILY["mla"]
    if size.num_experts is None:
        return DEFAULT_FAMILY["dense"]
    return DEFAULT_FAMILY["moe_coarse" if size.num_experts <= COARSE_MOE_EXPERTS else "moe_fine"]


def _references(size: SizeSpec, catalog: Sequence[ModelSpec]) -> _Conventions:
    family = _family_for(size)
    refs = [s for s in catalog if s.family == family]
    if not refs:
        known = sorted({s.family for s in catalog})
        raise SpecError([FieldProblem(("family",), f"no catalog model of family '{family}'; known: {known}")])
    if size.attention is AttentionKind.MLA and not any(s.mla for s in refs):
        raise SpecError([FieldProblem(("attention",), f"family '{family}' has no MLA model; use deepseek_v3")])
    moe_refs = [s for s in refs if s.moe]
    if size.num_experts is not None and not moe_refs:  # a dense family asked for experts: borrow MoE conventions
        moe_family = DEFAULT_FAMILY["moe_coarse" if size.num_experts <= COARSE_MOE_EXPERTS else "moe_fine"]
        moe_refs = [s for s in catalog if s.family == moe_family and s.moe]
    return _conventions(family, refs, moe_refs)


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the family conventions and the request fix before the widths are chosen."""

    conv: _Conventions
    attention: AttentionKind
    vocab: int
    max_context: int
    experts: int | None
    experts_per_token: int


def _heads(shape: _Shape, h: int) -> tuple[int, int]:
    """(n_h, n_kv) for width h: n_h = (n_h·d_h / h)·h / d_h (MLA: the power of two nearest the family's n_h / h,
    which divides h); n_kv by the attention kind, the family's where it divides n_h."""
    conv = shape.conv
    if shape.attention is AttentionKind.MLA:
        n_h = min(h & -h, 2 ** round(math.log2(h * conv.mla_heads_per_width)))  # h & -h: largest power of 2 in h
        return n_h, n_h
    n_h = max(4, round(h * conv.q_width_ratio / conv.head_dim / 2) * 2)  # even, so that GQA has a divisor
    if shape.attention is AttentionKind.MHA:
        return n_h, n_h
    if shape.attention is AttentionKind.MQA:
        return n_h, 1
    n_kv = math.gcd(n_h, conv.kv_heads)  # GQA: the family's KV heads where they divide n_h
    return n_h, n_kv if 1 < n_kv < n_h else max(2, n_h // 2)


def _spec(shape: _Shape, h: int, layers: int, ffn: int, tie: bool) -> ModelSpec:
    """The ModelSpec of one candidate; `ffn` is f (dense) or f_e (MoE layers)."""
    conv = shape.conv
    n_h, n_kv = _heads(shape, h)
    mla = conv.mla if shape.attention is AttentionKind.MLA else None
    if mla is not None and mla.q_lora_rank is not None and h <= 2 * mla.q_lora_rank:
        mla = mla.model_copy(update={"q_lora_rank": None})  # DeepSeek-V2-Lite (h 2048): full-rank q_proj
    moe = None
    dense_ffn = ffn
    if shape.experts is not None:
        dense_ffn = max(16, round(conv.ffn_ratio * h / 128) * 128)
        moe = MoESpec(
            num_experts=shape.experts,
            experts_per_token=shape.experts_per_token,
            expert_ffn_dim=ffn,
            shared_expert_ffn_dim=round(conv.shared_ratio * h / 64) * 64,
            first_dense_layers=min(conv.first_dense, layers - 1),
        )
    return ModelSpec(
        name=None,
        family=conv.family,
        num_layers=layers,
        hidden_size=h,
        num_heads=n_h,
        num_kv_heads=n_kv,
        head_dim=None if mla else conv.head_dim,
        ffn_dim=dense_ffn,
        vocab_size=shape.vocab,
        tie_embeddings=tie,
        qkv_bias=conv.qkv_bias,
        o_bias=conv.o_bias,
        qk_norm=conv.qk_norm,
        qk_norm_type=conv.qk_norm_type,
        mla=mla,
        moe=moe,
        attention=shape.attention,
        max_context=shape.max_context,
    )


def _conventional_ffn(shape: _Shape, h: int) -> int:
    conv = shape.conv
    ratio = conv.expert_ratio if shape.experts is not None else conv.ffn_ratio
    return max(16, round(ratio * h / 16) * 16)


def _width_step(shape: _Shape) -> int:
    """The fine width grid: n_h even (MLA: multiples of 256, so that n_h divides h)."""
    return 256 if shape.attention is AttentionKind.MLA else 2 * shape.conv.head_dim


def _widths(shape: _Shape, h_star: int) -> list[int]:
    """Widths around h*: two fine steps either side, and the nearest two where the family's n_kv divides n_h."""
    step = _width_step(shape)
    coarse = max(step, round(shape.conv.head_dim * shape.conv.kv_heads / shape.conv.q_width_ratio / step) * step)
    fine = range(max(step, h_star - 2 * step), h_star + 3 * step, step)
    below = max(coarse, h_star // coarse * coarse)
    return sorted({*fine, below, below + coarse})


def _layers_for(shape: _Shape, h: int) -> int:
    return max(MIN_LAYERS, round(h / shape.conv.aspect))


def _smallest_width(shape: _Shape, target: int, tie: Callable[[int], bool]) -> int:
    """h*: the smallest multiple of the width step whose conventional model has at least `target` parameters."""
    step = _width_step(shape)

    def params(h: int) -> int:
        return count_params(_spec(shape, h, _layers_for(shape, h), _conventional_ffn(shape, h), tie(h))).total

    lo, hi = 1, 2
    while params(hi * step) < target and hi < 4096:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if params(mid * step) < target else (lo, mid)
    return hi * step


def _solve_ffn(shape: _Shape, h: int, layers: int, tie: bool, target: int) -> ModelSpec | None:
    """The candidate (h, L) with f solved from N(f) affine in f, rounded to a step that keeps N within 0.5 %."""
    base_ffn = 256
    n0 = count_params(_spec(shape, h, layers, base_ffn, tie)).total
    slope = (count_params(_spec(shape, h, layers, base_ffn + 256, tie)).total - n0) / 256  # params per unit of f
    exact_ffn = base_ffn + (target - n0) / slope
    step = next((s for s in (128, 64, 32) if s * slope <= FFN_STEP_SHARE * target), 16)
    ffn = round(exact_ffn / step) * step
    if ffn < step:
        return None
    return _spec(shape, h, layers, ffn, tie)


def _departure(spec: ModelSpec, shape: _Shape) -> float:
    """How far a candidate is from the family's conventions: |log(f/h ÷ r)| + |log(h/L ÷ a)|
    (+ ½·|log(n_kv ÷ the family's n_kv)| for GQA)."""
    conv = shape.conv
    ffn, ratio = (spec.moe.expert_ffn_dim, conv.expert_ratio) if spec.moe else (spec.ffn_dim, conv.ffn_ratio)
    kv = 0.5 * abs(math.log(spec.kv_heads / conv.kv_heads)) if shape.attention is AttentionKind.GQA else 0.0
    shape_cost = abs(math.log(spec.hidden_size / spec.num_layers / conv.aspect))
    return abs(math.log(ffn / spec.hidden_size / ratio)) + shape_cost + kv


@lru_cache(maxsize=256)
def _synthesize(size: SizeSpec, catalog: tuple[ModelSpec, ...]) -> ModelSpec:
    conv = _references(size, catalog)
    experts = size.num_experts or (conv.experts if conv.experts and size.family else None)
    shape = _Shape(
        conv=conv,
        attention=size.attention,
        vocab=size.vocab_size or conv.vocab,
        max_context=size.max_context or conv.max_context,
        experts=experts,
        experts_per_token=min(experts or 1, size.experts_per_token or conv.experts_per_token or 2),
    )
    target = size.target_params

    def tie(h: int) -> bool:
        return 2 * shape.vocab * h > TIE_SHARE * target

    h_star = _smallest_width(shape, target, tie)
    candidates = [
        spec
        for h in _widths(shape, h_star)
        for layers in range(max(MIN_LAYERS, _layers_for(shape, h) - 3), _layers_for(shape, h) + 4)
        if (spec := _solve_ffn(shape, h, layers, tie(h), target)) is not None
    ]
    if not candidates:
        raise SpecError([FieldProblem(("size",), f"no {conv.family} architecture has {target:,} parameters")])

    def error(spec: ModelSpec) -> float:
        return abs(count_params(spec).total - target) / target

    close = [spec for spec in candidates if error(spec) <= CLOSE_ENOUGH]
    return min(close, key=lambda s: _departure(s, shape)) if close else min(candidates, key=error)


def synthesize_spec(size: SizeSpec, catalog: Sequence[ModelSpec]) -> ModelSpec:
    """A ModelSpec of `size.target_params` parameters (within 2 %, counted by count_params) in the conventions of
    the size's family among the `catalog` specs; SpecError (at size/family/attention) when none can be built.

    The derivation is in this module's docstring.
    """
    return _synthesize(size, tuple(catalog))
