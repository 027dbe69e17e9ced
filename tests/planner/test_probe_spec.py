"""Probe shapes: a scaled-down model keeps its family's architecture and round-trips through config.json."""

from __future__ import annotations

from typing import Any

import pytest

from planner import count_params, import_hf_config, load_catalog
from planner.probe import ProbeScale, probe_hf_config, scale_down
from tests.planner.hf_configs import FAMILIES, random_configs
from tests.planner.oracle import oracle_counts

CATALOG = load_catalog()
# one random config of every family (MoE layouts, biases, windows, q/k norms as drawn)
FAMILY_CASES = random_configs(per_family=1, seed=20_251_201)


@pytest.mark.parametrize("model_id", [m.id for m in CATALOG.models])
def test_scaled_down_model_keeps_attention_kind_and_round_trips(model_id: str) -> None:
    spec = CATALOG.model(model_id).spec
    small = scale_down(spec, ProbeScale())
    assert small.attention_kind is spec.attention_kind
    assert (small.moe is None) is (spec.moe is None)
    assert small.family == spec.family and small.tie_embeddings == spec.tie_embeddings
    assert small.num_layers <= ProbeScale().num_layers
    back = import_hf_config(probe_hf_config(small)).spec
    assert back.model_dump(exclude={"name"}) == small.model_dump(exclude={"name"})


@pytest.mark.parametrize("config", [c for _, c in FAMILY_CASES], ids=[i for i, _ in FAMILY_CASES])
def test_probe_config_of_every_family_builds_the_scaled_spec(config: dict[str, Any]) -> None:
    # The config.json a probe runs must build what the planner counts for the scaled-down spec.
    small = scale_down(import_hf_config(config).spec, ProbeScale())
    probe_config = probe_hf_config(small)
    back = import_hf_config(probe_config).spec
    assert back.model_dump(exclude={"name"}) == small.model_dump(exclude={"name"})
    assert count_params(small).total == oracle_counts(probe_config).total


def test_family_cases_cover_every_family() -> None:
    assert {c["model_type"] for _, c in FAMILY_CASES} == set(FAMILIES)
