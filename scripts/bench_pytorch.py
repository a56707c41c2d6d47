#!/usr/bin/env python3
"""PyTorch side of `bench train`: the same networks, steps and output format, so the two run
back to back on one machine and their ratio is taken in one sitting.

    pip install torch          # CPU or CUDA build
    python3 scripts/bench_pytorch.py --out bench            # writes bench/pytorch_train.{json,md}
    target/release/bench train --out bench                  # writes bench/bench_train.{json,md}
    python3 scripts/bench_pytorch.py --ops --batches 128    # ResNet-18's layers alone
    target/release/bench ops --batch 128                    # the same layers, ours

What is measured (as crates/cli/src/train_bench.rs):
- train: forward, cross-entropy, backward, SGD (lr 0.1, momentum 0.9, Nesterov, wd 5e-4) step;
  the loss is read back to the host each step (`loss.item()`), which waits for the device.
- eval: forward of the model in eval mode under `torch.inference_mode()`, logits read back.
- Fixed random 32x32 inputs on the device, 10 classes; `warmup` untimed steps, then the median
  of `steps` timed steps -> images/s.
- Variants: eager NCHW, eager channels-last, and `torch.compile` (NCHW) where it works.
- Peak memory: every configuration runs in a subprocess; on CPU the resident-set high-water
  mark (VmHWM) minus the resident set before the model was built (after `import torch`); on
  CUDA `torch.cuda.max_memory_allocated()`.
- Threads: `torch.set_num_threads(--threads)` (default: all cores, as `bench train` uses).

The networks are the ones oodforge trains: OpenOOD's ResNet-18 32x32, the OE/energy WRN-40-2
(dropout 0.3) and a ViT-Tiny with 4x4 patches (dim 192, depth 12, 3 heads, MLP 768).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- networks -------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18_32x32(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class WrnBlock(nn.Module):
    def __init__(self, cin, cout, stride, drop):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop = drop
        self.equal = cin == cout
        self.short = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = F.relu(self.bn2(y))
        if self.drop > 0:
            y = F.dropout(y, p=self.drop, training=self.training)
        y = self.conv2(y)
        return y + (x if self.equal else self.short(o))


class WRN(nn.Module):
    def __init__(self, depth=40, widen=2, drop=0.3, classes=10):
        super().__init__()
        n = (depth - 4) // 6
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        blocks = []
        for i, stride in enumerate([1, 2, 2]):
            for j in range(n):
                blocks.append(WrnBlock(ch[i] if j == 0 else ch[i + 1], ch[i + 1], stride if j == 0 else 1, drop))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], classes)

    def forward(self, x):
        x = F.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ViT(nn.Module):
    def __init__(self, image=32, patch=4, dim=192, depth=12, heads=3, mlp=768, classes=10):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        n = (image // patch) ** 2
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, n + 1, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.encoder(x))[:, 0])


MODELS = {"resnet18_cifar": ResNet18_32x32, "wrn40_2": WRN, "vit_tiny": ViT}
VARIANTS = ["eager_nchw", "eager_channels_last", "compile"]


# ---- measurement ----------------------------------------------------------------------------
def status_kib(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_ms(warmup, steps, device, fn):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def child(spec, warmup, steps, threads):
    variant, model_name, batch, mode, device_name = spec.split(",")
    batch = int(batch)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device(device_name)
    base = status_kib("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    net = MODELS[model_name]().to(device)
    x = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
    y = torch.arange(batch, device=device) % 10
    if variant == "eager_channels_last":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fn = torch.compile(net) if variant == "compile" else net
    if mode == "train":
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(fn(x), y)
            loss.backward()
            opt.step()
            loss.item()
    else:
        net.eval()

        def step():
            with torch.inference_mode():
                fn(x).cpu()
    median = median_ms(warmup, steps, device, step) / 1e3
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        hwm = status_kib("VmHWM")
        peak = (hwm - base) / 1024 if hwm is not None and base is not None else None
    return {
        "framework": "pytorch",
        "backend": variant,
        "device": f"{device_name} ({torch.get_num_threads()} threads, torch {torch.__version__})",
        "model": model_name,
        "batch": batch,
        "mode": mode,
        "images_per_s": batch / median,
        "median_step_s": median,
        "steps": steps,
        "peak_mib": peak,
    }


# ResNet-18 CIFAR's layers timed alone, as `bench ops` (crates/cli/src/train_bench.rs, OPS):
# name, input channels, output channels, kernel (0: not a convolution), stride, input side.
OPS = [
    ("conv3x3_64", 64, 64, 3, 1, 32),
    ("conv3x3_128", 128, 128, 3, 1, 16),
    ("conv3x3_256", 256, 256, 3, 1, 8),
    ("conv3x3_512", 512, 512, 3, 1, 4),
    ("conv3x3_s2_64_128", 64, 128, 3, 2, 32),
    ("conv1x1_s2_64_128", 64, 128, 1, 2, 32),
    ("batchnorm_64", 64, 64, 0, 1, 32),
    ("relu_64", 64, 64, 0, 1, 32),
    ("batchnorm_relu_64", 64, 64, 0, 1, 32),
]


def ops(batch, device_name, warmup, steps, threads, channels_last):
    """Forward (inference) and forward + backward (input and parameter gradients) of each layer."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device(device_name)
    rows = []
    for name, cin, cout, k, stride, side in OPS:
        if name.startswith("batchnorm_relu"):
            layer = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU())
        elif name.startswith("batchnorm"):
            layer = nn.BatchNorm2d(cin)
        elif name.startswith("relu"):
            layer = nn.ReLU()
        else:
            layer = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        layer = layer.to(device)
        x = torch.rand(batch, cin, side, side, device=device) * 2 - 1
        if channels_last:
            layer = layer.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)

        def forward():
            layer.eval()
            with torch.inference_mode():
                layer(x).cpu()

        xg = x.clone().requires_grad_(True)

        def train():
            layer.train()
            layer.zero_grad(set_to_none=True)
            xg.grad = None
            layer(xg).sum().backward()
            xg.grad.cpu()

        rows.append({
            "framework": "pytorch",
            "backend": "eager_channels_last" if channels_last else "eager_nchw",
            "op": name,
            "input": [batch, cin, side, side],
            "forward_ms": median_ms(warmup, steps, device, forward),
            "train_ms": median_ms(warmup, steps, device, train),
        })
    return rows


