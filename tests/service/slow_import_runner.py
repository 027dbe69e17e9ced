"""A probe runner whose module takes IMPORT_S to import, as models.runner does (torch, transformers, peft)."""

from __future__ import annotations

import time

from planner.probe import ProbeRequest, ProbeResult
from tests.service.probe_runners import canned

IMPORT_S = 3.0
RUN_S = 0.5

time.sleep(IMPORT_S)


def run(request: ProbeRequest) -> ProbeResult:
    """canned, after RUN_S of work."""
    time.sleep(RUN_S)
    return canned(request)
