"""benchmarks/inferencex_settings.json and its loader: shape, provenance, and values read from InferenceX scripts."""

from __future__ import annotations

import json

import pytest

from benchmarks import inferencex_settings as ix


@pytest.fixture(scope="module")
def rows() -> dict[str, dict[str, str]]:
    return {row["id"]: row for row in ix.load_rows()}


def test_file_parses_and_has_provenance() -> None:
    with open(ix.SETTINGS_FILE) as f:
        doc = json.load(f)
    assert doc["description"]
    assert doc["provenance"]["repository"].startswith("https://github.com/SemiAnalysisAI/InferenceX")
    assert set(doc["allowed_settings"]) == ix.ALLOWED_SETTINGS
    assert doc["entries"]


def test_every_entry_has_a_source_and_known_keys() -> None:
    for entry in ix.entries():
        source = entry["source"]
        assert len(source["commit"]) >= 7 and all(c in "0123456789abcdef" for c in source["commit"])
        assert source["path"].startswith("benchmarks/") and source["path"].endswith(".sh")
        assert source["date"][:4] in ("2025", "2026")
        assert set(entry["settings"]) <= ix.ALLOWED_SETTINGS, entry["settings"]
        assert set(entry["match"]) <= ix.MATCH_KEYS, entry["match"]
        assert {"system", "backend", "model_path"} <= set(entry["match"])
        assert isinstance(entry["unmodelled"], dict)


def test_formulas_evaluate() -> None:
    names = {"CONC": 64, "ISL": 1024, "OSL": 1024, "TP": 8, "DP": 1}
    for entry in ix.entries():
        for value in entry["settings"].values():
            assert isinstance(ix.resolve(value, names), (int, float, str, bool))
    assert ix.evaluate("max(8192, (CONC + ISL + 64 + 63) // 64 * 64)", names) == 8192
    with pytest.raises(ValueError):
        ix.evaluate("__import__('os')", names)


def test_every_h100_h200_agg_inferencex_row_matches(rows: dict[str, dict[str, str]]) -> None:
    missing = [
        rid
        for rid, row in rows.items()
        if row["system"] in ("h100_sxm", "h200_sxm")
        and row["mode"] == "agg"
        and ix.is_inferencex(row)
        and ix.settings_for(row) is None
    ]
    assert missing == []


def test_users_sweeps_resolve_to_none(rows: dict[str, dict[str, str]]) -> None:
    users = [row for row in rows.values() if row["silicon_data_source"].startswith("source_file=/Users")]
    assert users
    assert all(ix.settings_for(row) is None for row in users)
    rid = "qwen_qwen3_235b_a22b_fp8_qwen_qwen3_235b_a22b_fp8_h200_sxm_sglang_agg_1000x100_c8_tp4_epnone_1"
    assert ix.settings_for(rows[rid]) is None


def test_llama70b_trt_batch_waiting_only_for_1k1k_below_tp8(rows: dict[str, dict[str, str]]) -> None:
    # benchmarks/70b_fp8_h200_trt_slurm.sh @ 9596d23d7: --max_num_tokens 16384; batch waiting for 1k/1k, TP < 8
    settings, unmodelled, source = ix.settings_for(
        rows["2026_04_06_llama_3_1_70b_h200_sxm_trtllm_fp8_agg_1024x1024_c64_tp2_ep1_582"]
    )
    assert settings == {
        "max_num_batched_tokens": 16384,
        "kv_cache_dtype": "fp8",
        "batch_wait_timeout_iters": 20,
        "batch_wait_max_tokens_ratio": 0.9,
    }
    assert unmodelled["stream_interval"] == 10
    assert "9596d23d7" in source and "70b_fp8_h200_trt_slurm.sh" in source
    settings, _, _ = ix.settings_for(rows["2026_04_06_llama_3_1_70b_h200_sxm_trtllm_fp8_agg_1024x1024_c64_tp8_ep1_645"])
    assert settings == {"max_num_batched_tokens": 16384, "kv_cache_dtype": "fp8"}


