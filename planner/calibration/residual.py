"""The learned residual: calibrated TTFT and TPOT under load, next to the analytic ones, where it earns its place.

benchmarks/fit_residual.py fits gradient-boosted trees (scikit-learn's HistGradientBoostingRegressor) of
log(measured / memplan) for the mean TTFT and the mean TPOT over the features below, on the measured serving runs of
aiconfigurator-core's silicon sample, and scores them leaving one model out. A (GPU, engine, metric) group ships
only where its held-out median error is lower than the analytic one, and only for what that rule's nested score
(the choice of groups held out too) supports: TTFT on H100 and H200. There an answer gets the calibrated figure and
an 80 % interval from that group's held-out residuals. The trees are data (planner/calibration/residual.json), read
here without scikit-learn: each tree is walked in pure Python.

The model is fitted on end-to-end runs, so it is scored only held out by model, and it applies to what it saw:
closed-loop clients (a concurrency), on the GPUs and engines of the silicon sample.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any

from pydantic import Field

from planner._base import FrozenSpec

__all__ = [
    "ENGINES",
    "FEATURES",
    "GPUS",
    "CalibratedLatency",
    "Residual",
    "calibrate",
    "features",
    "load_residual",
]

ENGINES = ("vllm", "sglang", "trtllm")
GPUS = ("h100-sxm", "h200", "b200")
FEATURES = (
    *(f"engine={e}" for e in ENGINES),
    *(f"gpu={g}" for g in GPUS),
    "log2 concurrency",
    "log2 input tokens",
    "log2 output tokens",
    "log2 tensor parallel",
    "ln static TTFT (s)",
    "ln static TPOT (s)",
    "ln(load TTFT / static TTFT)",
    "ln(load TPOT / static TPOT)",
    "mean decode batch / concurrency",
)


def features(
    engine: str,
    gpu: str,
    concurrency: int,
    input_tokens: float,
    output_tokens: float,
    tensor_parallel: int,
    static_ttft_s: float,
    static_tpot_s: float,
    ttft_s: float,
    tpot_s: float,
    mean_decode_batch: float,
) -> tuple[float, ...]:
    """The residual's inputs, in FEATURES order: where the request runs, its shape, and memplan's own answer."""
    return (
        *(float(engine == e) for e in ENGINES),
        *(float(gpu == g) for g in GPUS),
        math.log2(concurrency),
        math.log2(input_tokens),
        math.log2(output_tokens),
        math.log2(tensor_parallel),
        math.log(static_ttft_s),
        math.log(static_tpot_s),
        math.log(ttft_s / static_ttft_s),
        math.log(tpot_s / static_tpot_s),
        mean_decode_batch / concurrency,
    )


class _Tree:
    """One regression tree: parallel node arrays, a leaf where left is -1 (sklearn's TreePredictor nodes, whose
    leaf values carry the learning rate)."""

    __slots__ = ("feature", "left", "right", "threshold", "value")

    def __init__(self, data: dict[str, list[Any]]) -> None:
        self.feature: list[int] = data["feature"]
        self.threshold: list[float] = data["threshold"]
        self.left: list[int] = data["left"]
        self.right: list[int] = data["right"]
        self.value: list[float] = data["value"]

    def predict(self, x: tuple[float, ...]) -> float:
        node = 0
        left, right, feature, threshold = self.left, self.right, self.feature, self.threshold
        while left[node] >= 0:
            node = left[node] if x[feature[node]] <= threshold[node] else right[node]
        return self.value[node]


class Residual:
    """The fitted residual of one metric: baseline + Σ trees = ln(measured / memplan)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.baseline: float = data["baseline"]
        self.trees = tuple(_Tree(t) for t in data["trees"])

    def log_ratio(self, x: tuple[float, ...]) -> float:
        return self.baseline + sum(t.predict(x) for t in self.trees)


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    path = resources.files("planner.calibration").joinpath("residual.json")
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@lru_cache(maxsize=2)
def load_residual(metric: str) -> Residual | None:
    """The fitted residual of 'ttft' or 'tpot', or None without a fit."""
    model = _data().get("models", {}).get(metric)
    return Residual(model) if model else None


class CalibratedLatency(FrozenSpec):
    """Mean TTFT and TPOT under load with the learned residual applied, where it lowers the held-out error."""

    ttft_mean_ms: float | None = Field(
        description="Calibrated mean TTFT; null where the residual does not lower this group's held-out TTFT error."
    )
    ttft_interval_ms: tuple[float, float] | None = Field(
        default=None, description="80 % interval of the measured mean TTFT: the group's held-out residual quantiles."
    )
    tpot_mean_ms: float | None = Field(
        description="Calibrated mean TPOT; null where the residual does not lower this group's held-out TPOT error."
    )
    tpot_interval_ms: tuple[float, float] | None = Field(default=None, description="80 % interval, as for TTFT.")
    summary: str = Field(description="Where the calibration comes from and how well it did held out.")
    source: str = "benchmarks/fit_residual.py → planner/calibration/residual.json"


def calibrate(group: str, x: tuple[float, ...], ttft_ms: float, tpot_ms: float) -> CalibratedLatency | None:
    """The calibrated figures for a request of (GPU, engine) `group` ('h200/vllm') with features `x`, or None where no
    metric of the group ships."""
    shipped = _data().get("groups", {}).get(group)
    if not shipped:
        return None
    out: dict[str, Any] = {}
    notes = []
    for metric, analytic in (("ttft", ttft_ms), ("tpot", tpot_ms)):
        g = shipped.get(metric)
        model = load_residual(metric)
        if not g or not g.get("shipped") or model is None:
            out[f"{metric}_mean_ms"] = None
            continue
        value = analytic * math.exp(model.log_ratio(x))
        lo, hi = g["interval_log"]
        out[f"{metric}_mean_ms"] = value
        out[f"{metric}_interval_ms"] = (value * math.exp(lo), value * math.exp(hi))
        notes.append(
            f"{metric.upper()} median error {100 * g['calibrated']:.1f} % held out by model on {g['rows']:,} runs "
            f"(analytic {100 * g['analytic']:.1f} %)"
        )
    if not notes:
        return None
    return CalibratedLatency(summary=f"{group}: " + "; ".join(notes), **out)
