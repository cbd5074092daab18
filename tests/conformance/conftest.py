def pytest_terminal_summary(terminalreporter):
    stats = terminalreporter.stats
    def count(kind):
        return sum(1 for r in stats.get(kind, []) if "test_node_suite.py" in getattr(r, "nodeid", ""))
    passed, failed, skipped = count("passed"), count("failed"), count("skipped")
    if passed or failed:
        terminalreporter.write_line(
            f"ONNX node suite: {passed} passed, {failed} failed, {skipped} excluded with a reason")