def test_llama70b_vllm_max_num_seqs_is_conc(rows: dict[str, dict[str, str]]) -> None:
    settings, unmodelled, _ = ix.settings_for(
        rows["2026_04_06_llama_3_1_70b_h100_sxm_vllm_fp8_agg_8192x1024_c32_tp4_ep1_750"]
    )
    assert settings == {
        "max_num_seqs": 32,
        "max_num_batched_tokens": 8192,
        "gpu_memory_utilization": 0.9,
        "kv_cache_dtype": "fp8",
    }
    assert unmodelled["async_scheduling"] is True


def test_dsr1_sglang_h200(rows: dict[str, dict[str, str]]) -> None:
    # benchmarks/single_node/dsr1_fp8_h200.sh: 1k/1k runs 512 requests, the others 256
    settings, unmodelled, _ = ix.settings_for(
        rows["2026_03_25_deepseek_r1_h200_sxm_sglang_fp8_agg_1024x1024_c64_tp8_0_ep1_0_256"]
    )
    assert settings == {
        "max_num_seqs": 512,
        "max_num_batched_tokens": 32768,
        "mem_fraction_static": 0.82,
        "kv_cache_dtype": "bf16",
    }
    assert unmodelled["max_prefill_tokens"] == 32768
    assert unmodelled["cuda_graph_max_bs"] == 512
    settings, unmodelled, _ = ix.settings_for(
        rows["2026_03_25_deepseek_r1_h200_sxm_sglang_fp8_agg_8192x1024_c64_tp8_0_ep1_0_305"]
    )
    assert settings["max_num_seqs"] == 256 and unmodelled["cuda_graph_max_bs"] == 256


def test_dsr1_trt_max_num_tokens_formula(rows: dict[str, dict[str, str]]) -> None:
    # 2025-11-02: MAX_NUM_TOKENS = (CONC + ISL + 64 + 63) / 64 * 64, no floor yet; DP attention for 8k/1k above CONC 32
    settings, unmodelled, _ = ix.settings_for(rows["dsr1_h200_trtllm_fp8_agg_8192x1024_c64_cfg83"])
    assert settings == {"max_num_batched_tokens": 8320, "kv_cache_dtype": "fp8", "free_gpu_memory_fraction": 0.75}
    assert unmodelled["enable_attention_dp"] is True
    # 2026-01-28 non-MTP: floored at 8192
    settings, unmodelled, _ = ix.settings_for(
        rows["2026_03_25_deepseek_r1_h200_sxm_trtllm_fp8_agg_1024x8192_c64_tp8_0_ep8_0_1240"]
    )
    assert settings["max_num_batched_tokens"] == 8192
    assert "speculative_config" not in unmodelled


def test_dsr1_trt_mtp_rows(rows: dict[str, dict[str, str]]) -> None:
    # 2026-01-14 (#392): MTP, max_batch_size CONC, max_num_tokens ((MTP+1) * CONC + ISL + 127) / 64 * 64 with MTP 3
    settings, unmodelled, source = ix.settings_for(
        rows["2026_03_25_deepseek_r1_h200_sxm_trtllm_fp8_agg_1024x1024_c32_tp8_0_ep8_0_1255"]
    )
    assert settings["max_num_seqs"] == 32
    assert settings["max_num_batched_tokens"] == 1216
    assert unmodelled["speculative_config"]["num_nextn_predict_layers"] == 3
    assert "bf3456727" in source
    # attention DP: max_batch_size CONC / 8 per rank, MTP 1
    settings, unmodelled, _ = ix.settings_for(
        rows["2026_03_25_deepseek_r1_h200_sxm_trtllm_fp8_agg_8192x1024_c256_tp8_0_ep8_0_1251"]
    )
    assert settings["max_num_seqs"] == 32
    assert settings["max_num_batched_tokens"] == 8320
    assert unmodelled["speculative_config"]["num_nextn_predict_layers"] == 1


