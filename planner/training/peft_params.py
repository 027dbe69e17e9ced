"""Trainable parameters of a fine-tuning method, exactly as peft 0.21.2 builds it on a transformers 5 model.

`trainable_params(spec, method)` equals `get_peft_model(AutoModelForCausalLM.from_config(cfg), config)
.get_nb_trainable_parameters()[0]`. The module names peft can reach are listed per block from the ModelSpec
(`_block_sites`), then matched with peft's own rules:

- a target name matches a module whose full key equals it or ends with "." + name
  (peft/tuners/tuners_utils.py `check_target_module_exists`);
- "all-linear" is every nn.Linear but the output layer (`_maybe_include_all_linear_layers`). In transformers 5 the
  routed experts are stacked nn.Parameters and the routers custom modules, so neither is an nn.Linear;
- for mixtral, minimax_m2, qwen3_moe, olmoe, deepseek_v2 and deepseek_v3, peft rewrites LoRA targets for the
  transformers-5 MoE layout before matching (peft/utils/transformers_weight_conversion.py
  `_convert_peft_config_moe`): "gate" becomes the router parameter, "gate_proj"/"up_proj" (mixtral "w1"/"w3") the
  fused expert parameter `gate_up_proj` at rank 2r, "down_proj" ("w2") the expert parameter `down_proj`. Those
  names then no longer target any nn.Linear, so dense MLPs and shared experts of these families get no adapter from
  them. qwen2_moe is not converted.

Target names that match nothing are answered as peft builds the model: peft adapts the names that matched, and
refuses only when none did; the names that matched nothing are listed in `TrainableParams.unmatched_targets`, and
the estimate warns about them (peft itself is silent).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from pydantic import Field

from planner._base import FrozenSpec
from planner.errors import FieldProblem, SpecError
from planner.model.params import attention_linears, count_params, mlp_linears
from planner.model.spec import ModelSpec, MoESpec
from planner.training.spec import (
    AdapterSpec,
    FullFineTune,
    IA3Spec,
    LoRASpec,
    MethodSpec,
    PrefixTuningSpec,
    PromptTuningSpec,
)

__all__ = ["PeftModule", "TrainableParams", "block_trainable_params", "prefix_token_dim", "trainable_params"]

METHOD_LOC = ("training", "method")

# peft/utils/constants.py (peft 0.21.2), restricted to the families memplan builds; a family missing here has no
# default in peft. mixtral's LoRA default exists but never applies (see `_lora_targets`).
_QV_FAMILIES = ("gemma", "gemma2", "gemma3_text", "qwen2", "qwen3")
LORA_DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    **{family: ("q_proj", "v_proj") for family in ("llama", "mistral", "mixtral", *_QV_FAMILIES)},
    "gpt2": ("c_attn",),
    "gpt_neox": ("query_key_value",),
    "falcon": ("query_key_value",),
}
IA3_DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": ("k_proj", "v_proj", "down_proj"),
    "mistral": ("k_proj", "v_proj", "down_proj"),
    "mixtral": ("k_proj", "v_proj", "w2"),  # w2 is a transformers-4 name: it matches nothing in transformers 5
    **{family: ("q_proj", "v_proj", "down_proj") for family in _QV_FAMILIES},
    "gpt2": ("c_attn", "mlp.c_proj"),
    "gpt_neox": ("query_key_value", "dense_4h_to_h"),
    "falcon": ("query_key_value", "dense_4h_to_h"),
}
_IA3_FEEDFORWARD_OWN = {"mixtral": ("w2",), "gpt2": ("mlp.c_proj",), "gpt_neox": ("dense_4h_to_h",)}
IA3_DEFAULT_FEEDFORWARD: dict[str, tuple[str, ...]] = {
    family: _IA3_FEEDFORWARD_OWN.get(family, ("dense_4h_to_h",) if family == "falcon" else ("down_proj",))
    for family in IA3_DEFAULT_TARGETS
}
# transformers_weight_conversion._MOE_TARGET_MODULE_MAPPING, keyed by transformers' _MODEL_TO_CONVERSION_PATTERN.
_MIXTRAL_CONVERSION = {"gate": "gate.weight", "w1": "gate_up_proj", "w3": "gate_up_proj", "w2": "down_proj"}
_QWEN_MOE_CONVERSION = {
    "gate": "gate.weight",
    "gate_proj": "gate_up_proj",
    "up_proj": "gate_up_proj",
    "down_proj": "down_proj",
}
MOE_TARGET_CONVERSION: dict[str, dict[str, str]] = {
    **{family: _MIXTRAL_CONVERSION for family in ("mixtral", "minimax_m2")},
    **{family: _QWEN_MOE_CONVERSION for family in ("qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3")},
}
FUSED_GATE_UP_FAMILIES = frozenset({"phi3", "glm4"})  # one gate_up_proj nn.Linear (Phi3MLP, Glm4MLP)
FUSED_EXPERT_PARAM = "gate_up_proj"
FUSED_RANK_FACTOR = 2  # peft sets rank_pattern and alpha_pattern of gate_up_proj to 2·r and 2·α
SHARED_MLP_PREFIX = {"qwen2_moe": "shared_expert.", "deepseek_v2": "shared_experts.", "deepseek_v3": "shared_experts."}


@dataclass(frozen=True, slots=True)
class _ModuleNames:
    """Where a family's transformers 5 model keeps the weights peft adapts (module keys, not planner names)."""

    base: str = "model"  # the decoder stack under the causal LM
    blocks: str = "layers"
    embedding: str = "embed_tokens"
    attention: str = "self_attn"
    fused_qkv: str | None = None  # one nn.Linear (GPT-2: a Conv1D) h→(n_h + 2·n_kv)·d_h in place of q, k, v
    o_proj: str = "o_proj"
    plain_mlp: tuple[str, str] = ("up_proj", "down_proj")  # a non-gated MLP's h→f and f→h modules
    positions: str | None = None  # learned absolute positions (an nn.Embedding)


