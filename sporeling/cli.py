"""sporeling's command line: convert, compress, export, run, bench, info, train, demo.

Every error a user can cause (a missing or corrupt file, a wrong feed) prints one line naming the
file or input and exits with status 2; a failure inside a kernel exits with 1. No tracebacks unless
SPORELING_DEBUG=1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

EPILOG = """examples:
  sporeling convert model.onnx -o model.spore           optimize once, save sporeling's own format
  sporeling convert face.tflite -o face.spore --check   also compare outputs with the source
  sporeling convert bert.onnx -o bert.spore --input-shape input_ids=1,128
  sporeling export model.spore -o model.onnx            back to ONNX, for Netron or onnxruntime
  sporeling compress model.onnx -o small.spore --bits 6  quantized, entropy-coded weights
  sporeling info model.onnx
  sporeling run model.onnx                              random inputs of the declared shapes
  sporeling run model.onnx --input x=image.npy --output out.npz
  sporeling bench model.onnx --threads 1 --runs 50 --compare onnxruntime
  sporeling bench det.onnx --input-shape x=1,3,640,640   a shape for symbolic dimensions
  sporeling train zoo:cnn --data fmnist/ --epochs 2 --checkpoint runs/ -o cnn.spore   train on the device
  sporeling demo                                        PP-OCRv4 reads a line of text
