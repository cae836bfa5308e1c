"""
Shared pytest configuration: the hypothesis profiles.

C{ci} (the default) keeps every property test quick and repeatable; C{long}
is for a thorough local run::

    pytest --hypothesis-profile=long tests/test_properties.py

Nothing here imports the reactor: doing so would break C{--reactor=asyncio}.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,  # a shared CI machine has slow moments; correctness, not speed, is tested here
    derandomize=True,  # the same examples on every run: a red CI run is reproducible
    print_blob=True,
)
settings.register_profile(
    "long",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ci")