def test_gptoss_trt_max_batch_size_is_conc(rows: dict[str, dict[str, str]]) -> None:
    settings, unmodelled, _ = ix.settings_for(
        rows["2026_04_06_gpt_oss_120b_h200_sxm_trtllm_fp4_agg_1024x1024_c32_tp4_ep4_985"]
    )
    assert settings == {
        "max_num_seqs": 32,
        "max_num_batched_tokens": 20000,
        "free_gpu_memory_fraction": 0.85,
        "kv_cache_dtype": "bf16",
    }
    assert unmodelled["moe_config.backend"] == "TRITON"


def test_minimax_h200_prefix_caching_by_date(rows: dict[str, dict[str, str]]) -> None:
    settings, unmodelled, source = ix.settings_for(rows["minimaxm2_5_h200_vllm_fp8_agg_1024x1024_c128_cfg637"])
    assert settings == {"gpu_memory_utilization": 0.95, "kv_cache_dtype": "bf16"}
    assert unmodelled["enable_prefix_caching"] is False
    assert "0f78cf4eb" in source


def test_undated_gap_analysis_row(rows: dict[str, dict[str, str]]) -> None:
    rid = "qwen3_5_397b_gap_analysis_qwen3_5_397b_gap_analysis_h200_sxm_sglang_fp8_agg_1024x1024_c8_tp8_ep8_63"
    settings, unmodelled, _ = ix.settings_for(rows[rid])
    assert settings == {
        "max_num_seqs": 128,
        "max_num_batched_tokens": 16384,
        "mem_fraction_static": 0.8,
        "kv_cache_dtype": "fp8",
    }
    assert unmodelled["cuda_graph_max_bs"] == "CONC"


def test_coverage_summary_runs(capsys: pytest.CaptureFixture[str]) -> None:
    ix.main(["h200_sxm"])
    out = capsys.readouterr().out
    assert "h200_sxm" in out and "total" in out