"""


MODEL_HELP = "a model file: .onnx, .tflite or .spore"


def _parser() -> argparse.ArgumentParser:
    from .quant.judge import STREAM_SAMPLES

    ap = argparse.ArgumentParser(
        prog="sporeling",
        description="A lightweight neural-network engine: run ONNX, TFLite and .spore models with NumPy kernels and one "
        "static memory arena.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="store_true", help="print the version and exit")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    def shape_arg(p):
        p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D1,D2,...",
                       help="shape of a random input, for inputs with symbolic dimensions (e.g. x=1,3,640,640)")

    def threads_arg(p):
        p.add_argument("--threads", type=int, default=None, metavar="N",
                       help="BLAS threads (default: 1, fastest for batch-1 inference on small CPUs)")

    def lazy_arg(p):
        p.add_argument("--lazy", action="store_true", help="keep a compressed .spore's quantized weights compressed "
                       "in memory, each decoded just before its node runs (less memory, slower runs)")

    p = sub.add_parser("convert", help="convert an .onnx or .tflite model to an optimized .spore file",
                       description="Read IN (.onnx, .tflite or .spore), run the graph passes (constant folding, "
                       "Conv/Gemm+BatchNorm folding, layout, activation and bias fusion, dead code), print what each "
                       "did, and write OUT.spore atomically with the source's name and SHA-256.")
    p.add_argument("model", metavar="IN", help=MODEL_HELP)
    p.add_argument("-o", "--output", required=True, metavar="OUT.spore", help="the file to write")
    p.add_argument("--no-optimize", action="store_true", help="store the graph as imported, without passes")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D1,D2,...",
                   help="fix an input's shape (symbolic dimensions included) so shape computations fold away")
    p.add_argument("--check", action="store_true",
                   help="run the source and the converted model on the same random inputs and compare")

    p = sub.add_parser("compress", help="quantize and entropy-code a model's weights into a smaller .spore",
                       description="Read IN (.onnx, .tflite or .spore), optimize it, quantize every weight worth it "
                       "per output channel with bias correction, store each as the smallest of bit-packed codes, "
                       "FSE-coded codes and float, and print a per-layer table, the sizes and each output's cosine "
                       "similarity to the float model on random inputs. No dataset is needed.")
    p.add_argument("model", metavar="IN", help=MODEL_HELP)
    p.add_argument("-o", "--output", required=True, metavar="OUT.spore", help="the file to write")
    p.add_argument("--method", choices=["mixed", "original", "fixed"], default="mixed",
                   help="mixed (default): levels per layer allocated by measured sensitivity, the smallest model "
                   "whose outputs keep --target-cosine to float on random inputs; original: MindSpore Lite's "
                   "search, one error target for every layer, tuned the same way; fixed: --bits bits each. The "
                   "entropy coder then decides the real bits per weight")
    p.add_argument("--bits", type=int, default=8, metavar="N", help="bits per weight for --method fixed (1-16)")
    p.add_argument("--target-cosine", type=float, default=0.995, metavar="C",
                   help="output cosine to the float model the searches must keep: per output its mean over the "
                   "sample inputs, the worst output counting (default 0.995)")
    p.add_argument("--target-size", type=float, default=None, metavar="MB",
                   help="instead of a cosine target, the whole file's size in MB (10^6 bytes): the mixed search "
                   "then gives the least output error within it")
    p.add_argument("--no-bias-correction", action="store_true", help="do not restore each channel's mean and std")
    p.add_argument("--no-entropy", action="store_true", help="bit-pack only, no FSE coding")
    p.add_argument("--per-tensor", action="store_true", help="one scale per tensor instead of per output channel")
    p.add_argument("--no-dct", action="store_true",
                   help="never store a dense layer over a flattened feature map as its weights' DCT coefficients "
                   "(the searches do where those code smaller); the file then opens in sporeling readers of "
                   "format 1.3")
    p.add_argument("--min-size", type=int, default=None, metavar="N",
                   help="weights of N elements or fewer stay float (default: the quantizer's MIN_QUANT_WEIGHT_SIZE)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D1,D2,...",
                   help="shape of an input's random samples (for symbolic dimensions); the model keeps its own")
    p.add_argument("--calib", metavar="DIR|FILE.npz",
                   help="judge the search on these inputs too: an .npz whose arrays (keyed by input name) hold one "
                   "sample per row, or a folder of .npz files, one sample each. The random samples (or distilled "
                   "ones, see --distill) are judged beside them (not for a recurrent model), so a few calibration "
                   "inputs cannot pass a model that only fits them")
    p.add_argument("--input", action="append", default=[], metavar="NAME=VALUE|FILE.npy",
                   help="a value an input always takes in the search's random samples (e.g. sr=16000)")
    p.add_argument("--samples", type=int, default=4, metavar="N",
                   help="random sample inputs the searches judge on (default 4; a recurrent "
                   f"model's stream takes at least {STREAM_SAMPLES}): more cost time and vary less from seed to seed. "
                   "0 with --calib: judged on the calibration inputs alone (for a set large and varied enough "
                   "not to be fitted). Distilled inputs (see --distill): max(N, 8)")
    judge = p.add_mutually_exclusive_group()
    judge.add_argument("--distill", dest="distill", action="store_true", default=None,
                       help="judge the search on inputs distilled from the model's BatchNormalization statistics "
                       "(in place of the random ones, beside --calib's if given) even where the model also "
                       "normalises at run time (LayerNorm). By default they judge only models whose normalisation "
                       "is all BatchNormalization (PP-OCR det and cls came out a quarter smaller and kept the "
                       "cosine on real inputs; PP-OCR rec, convolutions then transformer layers, missed it), and "
                       "it costs up to a minute more on a model of a few MB")
    judge.add_argument("--no-distill", dest="distill", action="store_false",
                       help="judge on random inputs even where distilled ones would")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of those random inputs (default 0); where the search ends depends on the draw")
    p.add_argument("--rounding", choices=["nearest", "gptq", "sums"], default=None,
                   help="how weights round to their levels (default: sums with --method mixed, else nearest); "
                   "sums rounds to nearest but keeps each input channel's kernel sum in 2-D convolutions (their "
                   "response to flat image regions, which random inputs never show): better outputs on real "
                   "images at about the same size; nearest rounds every weight alone; gptq, with --calib, spreads "
                   "each rounding error over the layer's other inputs as the calibration inputs and the random "
                   "ones beside them weigh them, for smaller files at the same target")
    p.add_argument("--feedback", action="append", default=None, metavar="OUT=IN",
                   help="a recurrent model's state: output OUT is fed back into input IN, and the search judges "
                   "the model over a stream of inputs (--calib in its order, or "
                   f"{STREAM_SAMPLES} random ones from a zero state). "
                   "Found by itself where an output matches an input's shape and name (Silero's stateN=state)")
    p.add_argument("--no-feedback", action="store_true", help="judge every sample input on its own")
    p.add_argument("--report", metavar="report.json", help="also write the report as JSON (atomically)")
    p.add_argument("--plot", metavar="curve.png",
                   help="draw every allocation the mixed search measured, size against output cosine "
                   "(needs matplotlib: pip install 'sporeling[plot]')")

    p = sub.add_parser("export", help="export a model (e.g. a .spore) to ONNX",
                       description="Write MODEL as a standard ONNX file that onnxruntime and Netron open; "
                       "sporeling's fused ops are expanded back into standard ONNX ops.")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="the file to write (atomically)")

    p = sub.add_parser("run", help="run a model once and print or save its outputs",
                       description="Run MODEL once. Without --input, every input gets random values of its "
                       "declared shape (symbolic dimensions become 1).")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="feed an input from a .npy file (repeat for several inputs)")
    p.add_argument("--output", metavar="OUT.npz", help="save all outputs to this .npz (written atomically)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    shape_arg(p)
    threads_arg(p)
    lazy_arg(p)

    p = sub.add_parser("bench", help="measure latency and memory, optionally against onnxruntime",
                       description="Time MODEL on fixed inputs: median latency over --runs runs after warm-up, "
                       "peak memory, and the memory plan (arena vs the sum of all tensors vs the lower bound of "
                       "live bytes). With --compare onnxruntime the two engines run interleaved, same threads.")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", help="as for run")
    p.add_argument("--runs", type=int, default=20, metavar="K", help="timed runs (default 20)")
    p.add_argument("--warmup", type=int, default=3, metavar="W", help="untimed runs first (default 3)")
    p.add_argument("--compare", choices=["onnxruntime"], help="also time this engine, interleaved")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    shape_arg(p)
    threads_arg(p)
    lazy_arg(p)

    p = sub.add_parser("info", help="inputs, outputs, op counts, parameters and the memory plan",
                       description="Describe MODEL. The memory plan is shown for the declared input shapes "
                       "(symbolic dimensions become 1).")
    p.add_argument("model", help=MODEL_HELP)
    shape_arg(p)

    from .train.cli_train import add_parser as add_train

    add_train(sub)

    p = sub.add_parser("demo", help="a real model doing a real task: PP-OCRv4 reads a line of text",
                       description="Renders a line of text, reads it with the PP-OCRv4 recognizer, and prints "
                       "the text and the time taken, beside onnxruntime's when it is installed. Fetches the "
                       "model into the asset cache on first use.")
    p.add_argument("--text", default="Hello World 2024", help="the text to render and read")
    threads_arg(p)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.version:
        from . import __version__

        print(f"sporeling {__version__}")
        return 0
    if not args.command:
        ap.print_help()
        return 2
    from .errors import KernelError, SporelingError

    try:
        commands = {"convert": cmd_convert, "compress": cmd_compress, "export": cmd_export, "run": cmd_run,
                    "bench": cmd_bench, "info": cmd_info, "train": cmd_train, "demo": cmd_demo}
        return commands[args.command](args)
    except KernelError as e:
        return _fail(e, 1)
    except (SporelingError, OSError, ValueError) as e:
        return _fail(e, 2)
    except MemoryError:
        return _fail(MemoryError(f"out of memory running {getattr(args, 'model', 'the command')}"), 1)
    except KeyboardInterrupt:
        print("sporeling: interrupted", file=sys.stderr)
        return 130


def _fail(e: Exception, code: int) -> int:
    if os.environ.get("SPORELING_DEBUG"):
        raise e
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    print(f"sporeling: error: {msg}", file=sys.stderr)
    return code


def _load(path: str, threads: int | None = None, lazy: bool = False):
    from . import load

    return load(path, threads=threads, lazy=lazy)


def _feeds(model, specs: list[str], seed: int = 0, shapes: list[str] = ()) -> dict[str, np.ndarray]:
    from .tools import load_feed_file, parse_shapes, random_feeds

    feeds = random_feeds(model, seed, parse_shapes(shapes)) if not specs else {}
    for spec in specs:
        name, arr = load_feed_file(spec)
        feeds[name] = arr
    return feeds


def _describe(name: str, arr) -> str:
    if not isinstance(arr, np.ndarray):
        return f"  {name}: {type(arr).__name__}"
    line = f"  {name}: {arr.dtype}{list(arr.shape)}"
    if arr.size and arr.dtype.kind in "fiub":
        a = arr.astype(np.float64)
        line += f"  min {a.min():.4g}  max {a.max():.4g}  mean {a.mean():.4g}"
        line += "  first " + np.array2string(arr.reshape(-1)[:6], precision=4, separator=", ")
    return line


def cmd_convert(args) -> int:
    from .convert import convert
    from .tools import parse_shapes

    convert(args.model, args.output, optimize=not args.no_optimize, input_shapes=parse_shapes(args.input_shape),
            check=args.check)
    return 0


def cmd_compress(args) -> int:
    from .quant.compress import compress
    from .tools import atomic_write, parse_shapes

    report = compress(args.model, args.output, method=args.method, bits=args.bits, target_cosine=args.target_cosine,
                      target_size=args.target_size, bias_correction=not args.no_bias_correction,
                      entropy=not args.no_entropy, per_tensor=args.per_tensor, min_size=args.min_size,
                      input_shapes=parse_shapes(args.input_shape), inputs=dict(map(_input_value, args.input)),
                      samples=args.samples, seed=args.seed, calib=args.calib, rounding=args.rounding,
                      distill=args.distill, dct=not args.no_dct,
                      feedback=_feedback_arg(args), plot=args.plot)
    if args.report:
        text = json.dumps(report, indent=1).encode()
        atomic_write(args.report, lambda f: f.write(text))
    return 0


def _feedback_arg(args) -> dict[str, str] | None:
    """--feedback OUT=IN pairs, {} for --no-feedback, None to let compress find them."""
    from .errors import SporelingError

    if args.no_feedback:
        if args.feedback:
            raise SporelingError("compress: --feedback and --no-feedback contradict each other")
        return {}
    if not args.feedback:
        return None
    pairs = {}
    for spec in args.feedback:
        out, _, inp = spec.partition("=")
        if not out or not inp:
            raise SporelingError(f"--feedback '{spec}': expected OUT=IN (an output fed back into an input)")
        pairs[out] = inp
    return pairs


def _input_value(spec: str):
    """NAME=FILE.npy, or NAME=NUMBER for a scalar (an integer stays an int64, else float32)."""
    from .errors import FeedError
    from .tools import load_feed_file

    name, _, value = spec.partition("=")
    if not value.endswith(".npy"):
        for kind in (np.int64, np.float32):
            try:
                return name, np.asarray(kind(value) if kind is np.float32 else int(value), kind)
            except ValueError:
                pass
        raise FeedError(f"--input '{spec}': expected NAME=NUMBER or NAME=FILE.npy")
    return load_feed_file(spec)


def cmd_export(args) -> int:
    from .frontends.onnx_export import export_onnx
    from .model import load_graph
    from .tools import human_bytes

    graph = load_graph(args.model)
    export_onnx(graph, args.output)
    print(f"wrote {args.output}: {len(graph.nodes)} nodes, {human_bytes(os.path.getsize(args.output))}")
    return 0


def cmd_run(args) -> int:
    from .tools import save_npz

    model = _load(args.model, args.threads, args.lazy)
    feeds = _feeds(model, args.input, args.seed, args.input_shape)
    t0 = time.perf_counter()
    outputs = model.run(feeds)
    ms = (time.perf_counter() - t0) * 1e3
    print(f"{os.path.basename(args.model)}: {len(outputs)} output(s) in {ms:.1f} ms (first run, includes prepare)")
    for name, arr in outputs.items():
        print(_describe(name, arr))
    if args.output:
        save_npz(args.output, outputs)
        print(f"saved {args.output}")
    return 0


def cmd_info(args) -> int:
    from .tools import human_bytes, parse_shapes, plan_stats, random_feeds

    model = _load(args.model)
    g = model.graph

    def spec(s):
        shape = "?" if s.shape is None else "[" + ", ".join(str(d) if d is not None else "?" for d in s.shape) + "]"
        return f"  {s.name}: {s.dtype.name if s.dtype is not None else '?'} {shape}"

    print(f"{args.model}")
    if _is_spore(args.model):
        from .format import read_info

        info = read_info(args.model)
        prov = info.get("provenance") or {}
        src = f"{prov.get('source', '?')} (sha256 {str(prov.get('source_sha256', '?'))[:12]}...)"
        passes = [p.get("pass") for p in prov.get("passes", []) if isinstance(p, dict) and p.get("rewrites")]
        print(f"format: .spore {info['format_version']}, written by {prov.get('producer', '?')} from {src}")
        if info.get("requires"):
            print(f"  requires the format features: {', '.join(info['requires'])}")
        print(f"  passes that changed it: {', '.join(map(str, passes)) or 'none'}")
        print("  tensors: " + ", ".join(f"{k} {v['count']} ({human_bytes(v['bytes'])})"
                                         for k, v in info["tensors"]["by_codec"].items()))
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in g.opsets.items())
    print(f"opsets: {opsets}")
    print("inputs:")
    print("\n".join(spec(s) for s in model.inputs))
    print("outputs:")
    print("\n".join(spec(s) for s in model.outputs))
    n_params = g.parameter_count()
    tensors = g.all_initializers()
    n_bytes = sum(a.nbytes for a in tensors)
    print(f"parameters: {n_params:,} in {len(tensors)} tensors ({human_bytes(n_bytes)})")
    counts = g.op_counts()
    print(f"nodes: {sum(counts.values())}  ops: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if g.metadata:
        keys = [k for k in g.metadata if not k.startswith("onnx.")]
        if keys:
            print(f"metadata keys: {', '.join(keys)}")
    try:
        feeds = random_feeds(model, shapes=parse_shapes(args.input_shape))
    except Exception as e:  # an input we cannot synthesise: no plan to show
        print(f"memory plan: not shown ({e})")
        return 0
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feeds.items())
    st = plan_stats(model, feeds)
    print(f"memory plan for {shapes}:")
    print(f"  arena {human_bytes(st['arena_bytes'])} for {st['planned_tensors']} planned tensors "
          f"(sum of tensors {human_bytes(st['sum_of_tensors_bytes'])}, "
          f"lower bound of live bytes {human_bytes(st['live_lower_bound_bytes'])})")
    print(f"  {st['steps']} steps, {st['folded_nodes']} nodes folded at prepare, "
          f"{st['steps_with_runtime_allocation']} steps allocate at run time")
    return 0


def _is_spore(path: str) -> bool:
    from .format import MAGIC

    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def cmd_bench(args) -> int:
    from .bench import bench_model

    report = bench_model(args.model, feeds_spec=args.input, runs=args.runs, warmup=args.warmup,
                         threads=args.threads, compare=args.compare, shapes=args.input_shape, lazy=args.lazy)
    if args.json:
        from .tools import atomic_write

        atomic_write(args.json, lambda f: f.write(json.dumps(report, indent=2)), mode="w")
    return 0


def cmd_train(args) -> int:
    from .train.cli_train import cmd_train as train

    return train(args)


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(text=args.text, threads=args.threads)


if __name__ == "__main__":
    sys.exit(main())
