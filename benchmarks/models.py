"""The benchmark models: three built here from PyTorch modules, two real PP-OCRv4 models from the assets.

MobileNetV2 and ResNet-18 follow torchvision's architectures layer for layer (written out by hand, since
torchvision is not installable here), and the encoder has TinyBERT's shape: 4 layers, hidden 312,
12 heads, intermediate 1200, sequence 128, exact GELU, post-LayerNorm, fed token ids and an attention
mask through BERT's embedding tables. Weights are seeded random. BatchNorm statistics are made real
by running a few training-mode batches through the network before switching to eval mode, so every
BN carries non-trivial running mean and variance (not an identity) and activations keep a realistic
scale through the depth of the net, as they would in a trained model.

Each is exported once with the TorchScript-based exporter (opset 17, which gives plain graphs: BN is
folded into the preceding Conv as any deployment export does) into $SPORELING_ASSETS/bench/, outside
the repo; the file name carries a version that changes with the architecture or the weights. The
torch modules stay importable for the eager comparison in latency.py.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError:  # the PP-OCR models still work without torch
    torch = nn = F = None

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_VERSION = 1  # bump when a module or its weights change, so cached exports are rebuilt


def _fetch_assets_module():
    """The asset fetcher, sporeling.assets."""
    from sporeling import assets

    return assets


# ---- torch modules ----

if nn is not None:

    def _make_divisible(v: float, divisor: int = 8) -> int:
        """torchvision's channel rounding: nearest multiple of divisor, never more than 10% below v."""
        new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
        return new_v + divisor if new_v < 0.9 * v else new_v

    class ConvBNAct(nn.Sequential):
        def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
            layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                      nn.BatchNorm2d(cout)]
            if act:
                layers.append(nn.ReLU6(inplace=True))
            super().__init__(*layers)

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int):
            super().__init__()
            hidden = int(round(cin * expand_ratio))
            self.use_res_connect = stride == 1 and cin == cout
            layers = [ConvBNAct(cin, hidden, kernel=1)] if expand_ratio != 1 else []
            layers += [ConvBNAct(hidden, hidden, stride=stride, groups=hidden), ConvBNAct(hidden, cout, 1, act=False)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        """torchvision.models.mobilenet_v2 (width 1.0, 1000 classes)."""

        SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                    (6, 320, 1, 1)]  # expand ratio, channels, repeats, first stride

        def __init__(self, num_classes: int = 1000):
            super().__init__()
            cin, last = _make_divisible(32), _make_divisible(1280)
            features = [ConvBNAct(3, cin, stride=2)]
            for t, c, n, s in self.SETTINGS:
                cout = _make_divisible(c)
                for i in range(n):
                    features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                    cin = cout
            features.append(ConvBNAct(cin, last, kernel=1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out")
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0, 0.01)
                    nn.init.zeros_(m.bias)

        def forward(self, x):
            x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
            return self.classifier(torch.flatten(x, 1))

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class ResNet18(nn.Module):
        """torchvision.models.resnet18 (1000 classes)."""

        def __init__(self, num_classes: int = 1000):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            stages, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
                cin = cout
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    class EncoderLayer(nn.Module):
        """BERT's post-LN transformer layer: self-attention and a GELU feed-forward, each followed by
        residual add and LayerNorm."""

        def __init__(self, hidden: int, heads: int, intermediate: int):
            super().__init__()
            self.heads, self.head_dim = heads, hidden // heads
            self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
            self.attn_out = nn.Linear(hidden, hidden)
            self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
            self.ffn_in = nn.Linear(hidden, intermediate)
            self.ffn_out = nn.Linear(intermediate, hidden)
            self.ffn_norm = nn.LayerNorm(hidden, eps=1e-12)

        def _split_heads(self, x):
            b, s, _ = x.shape
            return x.view(b, s, self.heads, self.head_dim).transpose(1, 2)

        def forward(self, x, mask_bias):
            q, k, v = self._split_heads(self.query(x)), self._split_heads(self.key(x)), self._split_heads(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / (self.head_dim ** 0.5) + mask_bias
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(x.shape)
            x = self.attn_norm(x + self.attn_out(ctx))
            return self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x))))

    class TinyBertEncoder(nn.Module):
        """TinyBERT-4L-312D's shape: BERT embeddings (word + position + token type, LayerNorm) and four
        encoder layers. Inputs: input_ids and attention_mask, int64 [batch, seq]; output: the last
        hidden state, float [batch, seq, 312]."""

        def __init__(self, vocab: int = 30522, hidden: int = 312, layers: int = 4, heads: int = 12,
                     intermediate: int = 1200, max_positions: int = 512):
            super().__init__()
            self.word = nn.Embedding(vocab, hidden)
            self.position = nn.Embedding(max_positions, hidden)
            self.token_type = nn.Embedding(2, hidden)
            self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
            self.layers = nn.ModuleList(EncoderLayer(hidden, heads, intermediate) for _ in range(layers))
            for m in self.modules():  # BERT's initialisation
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, 0.0, 0.02)
                if isinstance(m, nn.Linear):
                    nn.init.zeros_(m.bias)

        def forward(self, input_ids, attention_mask):
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            x = self.word(input_ids) + self.position(positions) + self.token_type.weight[0]
            x = self.emb_norm(x)
            # Padding positions get a large negative bias before the softmax, as BERT's extended mask.
            mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
            for layer in self.layers:
                x = layer(x, mask_bias)
            return x