_LLAMA_NAMES = _ModuleNames()
# GPT2Model (transformer.h.N.attn.c_attn/c_proj, mlp.c_fc/c_proj Conv1D, wte, wpe), GPTNeoXModel
# (gpt_neox.layers.N.attention.query_key_value/dense, mlp.dense_h_to_4h/dense_4h_to_h, embed_in), FalconModel
# (transformer.h.N.self_attention.query_key_value/dense, word_embeddings), Starcoder2 (q/k/v/o_proj, mlp.c_fc/c_proj).
_GPT_NEOX_MLP = ("dense_h_to_4h", "dense_4h_to_h")
MODULE_NAMES: dict[str, _ModuleNames] = {
    "gpt2": _ModuleNames(
        base="transformer",
        blocks="h",
        embedding="wte",
        attention="attn",
        fused_qkv="c_attn",
        o_proj="c_proj",
        plain_mlp=("c_fc", "c_proj"),
        positions="wpe",
    ),
    "gpt_neox": _ModuleNames(
        base="gpt_neox",
        embedding="embed_in",
        attention="attention",
        fused_qkv="query_key_value",
        o_proj="dense",
        plain_mlp=_GPT_NEOX_MLP,
    ),
    "falcon": _ModuleNames(
        base="transformer",
        blocks="h",
        embedding="word_embeddings",
        attention="self_attention",
        fused_qkv="query_key_value",
        o_proj="dense",
        plain_mlp=_GPT_NEOX_MLP,
    ),
    "starcoder2": _ModuleNames(plain_mlp=("c_fc", "c_proj")),
}
HOULSBY_ADAPTERS_PER_LAYER = 2  # after attention and after the FFN (Houlsby et al. 2019 §2.1, Figure 2)
KEY_AND_VALUE = 2  # a prefix holds keys and values
LORA_MATRICES = 2  # A and B
LINEAR_WITH_BIAS = 2  # an nn.Linear's weight and bias tensors
NO_KV_HEADS_KEY = frozenset({"gpt2", "gpt_neox", "falcon"})  # config classes without num_key_value_heads
LM_HEAD = "lm_head"  # the output layer of every family built (GPT-NeoX too, in transformers 5)


