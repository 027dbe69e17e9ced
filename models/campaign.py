"""A randomized probe campaign: training configurations nobody tuned for, each probed on the cpu backend.

A `Draw` is one configuration: an imported family with odd sizes (head dims and widths that are no multiples of 64,
3–5 layers, small vocabularies, its attention kind, MoE routing, MLA with or without q_lora_rank, a sliding window)
× a method (full, LoRA with a random rank, dropout and target subset or "all-linear", QLoRA, prefix, prompt, IA3,
Houlsby adapters) × precision × optimizer × checkpointing × attention kernel × batch, length and accumulation.
`draws()` is its hypothesis strategy, `random_draw(rng)` the same space drawn independently; `check_draw` probes
one and lists its misses: a peak more than 1 % off, a
component the planner claims exact (weights, trainable weights, saved activations) that is not, or a planner
refusal where peft builds the model. `shrink` simplifies a missing draw, one field at a time, while it still misses.
tests/models/test_campaign.py runs a bounded campaign in CI; `benchmarks/validate.py --random N` a longer one.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hypothesis import strategies as st

from models.runner import run_probe
from planner import SpecError
from planner.probe import ProbeRequest, ProbeResult

__all__ = [
    "FAMILIES",
    "PEAK_TOLERANCE",
    "UNPROBEABLE",
    "Draw",
    "Outcome",
    "check_draw",
    "draws",
    "make_draw",
    "random_draw",
    "run_campaign",
    "shrink",
]

PEAK_TOLERANCE = 0.01
PEAKS = ("peak/first_step", "peak/steady")
FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "mixtral", "qwen2_moe", "qwen3_moe",
            "deepseek_v2", "deepseek_v3")  # fmt: skip
MOE_FAMILIES = frozenset({"mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3"})
MLA_FAMILIES = frozenset({"deepseek_v2", "deepseek_v3"})
WINDOW_FAMILIES = frozenset({"mistral", "qwen2", "phi3", "gemma2", "mixtral"})
# peft's MoE conversion turns these into expert parameters (planner.training.peft_params.MOE_TARGET_CONVERSION)
CONVERTED_MOE = frozenset({"mixtral", "qwen3_moe", "deepseek_v2", "deepseek_v3"})
# what the cpu probe cannot run, by the request field that asks for it (models.support says why)
# weights of the draw: what the probe cannot run (QLoRA, adapters, 8-bit AdamW) is drawn, and refused, less often
METHODS = ("full",) * 3 + ("lora",) * 6 + ("prefix", "prefix", "prompt", "prompt", "ia3", "ia3", "qlora", "adapter")
OPTIMIZERS = ("adamw",) * 5 + ("sgd",) * 2 + ("adamw_8bit",)
UNPROBEABLE = {
    "qlora": "QLoRA's NF4 base needs bitsandbytes 4-bit layers on CUDA",
    "adapter": "peft has no Houlsby adapters",
    "adamw_8bit": "8-bit AdamW needs bitsandbytes",
}


@dataclass(frozen=True)
class Draw:
    """One randomized training configuration, in plain fields (shrinkable one at a time)."""

    family: str
    heads: int  # n_h
    kv: str  # "mha", "gqa" or "mqa"
    head_dim: int
    ffn_multiple: float
    layers: int
    vocab: int
    experts: int = 4
    top_k: int = 2
    shared_expert: bool = False
    first_dense: int = 0
    norm_topk: bool = False
    q_lora: bool = False
    window: bool = False  # a 64-token sliding window (scale_down), shorter than the row when seq > 64
    method: str = "full"  # full, lora, qlora, prefix, prompt, ia3, adapter
    rank: int = 8
    dropout: float = 0.0
    targets: tuple[str, ...] | None = None  # LoRA/IA3 targets; None = "all-linear" (LoRA) or peft's default (IA3)
    virtual_tokens: int = 4
    prefix_projection: bool = False
    precision: str = "bf16"
    optimizer: str = "adamw"
    implementation: str = "foreach"
    momentum: float = 0.0
    checkpointing: str = "none"
    attention: str = "sdpa"
    batch: int = 2
    seq: int = 32
    accumulation: int = 1

    def hf_config(self) -> dict[str, Any]:
        """The config.json of the family (before the probe's ProbeScale sets the widths)."""
        n_kv = {"mha": self.heads, "mqa": 1, "gqa": self.heads // 2 if self.heads % 2 == 0 else 1}[self.kv]
        config: dict[str, Any] = {"model_type": self.family, "num_hidden_layers": self.layers,
                                  "hidden_size": 16 * self.heads, "intermediate_size": 128,
                                  "num_attention_heads": self.heads, "num_key_value_heads": n_kv,
                                  "vocab_size": self.vocab, "head_dim": 16}  # fmt: skip
        if self.family in MLA_FAMILIES:
            config |= {"q_lora_rank": 48 if self.q_lora else None, "kv_lora_rank": 32, "qk_nope_head_dim": 16,
                       "qk_rope_head_dim": 8, "v_head_dim": 16, "num_key_value_heads": self.heads}  # fmt: skip
        if self.family in MOE_FAMILIES:
            config |= _moe_config(self)
        if self.family in WINDOW_FAMILIES:
            config["sliding_window"] = 64 if self.window else None
            if self.family == "qwen2":
                config["use_sliding_window"] = self.window
        return config

    def method_spec(self) -> dict[str, Any]:
        if self.method in ("lora", "qlora"):
            targets = "all-linear" if self.targets is None else list(self.targets)
            return {"kind": self.method, "rank": self.rank, "alpha": 2 * self.rank, "dropout": self.dropout,
                    "target_modules": targets}  # fmt: skip
        if self.method == "prefix":
            return {"kind": "prefix", "num_virtual_tokens": self.virtual_tokens,
                    "prefix_projection": self.prefix_projection}  # fmt: skip
        if self.method == "prompt":
            return {"kind": "prompt", "num_virtual_tokens": self.virtual_tokens}
        if self.method == "ia3":
            return {"kind": "ia3", **({"target_modules": list(self.targets)} if self.targets else {})}
        if self.method == "adapter":
            return {"kind": "adapter", "bottleneck": self.rank}
        return {"kind": "full"}

    def request(self) -> ProbeRequest:
        """The probe request: the family's config, shrunk by ProbeScale to the drawn widths."""
        optimizer = {"kind": self.optimizer, "implementation": self.implementation, "momentum": self.momentum}
        training = {"method": self.method_spec(), "precision": self.precision, "optimizer": optimizer,
                    "gradient_checkpointing": self.checkpointing, "attention": self.attention,
                    "micro_batch_size": self.batch, "sequence_length": self.seq,
                    "gradient_accumulation_steps": self.accumulation}  # fmt: skip
        scale = {"num_layers": self.layers, "head_dim": self.head_dim, "max_heads": self.heads,
                 "ffn_multiple": self.ffn_multiple, "vocab_size": self.vocab, "max_experts": self.experts}  # fmt: skip
        return ProbeRequest.model_validate({"kind": "training", "model": self.hf_config(), "backend": "cpu",
                                            "training": training, "scale": scale})  # fmt: skip

    def label(self) -> str:
        """A readable one-line summary of the draw (what differs from the defaults)."""
        defaults = Draw("", 0, "", 0, 0.0, 0, 0)
        changed = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                   if f.name in ("family", "kv") or getattr(self, f.name) != getattr(defaults, f.name)]  # fmt: skip
        return " ".join(changed)


def _moe_config(d: Draw) -> dict[str, Any]:
    e, k = d.experts, min(d.top_k, d.experts)
    if d.family == "mixtral":
        return {"num_local_experts": e, "num_experts_per_tok": k}
    if d.family in ("qwen2_moe", "qwen3_moe"):
        out: dict[str, Any] = {"num_experts": e, "num_experts_per_tok": k, "moe_intermediate_size": 32,
                               "norm_topk_prob": d.norm_topk,
                               "mlp_only_layers": list(range(d.first_dense))}  # fmt: skip
        if d.family == "qwen2_moe":
            out["shared_expert_intermediate_size"] = 32 if d.shared_expert else 0
        return out
    return {"n_routed_experts": e, "num_experts_per_tok": k, "moe_intermediate_size": 32,
            "n_shared_experts": 1 if d.shared_expert else 0, "first_k_dense_replace": d.first_dense,
            "n_group": 1, "topk_group": 1, "norm_topk_prob": d.norm_topk}  # fmt: skip


def _module_names(family: str, q_lora: bool) -> tuple[str, ...]:
    """Target names a user would give for the family (peft matches them by suffix)."""
    if family == "phi3":
        return ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
    if family in MLA_FAMILIES:
        q = ("q_a_proj", "q_b_proj") if q_lora else ("q_proj",)
        return (*q, "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "v_proj")
    return ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Chooser(Protocol):
    """Where a draw's choices come from: hypothesis (CI, shrinkable) or a seeded random.Random (the campaign)."""

    def one(self, options: Sequence[Any]) -> Any: ...

    def integer(self, lo: int, hi: int) -> int: ...

    def subset(self, options: Sequence[str], lo: int, hi: int) -> tuple[str, ...]: ...


class _Hypothesis:
    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def one(self, options: Sequence[Any]) -> Any:
        return self.draw(st.sampled_from(options))

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def subset(self, options: Sequence[str], lo: int, hi: int) -> tuple[str, ...]:
        return tuple(sorted(self.draw(st.sets(st.sampled_from(options), min_size=lo, max_size=hi))))


class _Random:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def one(self, options: Sequence[Any]) -> Any:
        return self.rng.choice(list(options))

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def subset(self, options: Sequence[str], lo: int, hi: int) -> tuple[str, ...]:
        unique = sorted(set(options))
        return tuple(sorted(self.rng.sample(unique, self.rng.randint(lo, min(hi, len(unique))))))


@st.composite
def draws(draw: st.DrawFn) -> Draw:
    """The hypothesis strategy (shrinkable): every family × method × precision × optimizer × checkpointing ×
    kernel × shapes."""
    return make_draw(_Hypothesis(draw))


def random_draw(rng: random.Random) -> Draw:
    """One draw from a seeded generator (independent draws, for the long campaign)."""
    return make_draw(_Random(rng))


def make_draw(c: Chooser) -> Draw:
    """A configuration from `c`'s choices."""
    family = c.one(FAMILIES)
    heads = c.integer(2, 6)
    kv = "mha" if family in MLA_FAMILIES else c.one(("mha", "gqa", "mqa"))
    mla, moe = family in MLA_FAMILIES, family in MOE_FAMILIES
    if moe:  # torch's grouped_mm (the experts) needs rows of a multiple of 16 bytes: h and f_e multiples of 8
        heads = 2 * c.integer(1, 3)
        head_dim = c.one((8, 16, 24))
    else:
        head_dim = c.one((8, 12, 16, 20, 24, 28) if not mla else (8, 12, 16, 20))
    experts = c.integer(2, 6) if moe else 4
    method = c.one(METHODS)
    q_lora = bool(c.one((False, True))) if mla else False
    names = _module_names(family, q_lora)
    targets: tuple[str, ...] | None = None
    if method in ("lora", "qlora") and c.one((False, True)):
        targets = c.subset(names, 1, 4)
    if method == "ia3" and c.one((False, True)):
        targets = c.subset(names, 1, 3)
    optimizer = c.one(OPTIMIZERS)
    boolean = (False, True)
    return Draw(
        family=family,
        heads=heads,
        kv=kv,
        head_dim=head_dim,
        ffn_multiple=c.one((1.0, 1.5, 2.0, 2.5, 3.0, 3.5) if moe else (1.0, 1.5, 2.25, 2.75, 3.0, 3.5)),
        layers=c.integer(3, 5),
        vocab=c.integer(48, 640),
        experts=experts,
        top_k=c.integer(1, min(3, experts)) if moe else 2,
        shared_expert=c.one(boolean) if family in ("qwen2_moe", "deepseek_v2", "deepseek_v3") else False,
        first_dense=c.integer(0, 1) if family in ("qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3") else 0,
        norm_topk=c.one(boolean) if family in ("qwen2_moe", "qwen3_moe", "deepseek_v3") else False,
        q_lora=q_lora,
        window=c.one(boolean) if family in WINDOW_FAMILIES else False,
        method=method,
        rank=c.integer(1, 16),
        dropout=c.one((0.0, 0.05, 0.1)) if method in ("lora", "qlora") else 0.0,
        targets=targets,
        virtual_tokens=c.integer(1, 8),
        prefix_projection=c.one(boolean) if method == "prefix" else False,
        precision=c.one(("bf16", "bf16", "fp32", "bf16_autocast")),
        optimizer=optimizer,
        implementation=c.one(("foreach", "fused", "for_loop")),
        momentum=c.one((0.0, 0.9)) if optimizer == "sgd" else 0.0,
        checkpointing="none" if method == "prefix" else c.one(("none", "full")),
        attention="eager" if family == "gemma2" else c.one(("sdpa", "sdpa", "eager", "sdpa_math")),
        batch=c.integer(1, 3),
        seq=c.integer(8, 80),
        accumulation=c.integer(1, 2),
    )


@dataclass(frozen=True)
class Outcome:
    """What one draw gave: the result, or why it could not be probed; and its misses."""

    draw: Draw
    result: ProbeResult | None
    refused: str | None  # the probe (or the planner, where peft refuses too) could not run it
    misses: tuple[str, ...]

    def errors(self) -> dict[str, float]:
        """Relative errors of the peaks and of the exact components, by comparison name."""
        if self.result is None:
            return {}
        return {c.name: c.rel_error for c in self.result.comparisons if c.name in PEAKS or c.exact}


def _misses(result: ProbeResult) -> list[str]:
    out = [f"{c.name}: measured {c.measured_bytes:,} B, planner {c.estimated_bytes:,} B"
           for c in result.comparisons if c.exact and c.measured_bytes != c.estimated_bytes]  # fmt: skip
    out += [f"{c.name}: {100 * c.rel_error:+.3f} %" for c in result.comparisons
            if c.name in PEAKS and abs(c.rel_error) > PEAK_TOLERANCE]  # fmt: skip
    return out


def _peft_builds(request: ProbeRequest) -> str | None:
    """None where peft wraps the probe model as asked and runs a forward, else its error (the oracle for a planner
    refusal)."""
    import warnings

    import peft
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from models.build import peft_config
    from models.runner import probe_spec
    from planner.probe import probe_hf_config

    spec, _ = probe_spec(request)
    method = request.training.method
    if method.kind in ("full", "adapter"):
        return "no peft method"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = AutoConfig.for_model(**probe_hf_config(spec))
            model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
            wrapped = peft.get_peft_model(model, peft_config(method))
            ids = torch.zeros((1, 4), dtype=torch.long)
            wrapped(input_ids=ids, labels=ids).loss.backward()
    except Exception as exc:  # peft's refusals are ValueError, TypeError, KeyError...: any means "refused"
        return f"{type(exc).__name__}: {exc}"
    return None


def check_draw(d: Draw, run: Callable[[ProbeRequest], ProbeResult] = run_probe) -> Outcome:
    """Probe one draw on the cpu backend and list what misses."""
    request = d.request()
    try:
        result = run(request)
    except SpecError as exc:
        unsupported = any(p.type == "unsupported" for p in exc.problems)
        if unsupported:
            return Outcome(d, None, str(exc), ())
        peft_error = _peft_builds(request)
        miss = () if peft_error else (f"the planner refuses what peft builds: {exc}",)
        return Outcome(d, None, f"{exc} (peft: {peft_error})", miss)
    except Exception as exc:  # the probe itself failed: reported, never passed off as a match
        return Outcome(d, None, None, (f"the probe failed: {type(exc).__name__}: {exc}",))
    return Outcome(d, result, None, tuple(_misses(result)))


SHRINK_MOVES: tuple[tuple[str, Any], ...] = (
    ("accumulation", 1), ("batch", 1), ("layers", 3), ("seq", 16), ("checkpointing", "none"), ("attention", "sdpa"),
    ("precision", "bf16"), ("optimizer", "adamw"), ("implementation", "foreach"), ("momentum", 0.0),
    ("dropout", 0.0), ("targets", None), ("method", "full"), ("window", False), ("q_lora", False),
    ("shared_expert", False), ("first_dense", 0), ("norm_topk", False), ("experts", 2), ("top_k", 1),
    ("kv", "mha"), ("heads", 2), ("head_dim", 8), ("ffn_multiple", 2.0), ("vocab", 64), ("virtual_tokens", 1),
    ("rank", 1), ("prefix_projection", False),
)  # fmt: skip


def shrink(d: Draw, misses: Callable[[Draw], bool], max_tries: int = 60) -> Draw:
    """The simplest draw reached by single-field simplifications that still misses (greedy, deterministic)."""
    tries, progress = 0, True
    while progress and tries < max_tries:
        progress = False
        for name, value in SHRINK_MOVES:
            if getattr(d, name) == value or tries >= max_tries:
                continue
            candidate = dataclasses.replace(d, **{name: value})
            tries += 1
            try:
                still = misses(candidate)
            except Exception:  # a simplification the probe cannot build is not a simpler miss
                still = False
            if still:
                d, progress = candidate, True
    return d


def run_campaign(n: int, seed: int, on_outcome: Callable[[Outcome], None]) -> None:
    """Check `n` independent draws from random.Random(seed), handing each outcome to `on_outcome`."""
    rng = random.Random(seed)
    for _ in range(n):
        on_outcome(check_draw(random_draw(rng)))