def ops_markdown(rows):
    out = ["| framework | backend | op | input | forward ms | forward+backward ms |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        n, c, h, w = r["input"]
        out.append(f"| {r['framework']} | {r['backend']} | {r['op']} | {n}x{c}x{h}x{w} | "
                   f"{r['forward_ms']:.2f} | {r['train_ms']:.2f} |")
    return "\n".join(out) + "\n"


def markdown(rows):
    out = ["| framework | backend | model | batch | mode | images/s | median step (s) | peak MiB |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        out.append(f"| {r['framework']} | {r['backend']} | {r['model']} | {r['batch']} | {r['mode']} | "
                   f"{r['images_per_s']:.1f} | {r['median_step_s']:.4f} | {peak} |")
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet18_cifar,wrn40_2,vit_tiny")
    p.add_argument("--batches", default="32,128")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default="bench")
    p.add_argument("--ops", action="store_true",
                   help="time ResNet-18's layers alone (as `bench ops`) at the first of --batches; "
                        "writes pytorch_ops.{json,md}")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.ops:
        batch = int(a.batches.split(",")[0])
        rows = []
        for variant in a.variants.split(","):
            if variant in ("eager_nchw", "eager_channels_last"):
                rows += ops(batch, a.device, a.warmup, a.steps, a.threads, variant == "eager_channels_last")
        md = ops_markdown(rows)
        print(md, end="")
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "pytorch_ops.json"), "w") as f:
            json.dump({"batch": batch, "warmup": a.warmup, "steps": a.steps, "results": rows}, f, indent=2)
        with open(os.path.join(a.out, "pytorch_ops.md"), "w") as f:
            f.write(md)
        return
    if a.child:
        print(json.dumps(child(a.child, a.warmup, a.steps, a.threads)))
        return
    rows = []
    for variant in a.variants.split(","):
        for model in a.models.split(","):
            for batch in a.batches.split(","):
                for mode in ["train", "eval"]:
                    spec = f"{variant},{model},{batch},{mode},{a.device}"
                    r = subprocess.run([sys.executable, __file__, "--child", spec, "--warmup", str(a.warmup),
                                        "--steps", str(a.steps), "--threads", str(a.threads)],
                                       capture_output=True, text=True)
                    if r.returncode != 0:
                        # torch.compile needs a C++ compiler and Triton/inductor support; say so, go on.
                        print(f"skipped {spec}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'failed'}",
                              file=sys.stderr)
                        continue
                    row = json.loads(r.stdout.strip().splitlines()[-1])
                    print(f"{variant:<20} {model:<15} batch {batch:>4} {mode:<5} {row['images_per_s']:>9.1f} images/s")
                    rows.append(row)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "pytorch_train.json"), "w") as f:
        json.dump({"machine": {"cpus": os.cpu_count(), "os": sys.platform}, "warmup": a.warmup,
                   "steps": a.steps, "results": rows}, f, indent=2)
    with open(os.path.join(a.out, "pytorch_train.md"), "w") as f:
        f.write(markdown(rows))
    print(f"wrote {a.out}/pytorch_train.json and {a.out}/pytorch_train.md")


if __name__ == "__main__":
    main()