class PeftModule(FrozenSpec):
    """One kind of adapted module or prompt encoder and the trainable parameters peft gives it."""

    name: str = Field(
        description="Module key suffix peft matched: 'q_proj', 'shared_expert.gate_proj', 'experts.gate_up_proj', "
        "'gate.weight' (router), 'lm_head', 'prefix_encoder', ..."
    )
    d_in: int
    d_out: int
    rank: int = Field(default=0, description="LoRA r of the module (2r for a fused expert gate_up_proj); 0 otherwise.")
    per_layer: int = Field(description="How many per layer (2 for prefix keys+values and Houlsby adapters).")
    layers: int = Field(description="Decoder layers holding it; 1 for a module outside the blocks.")
    trainable_params: int = Field(description="Total over all layers.")

    @property
    def tensors(self) -> int:
        """Parameter tensors peft creates for it: LoRA's A and B per layer (nn.Linear without bias, ParamWrapper's
        [E·r, ·] ones too), an IA3 vector per layer, one embedding for a prefix or a prompt, weight and bias of each
        prefix-MLP linear, two weights and two biases per Houlsby adapter.
        Source: peft 0.21.2 tuners/lora/layer.py `LoraLayer.update_layer`, `ParamWrapper.update_layer`;
          tuners/ia3/layer.py; tuners/prefix_tuning/model.py PrefixEncoder; tuners/prompt_tuning/model.py."""
        if self.rank:
            return LORA_MATRICES * self.layers
        if self.name.startswith("prefix_encoder.transform"):
            return LINEAR_WITH_BIAS
        if self.name == "adapter":
            return 2 * LINEAR_WITH_BIAS * self.per_layer * self.layers
        if self.name in ("prefix_encoder", "prefix_encoder.embedding", "prompt_embeddings"):
            return 1
        return self.layers


class TrainableParams(FrozenSpec):
    """What a fine-tuning method trains: `trainable` == PeftModel.get_nb_trainable_parameters()[0]."""

    trainable: int
    base_params: int = Field(description="count_params(spec).total.")
    modules: tuple[PeftModule, ...]
    lora_targets: frozenset[str] = Field(
        description="planner.model.params Linear names carrying LoRA ('q_proj', 'shared_experts.down_proj', "
        "'experts.gate_proj', 'router'), plus 'lm_head'/'embed_tokens' when targeted."
    )
    ia3_targets: frozenset[str] = Field(description="The same for IA3.")
    ia3_feedforward: frozenset[str] = Field(
        default=frozenset(),
        description="The IA3 targets peft scales on their input (feedforward_modules), by planner name; the "
        "others are scaled on their output.",
    )
    unmatched_targets: tuple[str, ...] = Field(
        default=(),
        description="Target names given that match no module (peft adapts the others); e.g. v_proj on MLA.",
    )


@dataclass(frozen=True, slots=True)
class _Site:
    """A weight peft can adapt: an nn.Linear or nn.Embedding module, or a parameter reached by target_parameters."""

    path: str  # key inside a block ("self_attn.q_proj", "mlp.experts.down_proj") or the model ("lm_head")
    d_in: int
    d_out: int
    planner_names: tuple[str, ...]
    kind: Literal["linear", "embedding", "parameter"] = "linear"
    experts: int = 1  # E for a stacked (E, ·, ·) expert parameter: peft's lora_A is then (E·r, d_in)

    @property
    def name(self) -> str:
        return self.path.removeprefix("self_attn.").removeprefix("mlp.")


@dataclass(frozen=True, slots=True)
class _Hit:
    """One adapted site: its LoRA rank (0 for IA3) and the trainable parameters peft gives it."""

    site: _Site
    rank: int
    params: int


def _attention_sites(spec: ModelSpec) -> tuple[_Site, ...]:
    """phi3 fuses q, k, v into qkv_proj h→(n_h + 2·n_kv)·d_h, GPT-2 into c_attn and GPT-NeoX and Falcon into
    query_key_value; every other family keeps planner.model.params' shapes and names."""
    linears = attention_linears(spec)
    names = MODULE_NAMES.get(spec.family, _LLAMA_NAMES)
    fused = "qkv_proj" if spec.family == "phi3" else names.fused_qkv
    prefix = f"{names.attention}."
    if fused is None:
        return tuple(_Site(f"{prefix}{lin.name}", lin.d_in, lin.d_out, (lin.name,)) for lin in linears)
    qkv = linears[:3]
    o = linears[3]
    return (
        _Site(f"{prefix}{fused}", spec.hidden_size, sum(lin.d_out for lin in qkv), tuple(lin.name for lin in qkv)),
        _Site(f"{prefix}{names.o_proj}", o.d_in, o.d_out, (o.name,)),
    )


