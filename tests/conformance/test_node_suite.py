"""The ONNX backend node suite (onnx==1.22.0, 1,765 cases). Every case runs; the ones listed in
exclusions.py are skipped with their written reason, and every other case must pass."""

import pytest

from .exclusions import exclusion_reason
from .suite import case_names, run_case

CASES = case_names()


@pytest.mark.skipif(not CASES, reason="the onnx package (with its backend test data) is not installed")
@pytest.mark.parametrize("name", CASES or ["none"])
def test_node_case(name):
    reason = exclusion_reason(name)
    if reason:
        pytest.skip(reason)
    result = run_case(name)
    assert result.status == "pass", f"{result.status}: {result.detail}"
