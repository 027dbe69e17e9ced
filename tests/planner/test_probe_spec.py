"""Probe shapes: a scaled-down model keeps its family's architecture and round-trips through config.json."""

from __future__ import annotations

import pytest

from planner import import_hf_config, load_catalog
from planner.probe import ProbeScale, probe_hf_config, scale_down

CATALOG = load_catalog()


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