def _dense_mlp_sites(spec: ModelSpec) -> tuple[_Site, ...]:
    """Gated MLP gate/up/down (phi3 and glm4 fuse gate and up into gate_up_proj h→2f), or a plain MLP's two."""
    linears = mlp_linears(spec, moe_layer=False)
    if spec.mlp_kind == "plain":
        names = MODULE_NAMES.get(spec.family, _LLAMA_NAMES).plain_mlp
        return tuple(
            _Site(f"mlp.{name}", lin.d_in, lin.d_out, (lin.name,)) for name, lin in zip(names, linears, strict=True)
        )
    gate, up, down = linears
    sites = (_Site(f"mlp.{lin.name}", lin.d_in, lin.d_out, (lin.name,)) for lin in (gate, up, down))
    if spec.family not in FUSED_GATE_UP_FAMILIES:
        return tuple(sites)
    fused_gate_up = _Site("mlp.gate_up_proj", gate.d_in, gate.d_out + up.d_out, (gate.name, up.name))
    return fused_gate_up, _Site("mlp.down_proj", down.d_in, down.d_out, (down.name,))


def _moe_sites(spec: ModelSpec, moe: MoESpec) -> tuple[_Site, ...]:
    """Router weight (E, h) and stacked experts (parameters), then shared-expert nn.Linears and the Qwen shared gate.

    transformers 5 always builds the shared MLP of qwen2_moe and DeepSeek MoE layers, even 0 wide.
    """
    h, n_experts, f_e = spec.hidden_size, moe.num_experts, moe.expert_ffn_dim
    router = "mlp.router.weight" if spec.family == "gpt_oss" else "mlp.gate.weight"  # GptOssMLP.router
    sites = [
        _Site(router, h, n_experts, ("router",), "parameter"),
        _Site("mlp.experts.gate_up_proj", h, 2 * f_e, ("experts.gate_proj", "experts.up_proj"), "parameter", n_experts),
        _Site("mlp.experts.down_proj", f_e, h, ("experts.down_proj",), "parameter", n_experts),
    ]
    prefix = SHARED_MLP_PREFIX.get(spec.family, "shared_experts." if moe.shared_expert_ffn_dim else None)
    if prefix is not None:
        f_s = moe.shared_expert_ffn_dim
        for proj, d_in, d_out in (("gate_proj", h, f_s), ("up_proj", h, f_s), ("down_proj", f_s, h)):
            sites.append(_Site(f"mlp.{prefix}{proj}", d_in, d_out, (f"shared_experts.{proj}",)))
    if moe.shared_expert_gate:
        sites.append(_Site("mlp.shared_expert_gate", h, 1, ("shared_expert_gate",)))
    return tuple(sites)


@lru_cache(maxsize=1024)
def _block_sites(spec: ModelSpec, moe_layer: bool) -> tuple[_Site, ...]:
    ffn = _moe_sites(spec, spec.moe) if moe_layer and spec.moe is not None else _dense_mlp_sites(spec)
    return _attention_sites(spec) + ffn


def _model_sites(spec: ModelSpec) -> Iterator[tuple[str, _Site]]:
    """(full key, site) for every adaptable weight: the embeddings, each block's weights, lm_head."""
    h, vocab = spec.hidden_size, spec.vocab_size
    names = MODULE_NAMES.get(spec.family, _LLAMA_NAMES)
    yield f"{names.base}.{names.embedding}", _Site(names.embedding, vocab, h, ("embed_tokens",), "embedding")
    if names.positions is not None and spec.learned_positions:
        yield (
            f"{names.base}.{names.positions}",
            _Site(names.positions, spec.max_context, h, ("position_embeddings",), "embedding"),
        )
    for i in range(spec.num_layers):
        moe_layer = spec.moe is not None and spec.moe.is_moe_layer(i)
        for site in _block_sites(spec, moe_layer):
            yield f"{names.base}.{names.blocks}.{i}.{site.path}", site
    yield LM_HEAD, _Site(LM_HEAD, h, vocab, (LM_HEAD,))


def _matching(key: str, names: frozenset[str]) -> set[str]:
    """The target names that select `key` (tuners_utils.check_target_module_exists: equal, or a '.'-suffix)."""
    return {name for name in names if key == name or key.endswith(f".{name}")}


def _problem(field: str, msg: str) -> SpecError:
    return SpecError([FieldProblem((*METHOD_LOC, field), msg)])


def _linear_names(spec: ModelSpec) -> list[str]:
    names = {site.name for _, site in _model_sites(spec) if site.kind == "linear"}
    return sorted(names - {LM_HEAD})


