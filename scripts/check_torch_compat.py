#!/usr/bin/env python3
"""Load an rws-trained checkpoint into the equivalent PyTorch module and compare test accuracy.

Usage: scripts/check_torch_compat.py MODEL.safetensors [--data DIR] [--limit N] [--rws target/release/rws]

Builds the torchvision-style module named by the checkpoint's `rws.arch` metadata (vgg:CFG,
vgg-bn:CFG, vgg16, vgg16_bn, resnet18, resnet50), loads the tensors with strict=True, evaluates
on the Fashion-MNIST test set and compares with `rws eval --json` on the same images.
Needs torch (pip install torch); not part of CI.
"""
import argparse, gzip, json, os, subprocess, sys
import numpy as np
import torch, torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file


class Normalize(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.register_buffer("mean", torch.zeros(c))
        self.register_buffer("std", torch.ones(c))

    def forward(self, x):
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)


class CfgVGG(nn.Module):
    """The RWS authors' VGG: torchvision's feature stack, global average pool, one linear layer."""

    def __init__(self, cfg, bn, cin, nc):
        super().__init__()
        self.normalize = Normalize(cin)
        layers, c = [], cin
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(nn.Conv2d(c, v, 3, padding=1))
                if bn:
                    layers.append(nn.BatchNorm2d(v))
                layers.append(nn.ReLU(inplace=True))
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, nc)

    def forward(self, x):
        x = self.features(self.normalize(x))
        return self.classifier(x.mean((2, 3)))


class Wrapped(nn.Module):
    """A torchvision model with the rws input normalisation in front."""

    def __init__(self, net, cin):
        super().__init__()
        self.normalize = Normalize(cin)
        self.net = net

    def forward(self, x):
        return self.net(self.normalize(x))


def build(arch, cin, nc):
    for prefix, bn in (("vgg:", False), ("vgg-bn:", True)):
        if arch.startswith(prefix):
            cfg = [v if v.upper() == "M" else int(v) for v in arch[len(prefix):].split(",")]
            cfg = ["M" if v == "m" else v for v in cfg]
            return CfgVGG(cfg, bn, cin, nc), ""
    import torchvision
    net = getattr(torchvision.models, arch)(num_classes=nc)
    if cin != 3:
        first = "conv1" if arch.startswith("resnet") else None
        if first:
            net.conv1 = nn.Conv2d(cin, 64, 7, 2, 3, bias=False)
        else:
            net.features[0] = nn.Conv2d(cin, 64, 3, padding=1)
    return Wrapped(net, cin), "net."


def read_idx(path):
    with gzip.open(path) if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--data", default=os.environ.get("RWS_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--rws", default="target/release/rws")
    a = ap.parse_args()
    with safe_open(a.model, "pt") as f:
        meta = f.metadata() or {}
    arch, nc, cin = meta["rws.arch"], int(meta["rws.num_classes"]), int(meta["rws.in_channels"])
    sd = load_file(a.model)
    model, prefix = build(arch, cin, nc)
    sd = {(k if k.startswith("normalize.") else prefix + k): v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True)
    model.eval()
    x = read_idx(os.path.join(a.data, "t10k-images-idx3-ubyte.gz"))[: a.limit]
    y = read_idx(os.path.join(a.data, "t10k-labels-idx1-ubyte.gz"))[: a.limit]
    xt = torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)
    with torch.no_grad():
        pred = torch.cat([model(xt[i: i + 500]).argmax(1) for i in range(0, len(xt), 500)])
    torch_acc = 100.0 * (pred.numpy() == y).mean()
    out = subprocess.run([a.rws, "eval", a.model, "--data", f"fashion-mnist:test@limit={a.limit}", "--json"],
                         check=True, capture_output=True, text=True).stdout
    rws_acc = json.loads(out)["ta"]
    print(f"{arch}: strict load OK; PyTorch test accuracy {torch_acc:.2f}%, rws {rws_acc:.2f}% on {len(y)} images")
    if abs(torch_acc - rws_acc) > 0.1:
        sys.exit("accuracies differ by more than 0.1 points")


if __name__ == "__main__":
    main()