def _randomise_norms(module, seed: int, calibration_inputs) -> None:
    """Gives every BatchNorm a random affine and real running statistics: the running mean/var are
    accumulated (cumulative average) over training-mode passes on calibration_inputs, so eval-mode BN
    normalises with statistics that fit the activations instead of the identity (0, 1) defaults."""
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(torch.rand(bn.num_features, generator=gen) * 0.8 + 0.6)
            bn.bias.copy_(torch.randn(bn.num_features, generator=gen) * 0.1)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average over the calibration batches
        module.train()
        for x in calibration_inputs:
            module(x)
    module.eval()


# ---- the benchmark set ----

@dataclass
class BenchModel:
    name: str
    path: str  # the ONNX file
    make_feeds: Callable[[], dict[str, np.ndarray]]
    torch_module: object = None  # eval-mode torch.nn.Module taking the feeds in input order, if any
    note: str = ""

    def torch_inputs(self, feeds: dict[str, np.ndarray]):
        return tuple(torch.from_numpy(v) for v in feeds.values())


def _image_feeds(shape, name: str = "input", seed: int = 0):
    def make():
        return {name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}
    return make


def _text_feeds(seq: int = 128, vocab: int = 30522, real_tokens: int = 100, seed: int = 0):
    """Random token ids with BERT's [CLS]/[SEP] ids; the last seq - real_tokens positions are padding."""
    def make():
        ids = np.random.default_rng(seed).integers(1000, vocab, size=(1, seq), dtype=np.int64)
        ids[0, 0], ids[0, real_tokens - 1], ids[0, real_tokens:] = 101, 102, 0
        mask = np.zeros((1, seq), np.int64)
        mask[0, :real_tokens] = 1
        return {"input_ids": ids, "attention_mask": mask}
    return make


def bench_dir() -> str:
    return os.path.join(_fetch_assets_module().cache_dir(), "bench")


def _build_torch(name: str):
    """(eval module, feeds maker) for a torch-defined benchmark model, with seeded weights."""
    torch.manual_seed({"mobilenetv2": 1, "resnet18": 2, "tinybert": 3}[name])
    if name == "tinybert":
        return TinyBertEncoder().eval(), _text_feeds()
    module = MobileNetV2() if name == "mobilenetv2" else ResNet18()
    gen = torch.Generator().manual_seed(10)
    _randomise_norms(module, seed=11, calibration_inputs=[torch.randn(8, 3, 224, 224, generator=gen)
                                                          for _ in range(2)])
    return module, _image_feeds((1, 3, 224, 224))


def _export(module, feeds: dict[str, np.ndarray], path: str, output_names: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part-", suffix=".onnx", dir=os.path.dirname(path))
    os.close(fd)
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module, args, tmp, opset_version=17, dynamo=False, do_constant_folding=True,
                              input_names=list(feeds), output_names=output_names)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


TORCH_MODELS = ("mobilenetv2", "resnet18", "tinybert")
OCR_MODELS = {"ppocr_det": (1, 3, 640, 640), "ppocr_rec": (1, 3, 48, 320)}
ALL_MODELS = TORCH_MODELS + tuple(OCR_MODELS)


def get(name: str) -> BenchModel:
    """The benchmark model `name`, exporting (torch models) or fetching (PP-OCR) its ONNX file if needed."""
    if name in OCR_MODELS:
        path = _fetch_assets_module().fetch(name)
        return BenchModel(name, path, _image_feeds(OCR_MODELS[name], "x"), None,
                          f"real PP-OCRv4 model, input {'x'.join(map(str, OCR_MODELS[name]))}")
    if name not in TORCH_MODELS:
        raise KeyError(f"unknown benchmark model {name!r}; known: {', '.join(ALL_MODELS)}")
    if torch is None:
        raise RuntimeError(f"{name} is built with PyTorch, which is not installed")
    module, make_feeds = _build_torch(name)
    torch_version = ".".join(torch.__version__.split(".")[:2])  # same seeds may draw other weights elsewhere
    path = os.path.join(bench_dir(), f"{name}-v{BUILD_VERSION}-torch{torch_version}.onnx")
    if not os.path.exists(path):
        _export(module, make_feeds(), path, ["logits"] if name != "tinybert" else ["last_hidden_state"])
    notes = {"mobilenetv2": "torchvision MobileNetV2, 1x3x224x224", "resnet18": "torchvision ResNet-18, 1x3x224x224",
             "tinybert": "4 layers, hidden 312, 12 heads, ffn 1200, seq 128"}
    return BenchModel(name, path, make_feeds, module, notes[name])


def benchmark_models(names=ALL_MODELS) -> dict[str, BenchModel]:
    return {n: get(n) for n in names}


if __name__ == "__main__":
    for n in sys.argv[1:] or ALL_MODELS:
        m = get(n)
        print(f"{n:<12} {m.path}  ({m.note})")