# --- LoRA ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _LoraTargets:
    """Target names after peft's defaults and MoE conversion; `modules` None = every nn.Linear but lm_head."""

    modules: frozenset[str] | None
    parameters: frozenset[str] = frozenset()
    given_modules: frozenset[str] = frozenset()  # user-given names that still target modules
    given_parameters: tuple[tuple[str, str], ...] = ()  # user-given names peft turned into a parameter target


def _lora_default(spec: ModelSpec) -> tuple[str, ...]:
    if spec.family in MOE_TARGET_CONVERSION:
        raise _problem(
            "target_modules",
            f"peft 0.21.2 has no usable default LoRA targets for '{spec.family}': its transformers-5 MoE conversion "
            "replaces the missing target_modules with an empty set before the default applies, and get_peft_model "
            "fails; name the targets (e.g. ['q_proj', 'v_proj']) or use 'all-linear'",
        )
    if spec.family not in LORA_DEFAULT_TARGETS:
        raise _problem(
            "target_modules",
            f"peft has no default LoRA target_modules for model_type '{spec.family}' "
            f"(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING); name them, e.g. {_linear_names(spec)}, or use "
            "'all-linear'",
        )
    return LORA_DEFAULT_TARGETS[spec.family]


def _convert_moe_targets(spec: ModelSpec, names: set[str], given: bool) -> _LoraTargets:
    """peft's `_convert_peft_config_moe`: expert and router names become parameter targets (first match wins)."""
    conversion = MOE_TARGET_CONVERSION[spec.family]
    modules: set[str] = set()
    parameters: dict[str, str] = {}
    fused: set[str] = set()
    for name in names:
        old = next((old for old in conversion if name == old or name.endswith(f".{old}")), None)
        if old is None:
            modules.add(name)
            continue
        parameters[name] = conversion[old]
        if conversion[old] == FUSED_EXPERT_PARAM:
            fused.add(old)
    required = sorted(old for old, new in conversion.items() if new == FUSED_EXPERT_PARAM)
    if 0 < len(fused) < len(required):
        raise _problem(
            "target_modules",
            f"peft 0.21.2 fuses the routed experts' {' and '.join(required)} into one {FUSED_EXPERT_PARAM} parameter "
            f"for '{spec.family}' under transformers 5: target both or neither (got {sorted(fused)})",
        )
    return _LoraTargets(
        frozenset(modules),
        frozenset(parameters.values()),
        frozenset(modules) if given else frozenset(),
        tuple(sorted(parameters.items())) if given else (),
    )


def _lora_targets(spec: ModelSpec, method: LoRASpec) -> _LoraTargets:
    targets = method.target_modules
    converted = spec.family in MOE_TARGET_CONVERSION
    if targets == "all-linear":
        if not converted:
            return _LoraTargets(None)
        # _resolve_string_target_modules: leaf names of every nn.Linear, plus the transformers-4 expert/router names
        leaves = {name.rsplit(".", 1)[-1] for name in _linear_names(spec)}
        return _convert_moe_targets(spec, leaves | set(MOE_TARGET_CONVERSION[spec.family]), given=False)
    names = set(targets) if targets is not None else set(_lora_default(spec))
    if converted:
        return _convert_moe_targets(spec, names, given=targets is not None)
    return _LoraTargets(frozenset(names), given_modules=frozenset(names) if targets else frozenset())


def _lora_hits(spec: ModelSpec, targets: _LoraTargets, rank: int) -> tuple[list[_Hit], set[str], set[str]]:
    """Adapted sites, and the module and parameter target names that selected something."""
    hits: list[_Hit] = []
    used_modules: set[str] = set()
    used_parameters: set[str] = set()
    for key, site in _model_sites(spec):
        if site.kind == "parameter":
            names = _matching(key, targets.parameters)
            used_parameters |= names
        elif targets.modules is None:
            names = {"all-linear"} if site.kind == "linear" and key != LM_HEAD else set()
        else:
            names = _matching(key, targets.modules)
            used_modules |= names
        if names:
            r = rank * (FUSED_RANK_FACTOR if site.name == f"experts.{FUSED_EXPERT_PARAM}" else 1)
            hits.append(_Hit(site, r, site.experts * r * (site.d_in + site.d_out)))
    return hits, used_modules, used_parameters


