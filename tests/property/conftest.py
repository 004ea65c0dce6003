"""Hypothesis profiles: a quick default, `ci` (>= 10,000 state-machine steps) and `mutation` (small and
repeatable, run once per mutant); HYPOTHESIS_PROFILE picks."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow], "print_blob": True}

settings.register_profile("default", max_examples=60, stateful_step_count=30, **_COMMON)
# 1,000 examples of up to 30 steps: about 26,000 steps per run (the test asserts >= 10,000).
settings.register_profile("ci", max_examples=1000, stateful_step_count=30, **_COMMON)
# Once per mutant: derandomized, so that a verdict does not depend on the run, and no shrinking, which
# only makes a failure readable and can take longer than finding it.
settings.register_profile(
    "mutation",
    max_examples=30,
    stateful_step_count=20,
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    **_COMMON,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
