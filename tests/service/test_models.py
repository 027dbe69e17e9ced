from __future__ import annotations

from fastapi.testclient import TestClient

from planner import CatalogModel, load_catalog
from planner.model.describe import ImportDescription
from service.examples import IMPORT_EXAMPLES, QWEN2_5_0_5B_CONFIG
from tests.planner.hf_configs import PUBLISHED_CONFIGS


def test_lists_every_catalog_model(client: TestClient) -> None:
    response = client.get("/v1/models")
    assert response.status_code == 200
    models = [CatalogModel.model_validate(m) for m in response.json()]
    assert [m.id for m in models] == [m.id for m in load_catalog().models]
    assert all(m.params.total > 0 and m.kv_cache_bytes_per_token_bf16 > 0 for m in models)


def test_one_model_with_config_and_sources(client: TestClient) -> None:
    response = client.get("/v1/models/llama-3-8b")
    assert response.status_code == 200
    model = CatalogModel.model_validate(response.json())
    assert model == load_catalog().model("llama-3-8b")
    assert model.config["model_type"] == "llama"
    assert model.sources
    # Llama-3-8B: 8,030,261,248 parameters (transformers sum of numel; the model card says 8B).
    assert model.params.total == 8_030_261_248


def test_model_ids_are_case_insensitive(client: TestClient) -> None:
    assert client.get("/v1/models/Llama-3-8B").json()["id"] == "llama-3-8b"


def test_unknown_model_is_404_listing_known_ids(client: TestClient) -> None:
    response = client.get("/v1/models/gpt-9")
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert detail.startswith("unknown model id 'gpt-9'; known: ")
    assert "llama-3-8b" in detail


def test_import_qwen2_5_0_5b(client: TestClient) -> None:
    response = client.post("/v1/models/import", json=QWEN2_5_0_5B_CONFIG)
    assert response.status_code == 200
    d = ImportDescription.model_validate(response.json())
    assert (d.family, d.exact, d.checkpoint_dtype) == ("qwen2", True, "bfloat16")
    assert (d.spec.num_layers, d.spec.num_kv_heads, d.spec.qkv_bias, d.spec.tie_embeddings) == (24, 2, True, True)
    # transformers 5.23 AutoModelForCausalLM.from_config(...) on the meta device: sum(numel) = 494,032,768
    # (V·h = 136,134,656 tied; 24 layers × 14,912,384; final norm 896).
    assert d.params.total == 494_032_768
    # GQA: 2 · L · n_kv · d_h · b = 2 · 24 · 2 · 64 · b  → 12,288 B in bf16, 6,144 B in fp8.
    assert [(kv.kv_cache_dtype, kv.mla_layout, kv.bytes) for kv in d.kv_bytes_per_token] == [
        ("bf16", None, 12_288),
        ("fp8", None, 6_144),
    ]


def test_import_mla_reports_both_cache_layouts(client: TestClient) -> None:
    response = client.post("/v1/models/import", json=IMPORT_EXAMPLES["deepseek_v2_lite_mla"]["value"])
    assert response.status_code == 200
    d = ImportDescription.model_validate(response.json())
    assert d.spec.attention_kind == "MLA"
    # transformers 5.23 from_config on the meta device: 15,706,484,224 parameters (DeepSeek-V2-Lite: "15.7B").
    assert d.params.total == 15_706_484_224
    # latent: L·(d_c + d_R)·b = 27 · (512 + 64) · b; expanded: L·n_h·(d_nope + d_R + d_v)·b = 27 · 16 · 320 · b
    assert {(kv.kv_cache_dtype, kv.mla_layout): kv.bytes for kv in d.kv_bytes_per_token} == {
        ("bf16", "mla_latent"): 31_104,
        ("bf16", "mla_expanded"): 276_480,
        ("fp8", "mla_latent"): 15_552,
        ("fp8", "mla_expanded"): 138_240,
    }


def test_import_keeps_unknown_keys_and_warns_on_unknown_family(client: TestClient) -> None:
    config = {**QWEN2_5_0_5B_CONFIG, "model_type": "my_llama", "rope_scaling": {"type": "yarn", "factor": 4.0}}
    response = client.post("/v1/models/import", json=config)
    assert response.status_code == 200
    assert response.json()["exact"] is False
    assert "my_llama" in response.json()["warnings"][0]


def test_import_suggests_the_checkpoint_weight_format(client: TestClient) -> None:
    config = {**QWEN2_5_0_5B_CONFIG, "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}}
    body = client.post("/v1/models/import", json=config).json()
    assert (body["suggested_weight_format"], body["suggested_quant_group_size"]) == ("int4_awq", 128)


def test_import_gpt2_by_its_own_keys(client: TestClient) -> None:
    # GPT-2's config.json names its dimensions n_embd / n_layer / n_head / n_positions: before the GPT-style families
    # this was a 422 (hidden_size, num_hidden_layers, num_attention_heads missing); now it imports exactly.
    _, config = PUBLISHED_CONFIGS["openai-community/gpt2"]
    response = client.post("/v1/models/import", json=config)
    assert response.status_code == 200
    d = ImportDescription.model_validate(response.json())
    assert (d.family, d.exact, d.warnings) == ("gpt2", True, ())
    assert (d.spec.hidden_size, d.spec.num_layers, d.spec.max_context, d.spec.tie_embeddings) == (768, 12, 1024, True)
    # GPT2LMHeadModel: 124,439,808 parameters (tied; wte 38,597,376 + wpe 786,432 + 12 blocks + ln_f)
    assert d.params.total == 124_439_808
    # MHA: 2 · L · n_h · d_h · b = 2 · 12 · 768 · 2 B
    assert [(kv.kv_cache_dtype, kv.bytes) for kv in d.kv_bytes_per_token] == [("bf16", 36_864), ("fp8", 18_432)]