def _lora_params(spec: ModelSpec, method: LoRASpec) -> TrainableParams:
    """LoRA on every matched weight: r·(d_in + d_out) per nn.Linear/nn.Embedding, E·r'·(d_in + d_out) per expert stack.

    Formula: Σ_targets r·(d_in + d_out) (A: r×d_in, B: d_out×r, bias="none"); a stacked expert parameter gets
      lora_A (E·r', d_in) and lora_B (d_out, E·r'), r' = 2r for the fused gate_up_proj; the router (E, h) is 2-D.
    Source: Hu et al. 2021 (arXiv:2106.09685) §4.1; shapes from peft 0.21.2 tuners/lora/layer.py (Linear,
      Embedding, ParamWrapper.update_layer).
    Assumes: QLoRA wraps the same modules (Linear4bit in place of nn.Linear), so it trains the same count.
    """
    targets = _lora_targets(spec, method)
    hits, used_modules, used_parameters = _lora_hits(spec, targets, method.rank)
    unmatched = sorted(targets.given_modules - used_modules)
    moved = sorted(name for name, parameter in targets.given_parameters if parameter not in used_parameters)
    if not hits:  # peft: "Target modules ... not found in the base model"
        raise _problem("target_modules", _unmatched_message(spec, unmatched + moved, moved))
    if method.dropout and any(hit.site.kind == "parameter" for hit in hits):
        raise _problem(
            "dropout", "peft's LoRA on MoE expert/router parameters (ParamWrapper) refuses lora_dropout != 0"
        )
    return _summarize(spec, hits, lora=True, unmatched=tuple(sorted(set(unmatched + moved))))


def _unmatched_message(spec: ModelSpec, names: list[str], moved: list[str] | None = None) -> str:
    what = f"{names} match" if names else "the targets match"
    msg = (
        f"{what} no module peft can adapt in this '{spec.family}' model; "
        f"its nn.Linear modules are {_linear_names(spec)} (and lm_head)"
    )
    if moved:
        msg += (
            f"; peft 0.21.2 turns {moved} into routed-expert/router parameters for '{spec.family}' "
            "(transformers-5 MoE conversion), and the model has no MoE layer"
        )
    return msg


# --- IA3 ----------------------------------------------------------------------------------------------------


def _ia3_names(spec: ModelSpec, method: IA3Spec) -> tuple[frozenset[str], tuple[str, ...]]:
    """Target and feed-forward names after peft's IA3 defaults (tuners/ia3/model.py `_prepare_adapter_config`)."""
    targets, feedforward = method.target_modules, method.feedforward_modules
    if targets is not None and feedforward is not None and not set(feedforward) <= set(targets):
        raise _problem("feedforward_modules", "feedforward_modules must be a subset of target_modules (peft IA3Config)")
    if targets is None and spec.family not in IA3_DEFAULT_TARGETS:
        raise _problem(
            "target_modules",
            f"peft has no default IA3 target_modules for model_type '{spec.family}' "
            f"(TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING); name them from {_linear_names(spec)}",
        )
    if feedforward is None and spec.family not in IA3_DEFAULT_FEEDFORWARD:
        raise _problem(
            "feedforward_modules",
            f"peft has no default IA3 feedforward_modules for model_type '{spec.family}'; name them "
            "(the targets scaled on their input, e.g. down_proj)",
        )
    names = frozenset(targets if targets is not None else IA3_DEFAULT_TARGETS[spec.family])
    return names, feedforward if feedforward is not None else IA3_DEFAULT_FEEDFORWARD[spec.family]


def _ia3_params(spec: ModelSpec, method: IA3Spec) -> TrainableParams:
    """IA3: one learned vector per targeted nn.Linear, d_in wide on feed-forward targets, d_out wide otherwise.

    Formula: Σ_targets (d_in if feed-forward else d_out).
    Source: Liu et al. 2022 (arXiv:2205.05638) §3.3 (l_k, l_v, l_ff); shapes from peft 0.21.2 tuners/ia3/layer.py
      (ia3_l is (1, in_features) when is_feedforward, else (out_features, 1)).
    Assumes: feed-forward membership is peft's plain `key.endswith(name)` (no '.' boundary), as in IA3Model.
    """
    names, feedforward = _ia3_names(spec, method)
    hits: list[_Hit] = []
    used: set[str] = set()
    scaled_inputs: set[str] = set()
    for key, site in _model_sites(spec):
        matched = _matching(key, names) if site.kind != "parameter" else set()  # parameters are no module keys
        if matched and site.kind != "linear":
            raise _problem("target_modules", f"{sorted(matched)} select {key}, which peft's IA3 cannot adapt")
        if matched:
            used |= matched
            is_feedforward = any(key.endswith(name) for name in feedforward)
            hits.append(_Hit(site, 0, site.d_in if is_feedforward else site.d_out))
            if is_feedforward:
                scaled_inputs.update(site.planner_names)
    unmatched = sorted(names - used) if method.target_modules is not None else []
    if not hits:
        raise _problem("target_modules", _unmatched_message(spec, unmatched))
    result = _summarize(spec, hits, lora=False, unmatched=tuple(unmatched))
    return result.model_copy(update={"ia3_feedforward": frozenset(scaled_inputs)})


