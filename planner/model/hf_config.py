"""The fields of a Hugging Face `config.json` that memplan reads, validated; every other field is ignored."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field

from planner._base import StrictScalars

__all__ = ["HF_FIELD_OF_SPEC", "HFConfig"]

Dim = Annotated[int, Field(ge=1, le=16_777_216)]
Small = Annotated[int, Field(ge=0, le=16_384)]
LayerId = Annotated[int, Field(ge=0, le=1023)]


class HFConfig(StrictScalars):
    """A `config.json` as saved by transformers. Unused keys are accepted and ignored."""

    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        serialize_by_alias=True,
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "model_type": "llama",
                    "hidden_size": 4096,
                    "intermediate_size": 14336,
                    "num_hidden_layers": 32,
                    "num_attention_heads": 32,
                    "num_key_value_heads": 8,
                    "vocab_size": 128256,
                    "max_position_embeddings": 8192,
                    "tie_word_embeddings": False,
                    "torch_dtype": "bfloat16",
                }
            ]
        },
    )

    model_type: str | None = Field(default=None, max_length=64)
    name_or_path: str | None = Field(default=None, alias="_name_or_path", max_length=300)
    architectures: list[Annotated[str, Field(max_length=128)]] | None = Field(default=None, max_length=16)
    torch_dtype: str | None = Field(default=None, max_length=32)
    dtype: str | None = Field(default=None, max_length=32)

    vocab_size: Dim | None = None
    hidden_size: Dim | None = None
    intermediate_size: Dim | None = None
    num_hidden_layers: Annotated[int, Field(ge=1, le=1024)] | None = None
    num_attention_heads: Annotated[int, Field(ge=1, le=16_384)] | None = None
    num_key_value_heads: Annotated[int, Field(ge=1, le=16_384)] | None = None
    head_dim: Dim | None = None
    max_position_embeddings: Annotated[int, Field(ge=1, le=1 << 30)] | None = None
    tie_word_embeddings: bool | None = None
    attention_bias: bool | None = None
    qkv_bias: bool | None = None
    mlp_bias: bool | None = None

    sliding_window: Annotated[int, Field(ge=0, le=1 << 30)] | None = None
    use_sliding_window: bool | None = None
    max_window_layers: Annotated[int, Field(ge=0, le=1024)] | None = None
    layer_types: list[Annotated[str, Field(max_length=64)]] | None = Field(default=None, max_length=1024)
    sliding_window_pattern: Annotated[int, Field(ge=1, le=1024)] | None = None
    no_rope_layers: list[Annotated[int, Field(ge=0, le=1)]] | None = Field(default=None, max_length=1024)
    no_rope_layer_interval: Annotated[int, Field(ge=1, le=1024)] | None = None
    use_bidirectional_attention: bool | None = None

    num_local_experts: Small | None = None
    num_experts: Small | None = None
    n_routed_experts: Small | None = None
    num_experts_per_tok: Small | None = None
    experts_per_token: Small | None = None  # gpt-oss publishes it beside num_experts_per_tok; transformers ignores it
    n_shared_experts: Small | None = None
    moe_intermediate_size: Dim | None = None
    shared_expert_intermediate_size: Annotated[int, Field(ge=0, le=16_777_216)] | None = None
    decoder_sparse_step: Annotated[int, Field(ge=1, le=1024)] | None = None
    mlp_only_layers: list[LayerId] | None = Field(default=None, max_length=1024)
    first_k_dense_replace: Annotated[int, Field(ge=0, le=1024)] | None = None
    moe_layer_freq: Annotated[int, Field(ge=1, le=1024)] | None = None
    norm_topk_prob: bool | None = None

    q_lora_rank: Dim | None = None
    kv_lora_rank: Dim | None = None
    qk_nope_head_dim: Dim | None = None
    qk_rope_head_dim: Dim | None = None
    v_head_dim: Dim | None = None
    num_nextn_predict_layers: Annotated[int, Field(ge=0, le=64)] | None = None
    use_mtp: bool | None = None  # MiniMax-M2 multi-token prediction, not built by transformers
    num_mtp_modules: Annotated[int, Field(ge=0, le=64)] | None = None
    use_qk_norm: bool | None = None
    qk_norm_type: str | None = Field(default=None, max_length=32)
    shared_intermediate_size: Annotated[int, Field(ge=0, le=16_777_216)] | None = None

    # GPT-2 (GPT2Config.attribute_map: hidden_size n_embd, num_hidden_layers n_layer, num_attention_heads n_head,
    # max_position_embeddings n_positions; n_inner the FFN width, null = 4·h)
    n_embd: Dim | None = None
    n_layer: Annotated[int, Field(ge=1, le=1024)] | None = None
    n_head: Annotated[int, Field(ge=1, le=16_384)] | None = None
    n_positions: Annotated[int, Field(ge=1, le=1 << 30)] | None = None
    n_inner: Dim | None = None
    add_cross_attention: bool | None = None
    # Falcon (FalconConfig: n_embed is its legacy hidden_size; ffn_hidden_size null = 4·h)
    n_embed: Dim | None = None
    num_kv_heads: Annotated[int, Field(ge=1, le=16_384)] | None = None
    ffn_hidden_size: Dim | None = None
    multi_query: bool | None = None
    new_decoder_architecture: bool | None = None
    parallel_attn: bool | None = None
    num_ln_in_parallel_attn: Annotated[int, Field(ge=1, le=2)] | None = None
    bias: bool | None = None
    alibi: bool | None = None
    # StarCoder2: one flag for every linear's bias
    use_bias: bool | None = None
    # GPT-NeoX partial rotary: rotary_pct, or partial_rotary_factor inside rope_parameters (transformers 5 saves it so)
    rotary_pct: Annotated[float, Field(gt=0, le=1)] | None = None
    rope_parameters: dict[str, Any] | None = None

    text_config: dict[str, Any] | None = Field(
        default=None, description="A vision-language model's language model; read in place of the top level."
    )

    quantization_config: dict[str, Any] | None = None

    def given(self, key: str) -> bool:
        """True when config.json holds `key` (an explicit null counts: it overrides the family default)."""
        return key in self.model_fields_set

    def value(self, key: str, default: Any) -> Any:
        """The config's value for `key` when given (null included), else the family default."""
        return getattr(self, key) if self.given(key) else default


# Where a ModelSpec field comes from in config.json, to report errors against the user's own keys.
HF_FIELD_OF_SPEC: dict[str, str] = {
    "num_layers": "num_hidden_layers",
    "hidden_size": "hidden_size",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "ffn_dim": "intermediate_size",
    "vocab_size": "vocab_size",
    "max_context": "max_position_embeddings",
    "sliding_window": "sliding_window",
    "sliding_window_layers": "layer_types",
    "experts_per_token": "num_experts_per_tok",
    "num_experts": "num_experts",
    "expert_ffn_dim": "moe_intermediate_size",
    "first_dense_layers": "first_k_dense_replace",
    "dense_layer_ids": "mlp_only_layers",
    "renormalize_top_k": "norm_topk_prob",
    "kv_lora_rank": "kv_lora_rank",
    "q_lora_rank": "q_lora_rank",
}