# b200_sxm agg InferenceX rows not yet covered, by (backend, model_path, precision, measured date): the launch
# scripts of these runs were not yet read. Each group lists the script and run that would cover it.
B200_NOT_YET_READ = {
    ("sglang", "Qwen/Qwen3.5-397B-A17B", "bf16", "2026-02-20"): "benchmarks/qwen3.5_bf16_b200.sh",
    ("sglang", "Qwen/Qwen3.5-397B-A17B", "bf16", "2026-03-09"): "benchmarks/single_node/qwen3.5_bf16_b200.sh",
    ("sglang", "Qwen/Qwen3.5-397B-A17B", "bf16", "undated"): "qwen3.5-397b-gap-analysis.csv: run not pinned",
    ("sglang", "Qwen/Qwen3.5-397B-A17B", "fp4", "2026-04-08"): "benchmarks/single_node/qwen3.5_fp4_b200.sh",
    ("sglang", "Qwen/Qwen3.5-397B-A17B", "fp8", "2026-03-03"): "benchmarks/single_node/qwen3.5_fp8_b200.sh",
    ("sglang", "Qwen/Qwen3.5-397B-A17B", "fp8", "2026-03-20"): "qwen3.5_fp8_b200.sh and _mtp.sh (MTP config ran)",
    ("sglang", "Qwen/Qwen3.5-397B-A17B", "fp8", "2026-03-24"): "qwen3.5_fp8_b200.sh and _mtp.sh (MTP config ran)",
    ("sglang", "Qwen/Qwen3.5-397B-A17B", "fp8", "undated"): "qwen3.5-397b-gap-analysis.csv: run not pinned",
    ("sglang", "deepseek-ai/DeepSeek-R1", "fp4", "2025-11-02"): "benchmarks/dsr1_fp4_b200_docker.sh (--enable-ep-moe)",
    ("sglang", "deepseek-ai/DeepSeek-R1", "fp4", "2025-11-10"): "benchmarks/dsr1_fp4_b200_docker.sh @ d8fe8f73e",
    ("sglang", "deepseek-ai/DeepSeek-R1", "fp8", "2025-11-18"): "benchmarks/dsr1_fp8_b200_docker.sh",
    ("sglang", "deepseek-ai/DeepSeek-R1", "fp8", "2025-12-31"): "benchmarks/dsr1_fp8_b200*.sh",
    ("sglang", "deepseek-ai/DeepSeek-V3", "fp4", "2025-11-02"): "benchmarks/dsr1_fp4_b200_docker.sh (--enable-ep-moe)",
    ("sglang", "deepseek-ai/DeepSeek-V3", "fp4", "2025-11-10"): "benchmarks/dsr1_fp4_b200_docker.sh @ d8fe8f73e",
    ("sglang", "deepseek-ai/DeepSeek-V3", "fp8", "2025-11-18"): "benchmarks/dsr1_fp8_b200_docker.sh",
    ("sglang", "zhipuai/GLM-5", "fp4", "2026-03-29"): "benchmarks/single_node/glm5_fp4_b200.sh",
    ("sglang", "zhipuai/GLM-5", "fp8", "2026-03-20"): "benchmarks/single_node/glm5_fp8_b200.sh",
    (
        "trtllm",
        "deepseek-ai/DeepSeek-R1",
        "fp4",
        "2025-11-02",
    ): "dsr1_fp4_b200_trt_slurm.sh: EP/DP set inside the script",
    ("trtllm", "deepseek-ai/DeepSeek-R1", "fp4", "2025-12-15"): "benchmarks/dsr1_fp4_b200_trt*.sh",
    ("trtllm", "deepseek-ai/DeepSeek-R1", "fp4", "2026-01-14"): "dsr1_fp4_b200_trt.sh and _trt_mtp.sh (MTP)",
    ("trtllm", "deepseek-ai/DeepSeek-R1", "fp4", "2026-02-03"): "dsr1_fp4_b200_trt.sh and _trt_mtp.sh (MTP)",
    ("trtllm", "deepseek-ai/DeepSeek-R1", "fp4", "2026-02-06"): "dsr1_fp4_b200_trt.sh and _trt_mtp.sh (MTP)",
    ("trtllm", "deepseek-ai/DeepSeek-R1", "fp8", "2025-12-15"): "benchmarks/dsr1_fp8_b200_trt*.sh",
    ("trtllm", "deepseek-ai/DeepSeek-R1", "fp8", "2026-01-14"): "dsr1_fp8_b200_trt.sh and _trt_mtp.sh (MTP)",
    ("trtllm", "deepseek-ai/DeepSeek-R1", "fp8", "2026-01-29"): "dsr1_fp8_b200_trt.sh and _trt_mtp.sh (MTP)",
    ("trtllm", "deepseek-ai/DeepSeek-R1", "fp8", "2026-02-05"): "dsr1_fp8_b200_trt.sh and _trt_mtp.sh (MTP)",
    (
        "trtllm",
        "deepseek-ai/DeepSeek-V3",
        "fp4",
        "2025-11-02",
    ): "dsr1_fp4_b200_trt_slurm.sh: EP/DP set inside the script",
    ("trtllm", "deepseek-ai/DeepSeek-V3", "fp4", "2026-02-03"): "dsr1_fp4_b200_trt.sh and _trt_mtp.sh (MTP)",
    ("trtllm", "deepseek-ai/DeepSeek-V3", "fp8", "2025-11-02"): "benchmarks/dsr1_fp8_b200_trt_slurm.sh",
    ("trtllm", "deepseek-ai/DeepSeek-V3", "fp8", "2025-12-15"): "benchmarks/dsr1_fp8_b200_trt*.sh",
    ("trtllm", "deepseek-ai/DeepSeek-V3", "fp8", "2026-01-29"): "dsr1_fp8_b200_trt.sh and _trt_mtp.sh (MTP)",
    ("vllm", "MiniMaxAI/MiniMax-M2.5", "fp4", "2026-04-03"): "wip nightly-image run of PR #996 before its merge",
}


