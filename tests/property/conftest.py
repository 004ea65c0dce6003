"""Hypothesis profiles: a quick default and `ci` (>= 10,000 state-machine steps); HYPOTHESIS_PROFILE picks."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow], "print_blob": True}

settings.register_profile("default", max_examples=60, stateful_step_count=30, **_COMMON)
# 1,000 examples of up to 30 steps: about 26,000 steps per run (the test asserts >= 10,000).
settings.register_profile("ci", max_examples=1000, stateful_step_count=30, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
