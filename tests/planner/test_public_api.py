"""The planner's public API is what __all__ says: every name resolves, and nothing there imports torch or HTTP."""

from __future__ import annotations

import subprocess
import sys

import planner

EXPECTED = {
    "InferenceRequest", "InferenceEstimate", "estimate_inference", "ModelSpec", "MoESpec", "MLASpec", "GpuSpec",
    "ServingSpec", "HFConfig", "import_hf_config", "describe_import", "count_params", "kv_bytes_per_token",
    "load_catalog", "SpecError", "UnknownIdError",
}  # fmt: skip


def test_all_names_resolve_and_cover_the_api() -> None:
    assert sorted(planner.__all__) == sorted(set(planner.__all__))
    assert all(hasattr(planner, name) for name in planner.__all__)
    assert set(planner.__all__) >= EXPECTED


def test_planner_imports_neither_torch_nor_http() -> None:
    # An estimate must never pay torch's import time; the planner never knows HTTP.
    code = (
        "import sys, planner; planner.load_catalog(); "
        "print(sorted({'torch', 'fastapi', 'starlette', 'httpx'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