def test_every_b200_agg_inferencex_row_matches_or_is_listed(rows: dict[str, dict[str, str]]) -> None:
    missing = {
        (row["backend"], row["model_path"], row["precision"], ix.measured_date(row) or "undated")
        for row in rows.values()
        if row["system"] == "b200_sxm"
        and row["mode"] == "agg"
        and ix.is_inferencex(row)
        and ix.settings_for(row) is None
    }
    assert missing <= set(B200_NOT_YET_READ), sorted(missing - set(B200_NOT_YET_READ))
    # a group that became covered must leave the list
    assert set(B200_NOT_YET_READ) <= missing, sorted(set(B200_NOT_YET_READ) - missing)


def test_b200_llama70b(rows: dict[str, dict[str, str]]) -> None:
    # benchmarks/70b_fp4_b200_trt_slurm.sh @ 9596d23d7: batch waiting for 1k/1k below TP 8
    settings, unmodelled, source = ix.settings_for(
        rows["2026_04_06_llama_3_1_70b_b200_sxm_trtllm_fp4_agg_1024x1024_c8_tp2_ep1_257"]
    )
    assert settings == {
        "max_num_batched_tokens": 16384,
        "kv_cache_dtype": "fp8",
        "batch_wait_timeout_iters": 20,
        "batch_wait_max_tokens_ratio": 0.9,
    }
    assert "1.1.0rc2.post2" in unmodelled["image"] and "70b_fp4_b200_trt_slurm.sh" in source
    # benchmarks/70b_fp8_b200_docker.sh @ 4b860b78e: a fixed --max-num-seqs 512, not CONC
    settings, unmodelled, source = ix.settings_for(
        rows["2026_04_06_llama_3_1_70b_b200_sxm_vllm_fp8_agg_1024x1024_c8_tp4_ep1_259"]
    )
    assert settings == {
        "max_num_seqs": 512,
        "max_num_batched_tokens": 8192,
        "gpu_memory_utilization": 0.9,
        "kv_cache_dtype": "fp8",
    }
    assert unmodelled["async_scheduling"] is True and "4b860b78e" in source


def test_b200_gptoss_vllm_kv_dtype_by_date(rows: dict[str, dict[str, str]]) -> None:
    settings, unmodelled, source = ix.settings_for(
        rows["2026_04_06_gpt_oss_120b_b200_sxm_vllm_fp4_agg_8192x1024_c16_tp1_ep1_141"]
    )
    assert settings == {
        "max_num_seqs": 512,
        "max_num_batched_tokens": 8192,
        "gpu_memory_utilization": 0.9,
        "kv_cache_dtype": "fp8",
    }
    assert unmodelled["image"].startswith("vllm/vllm-openai:v0.15.1") and "d2c2acb19" in source


