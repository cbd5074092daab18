import argparse
import json
import sys

from .suite import case_names, run_all, summarize


def main() -> int:
    ap = argparse.ArgumentParser(description="Run the ONNX backend node suite through sporeling.")
    ap.add_argument("--ops", help="only cases whose model uses one of these op types (comma-separated)")
    ap.add_argument("--filter", help="only cases whose name contains this substring")
    ap.add_argument("--json", help="write per-case results here")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case that does not pass")
    args = ap.parse_args()
    names = [n for n in case_names() if not args.filter or args.filter in n]
    ops = set(args.ops.split(",")) if args.ops else None
    results = run_all(names, ops, args.verbose)
    print(summarize(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.__dict__ for r in results], f, indent=1, default=list)
    return 0


if __name__ == "__main__":
    sys.exit(main())
