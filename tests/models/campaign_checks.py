"""The claim a fixed campaign miss is held to: the cpu probe's saved activations equal the planner's to the byte,
and both steps' peaks are within PEAK_TOLERANCE (or exact, where `exact_peaks`)."""

from __future__ import annotations

from models.campaign import Draw
from models.runner import run_probe

PEAK_TOLERANCE = 0.01


def assert_draw_holds(draw: Draw, exact_peaks: bool = False) -> None:
    r = run_probe(draw.request())
    by_name = {c.name: c for c in r.comparisons}
    saved = by_name["saved_activations"]
    assert saved.measured_bytes == saved.estimated_bytes, saved
    for name in ("peak/first_step", "peak/steady"):
        peak = by_name[name]
        assert abs(peak.rel_error) <= PEAK_TOLERANCE, (name, peak.rel_error)
        if exact_peaks:
            assert peak.measured_bytes == peak.estimated_bytes, peak