def test_b200_dsr1_sglang_mtp_rows_by_tpot(rows: dict[str, dict[str, str]]) -> None:
    # 2026-03-25 sweep of 12ba0ae07 ran dsr1-fp8-b200-sglang and dsr1-fp8-b200-sglang-mtp at the same points
    plain = ix.settings_for(rows["2026_03_25_deepseek_r1_b200_sxm_sglang_fp8_agg_1024x1024_c4_tp8_0_ep1_0_284"])
    mtp = ix.settings_for(rows["2026_03_25_deepseek_r1_b200_sxm_sglang_fp8_agg_1024x1024_c4_tp8_0_ep1_0_265"])
    assert (
        float(rows["2026_03_25_deepseek_r1_b200_sxm_sglang_fp8_agg_1024x1024_c4_tp8_0_ep1_0_265"]["silicon_tpot_ms"])
        < 7
    )
    assert plain[0] == {
        "max_num_seqs": 128,
        "max_num_batched_tokens": 32768,
        "mem_fraction_static": 0.82,
        "kv_cache_dtype": "fp8",
        "scheduler_recv_interval": 10,
    }
    assert "speculative_config" not in plain[1] and plain[1]["max_prefill_tokens"] == 32768
    assert mtp[0]["max_num_seqs"] == 512 and mtp[0]["max_num_batched_tokens"] == 16384
    assert mtp[1]["speculative_config"]["algorithm"] == "EAGLE" and "dsr1_fp8_b200_mtp.sh" in mtp[2]
    # CONC 512 lies outside the plain config's search space
    _, unmodelled, _ = ix.settings_for(
        rows["2026_03_25_deepseek_r1_b200_sxm_sglang_fp8_agg_1024x1024_c512_tp8_0_ep1_0_275"]
    )
    assert unmodelled["speculative_config"]["num_draft_tokens"] == 3
    # TP 4 (8k/1k only)
    settings, _, _ = ix.settings_for(rows["dsr1_b200_sglang_fp8_agg_8192x1024_c4_cfg271"])
    assert settings == {
        "max_num_seqs": 32,
        "max_num_batched_tokens": 8192,
        "mem_fraction_static": 0.95,
        "kv_cache_dtype": "fp8",
        "scheduler_recv_interval": 10,
    }


def test_b200_dsr1_sglang_fp4(rows: dict[str, dict[str, str]]) -> None:
    settings, unmodelled, source = ix.settings_for(
        rows["2026_03_25_deepseek_r1_b200_sxm_sglang_fp4_agg_1024x1024_c8_tp8_0_ep8_0_248"]
    )
    assert settings == {
        "max_num_seqs": 256,
        "max_num_batched_tokens": 16384,
        "mem_fraction_static": 0.85,
        "kv_cache_dtype": "fp8",
        "scheduler_recv_interval": 10,
    }
    assert unmodelled["image"].startswith("lmsysorg/sglang:v0.5.9-cu130") and "12ba0ae07" in source


def test_b200_minimax_vllm_by_date(rows: dict[str, dict[str, str]]) -> None:
    # f342df18e: bf16 KV, EP always on (EP_SIZE -ge 1); bddbf4031: fp8 KV, max-num-batched-tokens ISL x 2
    settings, unmodelled, source = ix.settings_for(rows["minimaxm2_5_b200_vllm_fp8_agg_1024x1024_c64_cfg691"])
    assert settings == {"max_num_batched_tokens": 2048, "gpu_memory_utilization": 0.9, "kv_cache_dtype": "fp8"}
    assert unmodelled["stream_interval"] == 20 and "bddbf4031" in source
    early = [
        r
        for r in rows.values()
        if r["system"] == "b200_sxm"
        and r["model_path"] == "MiniMaxAI/MiniMax-M2.5"
        and "2026-03-11T" in r["silicon_data_source"]
    ]
    settings, unmodelled, source = ix.settings_for(early[0])
    assert settings == {"gpu_memory_utilization": 0.95, "kv_cache_dtype": "bf16"}
    assert unmodelled["enable_expert_parallel"].startswith("true") and "f342df18e" in source
    # fp4 dp-attn points (config_id 707): TP 1 x DP 2
    settings, unmodelled, source = ix.settings_for(rows["minimaxm2_5_b200_vllm_fp4_agg_1024x1024_c1024_cfg707"])
    assert settings["max_num_batched_tokens"] == 2048
    assert unmodelled["enable_attention_dp"].startswith("true") and "13962fcfa" in source
    _, unmodelled, _ = ix.settings_for(rows["minimaxm2_5_b200_vllm_fp4_agg_1024x1024_c128_cfg706"])
    assert unmodelled["enable_attention_dp"] is False