# --- results ------------------------------------------------------------------------------------------------


def _summarize(spec: ModelSpec, hits: list[_Hit], lora: bool, unmatched: tuple[str, ...] = ()) -> TrainableParams:
    """Group adapted sites into PeftModules (one per name and shape) and collect their planner names."""
    groups: dict[tuple[str, int, int, int], list[int]] = {}
    targets: set[str] = set()
    for hit in hits:
        site = hit.site
        groups.setdefault((site.name, site.d_in, site.d_out, hit.rank), []).append(hit.params)
        targets.update(site.planner_names)
    modules = tuple(
        PeftModule(name=name, d_in=d_in, d_out=d_out, rank=rank, per_layer=1, layers=len(v), trainable_params=sum(v))
        for (name, d_in, d_out, rank), v in groups.items()
    )
    result = _result(spec, modules, lora_targets=targets if lora else set(), ia3_targets=set() if lora else targets)
    return result.model_copy(update={"unmatched_targets": unmatched})


def _result(
    spec: ModelSpec,
    modules: tuple[PeftModule, ...],
    lora_targets: set[str] | None = None,
    ia3_targets: set[str] | None = None,
) -> TrainableParams:
    return TrainableParams(
        trainable=sum(m.trainable_params for m in modules),
        base_params=count_params(spec).total,
        modules=modules,
        lora_targets=frozenset(lora_targets or ()),
        ia3_targets=frozenset(ia3_targets or ()),
    )


# --- prompt learning and adapters -----------------------------------------------------------------------------


def prefix_token_dim(spec: ModelSpec) -> int:
    """Width of one layer's prefix key (or value) per virtual token, as peft sizes it: d_h·n_kv.

    Source: peft 0.21.2 utils/other.py `_prepare_prompt_learning_config` (GQA, peft PR #1901): token_dim =
      config.head_dim·num_key_value_heads, head_dim defaulting to h / n_h. DeepSeek configs set head_dim =
      qk_rope_head_dim, so for MLA this is d_rope·n_h, which matches no cached K/V shape. GPT-2, GPT-NeoX and
      Falcon configs have no num_key_value_heads: peft then sizes the prefix hidden_size = n_h·d_h wide (Falcon
      caches n_h heads with new_decoder_architecture, which broadcasts its n_kv K/V heads before the cache).
    """
    if spec.family in NO_KV_HEADS_KEY:
        return spec.hidden_size
    if spec.mla is not None:
        return spec.mla.qk_rope_head_dim * spec.kv_heads
    return spec.resolved_head_dim * spec.kv_heads


def _prefix_params(spec: ModelSpec, method: PrefixTuningSpec) -> TrainableParams:
    """Prefix tuning: n·L·2·t trained directly, or an MLP n×t → t×e → e×(L·2·t) that produces them.

    Formula: no projection: n·L·2·t; projection: n·t + (t·e + e) + (e·L·2·t + L·2·t), t = d_h·n_kv, e = encoder
      hidden size (peft default: t).
    Source: Li & Liang 2021 (arXiv:2101.00190) §4.3; peft 0.21.2 tuners/prefix_tuning/model.py PrefixEncoder.
    Assumes: a causal LM (one transformer submodule); not MLA, nor multi-query Falcon, where peft builds a prefix
      the forward rejects.
    """
    n, layers, t = method.num_virtual_tokens, spec.num_layers, prefix_token_dim(spec)
    if spec.family == "falcon" and spec.kv_heads == 1 < spec.num_heads:
        raise _problem(
            "kind",
            f"prefix tuning cannot run on multi-query Falcon (the Falcon-7B layout): peft 0.21.2 sizes each layer's "
            f"prefix hidden_size = {t} wide, n_h = {spec.num_heads} heads, while FalconAttention caches one K/V head, "
            "and the first forward fails",
        )
    if spec.mla is not None:
        raise _problem(
            "kind",
            f"prefix tuning cannot run on MLA attention: peft 0.21.2 sizes each layer's prefix as head_dim·n_kv = "
            f"qk_rope_head_dim·n_h = {t} per virtual token, which matches neither MLA's keys nor its values, and "
            "the first forward fails",
        )
    kv_width = layers * KEY_AND_VALUE * t
    if not method.prefix_projection:
        prefix = PeftModule(
            name="prefix_encoder",
            d_in=n,
            d_out=t,
            per_layer=KEY_AND_VALUE,
            layers=layers,
            trainable_params=n * kv_width,
        )
        return _result(spec, (prefix,))
    e = method.encoder_hidden_size or t

    def model_level(name: str, d_in: int, d_out: int, params: int) -> PeftModule:
        return PeftModule(name=name, d_in=d_in, d_out=d_out, per_layer=1, layers=1, trainable_params=params)

    return _result(
        spec,
        (
            model_level("prefix_encoder.embedding", n, t, n * t),
            model_level("prefix_encoder.transform.0", t, e, t * e + e),
            model_level("prefix_encoder.transform.2", e, kv_width, e * kv_width + kv_width),
        ),
    )


