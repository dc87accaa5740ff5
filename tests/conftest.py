"""Shared test configuration: hypothesis settings profiles.

HYPOTHESIS_PROFILE=dev (default) for quick local runs, ci for the bounded CI
run, deep for long local exploration.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "deep", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_addoption(parser):
    # tests/test_golden.py: rewrite tests/golden/ from the current CLI output
    # (or set REGEN_GOLDEN=1)
    parser.addoption(
        "--regen-golden",
        action="store_true",
        default=False,
        help="rewrite the golden files of tests/test_golden.py instead of comparing",
    )


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module (tiny tensors: more threads only add
    contention on a shared 2-core machine). torch is imported here, not at the top,
    so the verifier's tests run without it."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