def test_b200_kimi_vllm(rows: dict[str, dict[str, str]]) -> None:
    # kimik2.5_fp4_b200.sh never passes EP_SIZE: the config's ep 4 points run without expert parallelism
    kimi = [r for r in rows.values() if r["system"] == "b200_sxm" and r["model_path"] == "moonshotai/Kimi-K2.5"]
    undated_fp4 = next(r for r in kimi if r["precision"] == "fp4" and ix.measured_date(r) is None)
    settings, unmodelled, source = ix.settings_for(undated_fp4)
    assert settings["gpu_memory_utilization"] == 0.9 and settings["kv_cache_dtype"] == "bf16"
    assert unmodelled["enable_expert_parallel"].startswith("false") and "79a42e20a" in source
    late = next(r for r in kimi if ix.measured_date(r) == "2026-04-20" and r["isl"] == "8192")
    settings, _, source = ix.settings_for(late)
    assert settings["max_num_batched_tokens"] == 16384 and settings["kv_cache_dtype"] == "fp8" and "6c3acebfa" in source
    int4 = next(r for r in kimi if r["precision"] == "int4")
    settings, unmodelled, _ = ix.settings_for(int4)
    assert settings["gpu_memory_utilization"] == 0.95 and unmodelled["VLLM_USE_FLASHINFER_MOE_INT4"] == 1


def test_b200_gptoss_trt(rows: dict[str, dict[str, str]]) -> None:
    # B200 passes a fixed --max_batch_size 512 and an fp8 KV cache (H200: CONC and auto)
    settings, unmodelled, source = ix.settings_for(
        rows["2026_04_06_gpt_oss_120b_b200_sxm_trtllm_fp4_agg_1024x1024_c128_tp4_ep1_1068"]
    )
    assert settings == {
        "max_num_seqs": 512,
        "max_num_batched_tokens": 20000,
        "free_gpu_memory_fraction": 0.85,
        "kv_cache_dtype": "fp8",
    }
    assert unmodelled["moe_config.backend"] == "TRTLLM" and "97f253b51" in source
    _, unmodelled, source = ix.settings_for(
        rows["2026_04_06_gpt_oss_120b_b200_sxm_trtllm_fp4_agg_1024x1024_c128_tp2_ep2_2006"]
    )
    assert unmodelled["enable_attention_dp"] is True and "645b97aa4" in source
    _, unmodelled, _ = ix.settings_for(rows["2026_04_06_gpt_oss_120b_b200_sxm_trtllm_fp4_agg_1024x1024_c8_tp4_ep1_249"])
    assert unmodelled["enable_attention_dp"] is False


def test_dsr1_sglang_b200_receive_interval(rows: dict[str, dict[str, str]]) -> None:
    # the B200 SGLang scripts pass --scheduler-recv-interval $SCHEDULER_RECV_INTERVAL: 30 from 16 clients, else 10
    # (a formula over CONC in the file); the TP 4 FP8 script sets 10 at every concurrency
    interval = {
        conc: ix.settings_for(rows[f"2026_03_25_deepseek_r1_b200_sxm_sglang_fp8_agg_1024x1024_c{conc}_tp8_0_ep1_0_{n}"])
        for conc, n in ((4, 284), (16, 263), (32, 269))
    }
    assert {conc: found[0]["scheduler_recv_interval"] for conc, found in interval.items() if found} == {
        4: 10,
        16: 30,
        32: 30,
    }
    found = ix.settings_for(rows["2026_03_25_deepseek_r1_b200_sxm_sglang_fp8_agg_8192x1024_c8_tp4_0_ep1_0_277"])
    assert found is not None and found[0]["scheduler_recv_interval"] == 10
    assert all("scheduler_recv_interval" not in entry["unmodelled"] for entry in ix.entries())