def _prompt_params(spec: ModelSpec, method: PromptTuningSpec) -> TrainableParams:
    """Prompt tuning: n soft-prompt embeddings of width h.

    Formula: n·h.
    Source: Lester et al. 2021 (arXiv:2104.08691) §2; peft 0.21.2 tuners/prompt_tuning/model.py PromptEmbedding
      (num_virtual_tokens·num_transformer_submodules rows of token_dim = hidden_size).
    Assumes: a causal LM (num_transformer_submodules = 1).
    """
    n, h = method.num_virtual_tokens, spec.hidden_size
    prompt = PeftModule(name="prompt_embeddings", d_in=n, d_out=h, per_layer=1, layers=1, trainable_params=n * h)
    return _result(spec, (prompt,))


def _adapter_params(spec: ModelSpec, method: AdapterSpec) -> TrainableParams:
    """Houlsby adapters: two bottlenecks per layer, each down h→m and up m→h with biases.

    Formula: L·2·(2·h·m + m + h).
    Source: Houlsby et al. 2019 (arXiv:1902.00751) §2.1 and Figure 2 (2md + d + m per adapter).
    Assumes: only the adapter weights train; the paper also trains the layer norms, and peft has no such method.
    """
    h, m, layers = spec.hidden_size, method.bottleneck, spec.num_layers
    per_adapter = 2 * h * m + m + h
    adapter = PeftModule(
        name="adapter",
        d_in=h,
        d_out=m,
        per_layer=HOULSBY_ADAPTERS_PER_LAYER,
        layers=layers,
        trainable_params=layers * HOULSBY_ADAPTERS_PER_LAYER * per_adapter,
    )
    return _result(spec, (adapter,))


@lru_cache(maxsize=1024)
def block_trainable_params(spec: ModelSpec, trainable: TrainableParams, moe_layer: bool) -> int:
    """Trainable parameters peft gives one decoder block of a kind (dense or MoE): Σ over the adapted modules that
    block's sites hold of their share per layer (each module groups one name and shape, alike in its layers).
    Formula: Σ_{modules in the block} trainable_params / layers."""
    sites = {(site.name, site.d_in, site.d_out) for site in _block_sites(spec, moe_layer)}
    return sum(m.trainable_params // m.layers for m in trainable.modules if (m.name, m.d_in, m.d_out) in sites)


def trainable_params(spec: ModelSpec, method: MethodSpec) -> TrainableParams:
    """Parameters `method` trains on `spec`, per module, exactly as peft 0.21.2 builds it (full FT: every one).

    Raises SpecError (loc training.method.<field>) where peft refuses the configuration, where a given target name
    matches nothing, and for prefix tuning on MLA.
    """
    if isinstance(method, FullFineTune):
        total = count_params(spec).total
        return TrainableParams(
            trainable=total, base_params=total, modules=(), lora_targets=frozenset(), ia3_targets=frozenset()
        )
    if isinstance(method, LoRASpec):  # QLoRASpec too
        return _lora_params(spec, method)
    if isinstance(method, IA3Spec):
        return _ia3_params(spec, method)
    if isinstance(method, PrefixTuningSpec):
        return _prefix_params(spec, method)
    if isinstance(method, PromptTuningSpec):
        return _prompt_params(spec, method)
    return _adapter_params(spec, method)
