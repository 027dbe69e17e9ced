"""Probe devices: the MEMPLAN_PROBE_DEVICES list, how a backend picks its workers, and which GPU a probe sees."""

from __future__ import annotations

import pytest

from planner import SpecError
from planner.probe import ProbeRequest
from service.probes.devices import candidate_devices, visible_cuda_devices
from service.settings import Settings


@pytest.mark.parametrize(
    ("value", "devices"),
    [
        ("cpu", ("cpu",)),
        ("cuda:0,cuda:1", ("cpu", "cuda:0", "cuda:1")),
        (" CUDA:1 , cpu, cuda:1,", ("cpu", "cuda:1")),
        ('["cuda:0"]', None),  # a JSON list is not the format: one device name per comma
        ("gpu0", None),
        ("cuda", None),
    ],
)
def test_probe_devices_setting(monkeypatch: pytest.MonkeyPatch, value: str, devices: tuple[str, ...] | None) -> None:
    monkeypatch.setenv("MEMPLAN_PROBE_DEVICES", value)
    if devices is None:
        with pytest.raises(ValueError, match="probe device"):
            Settings()
    else:
        assert Settings().probe_devices == devices


def test_probe_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PROBE_DEVICES", "PROBE_QUEUE_LIMIT", "PROBE_MAX_TIMEOUT_S", "PROBE_RUNNER"):
        monkeypatch.delenv(f"MEMPLAN_{name}", raising=False)
    s = Settings()
    assert (s.probe_devices, s.probe_queue_limit, s.probe_max_timeout_s, s.probe_runner) == (
        ("cpu",),
        8,
        600.0,
        "models.runner:run_probe",
    )
    assert s.probe_executor_id


@pytest.mark.parametrize("runner", ["models.runner", "models.runner:run probe", ":run_probe", "a:b:c"])
def test_probe_runner_must_be_module_colon_function(runner: str) -> None:
    with pytest.raises(ValueError, match="probe_runner"):
        Settings(probe_runner=runner)


@pytest.mark.parametrize(
    ("backend", "devices", "expected"),
    [
        ("auto", ("cpu",), ("cpu", ["cpu"])),
        ("auto", ("cpu", "cuda:0", "cuda:1"), ("cuda", ["cuda:0", "cuda:1"])),
        ("cuda", ("cpu", "cuda:3"), ("cuda", ["cuda:3"])),
        ("cpu", ("cpu", "cuda:0"), ("cpu", ["cpu"])),
        ("fake", ("cpu", "cuda:0"), ("fake", ["cpu"])),
    ],
)
def test_candidate_devices(backend: str, devices: tuple[str, ...], expected: tuple[str, list[str]]) -> None:
    assert candidate_devices(ProbeRequest(backend=backend), devices) == expected  # type: ignore[arg-type]


def test_cuda_without_a_cuda_device_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as caught:
        candidate_devices(ProbeRequest(backend="cuda"), ("cpu",))
    assert caught.value.problems[0].loc == ("backend",)


@pytest.mark.parametrize(
    ("device", "environ", "visible"),
    [
        ("cpu", {}, ""),
        ("cpu", {"CUDA_VISIBLE_DEVICES": "0,1"}, ""),
        ("cuda:1", {}, "1"),
        ("cuda:1", {"CUDA_VISIBLE_DEVICES": "4, 6"}, "6"),  # indices count the GPUs the server sees
        ("cuda:0", {"CUDA_VISIBLE_DEVICES": "GPU-5f1c"}, "GPU-5f1c"),
    ],
)
def test_visible_cuda_devices(device: str, environ: dict[str, str], visible: str) -> None:
    assert visible_cuda_devices(device, environ) == visible


def test_a_device_the_server_cannot_see_is_an_error() -> None:
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES=0"):
        visible_cuda_devices("cuda:1", {"CUDA_VISIBLE_DEVICES": "0"})
