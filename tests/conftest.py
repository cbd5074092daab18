"""Test-wide settings: hypothesis runs derandomized, so CI sees the same examples every time."""

from hypothesis import settings

settings.register_profile("sporeling", derandomize=True, print_blob=True)
settings.load_profile("sporeling")


def pytest_terminal_summary(terminalreporter):
    """Prints the ONNX node suite's pass count, whatever else ran."""
    stats = terminalreporter.stats

    def count(kind):
        return sum(1 for r in stats.get(kind, []) if "test_node_suite.py" in getattr(r, "nodeid", ""))

    passed, failed, skipped = count("passed"), count("failed"), count("skipped")
    if passed or failed:
        terminalreporter.write_line(
            f"ONNX node suite: {passed} passed, {failed} failed, {skipped} excluded with a written reason")
