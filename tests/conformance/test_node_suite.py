"""The ONNX backend node suite (onnx==1.22.0, 1,765 cases). Every case runs and must pass, except
the ones exclusions.py gives a written reason for: those are skipped with it when they fail."""

import pytest

from .suite import case_names, run_case

CASES = case_names()


@pytest.mark.skipif(not CASES, reason="the onnx package (with its backend test data) is not installed")
@pytest.mark.parametrize("name", CASES or ["none"])
def test_node_case(name):
    result = run_case(name)
    if result.status == "excluded":
        pytest.skip(result.detail)
    assert result.status == "pass", f"{result.status}: {result.detail}"
