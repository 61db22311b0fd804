#!/usr/bin/env python3
"""Plain PyTorch eager training step of torchvision's ResNet-18 (224x224), or
of ResNet-20 (28x28, mpq's zoo layout from torchvision blocks), on CPU: the
floor under both mpq's FP step (bench/qat_bench.cpp) and the original's.

Forward, label-smoothing cross-entropy, backward, SGD (momentum 0.9,
nesterov), on one fixed random batch, as qat_bench's FP step. NCHW and
channels-last steps alternate; prints the median of each.

Usage: python bench/eager_step.py [steps] [threads] [batch] [resnet18|resnet20]
"""
import statistics
import sys
import time

import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, conv1x1


def resnet20():
    """mpq's zoo ResNet-20 for 1x28x28 inputs: 3x3 stem of 16, stages 16/32/64 x 3, 1x1 shortcuts."""
    layers = [nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
    inplanes = 16
    for s, planes in enumerate((16, 32, 64)):
        for b in range(3):
            stride = 2 if s > 0 and b == 0 else 1
            ds = None
            if stride != 1 or inplanes != planes:
                ds = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
            layers.append(BasicBlock(inplanes, planes, stride, ds))
            inplanes = planes
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    model = sys.argv[4] if len(sys.argv) > 4 else "resnet18"
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else (16 if model == "resnet18" else 128)
    if model not in ("resnet18", "resnet20"):
        sys.exit(f"eager_step: model {model!r} is not resnet18 or resnet20")
    shape, classes = ((3, 224, 224), 1000) if model == "resnet18" else ((1, 28, 28), 10)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    runs = {}
    for layout in ("nchw", "channels_last"):
        net = (torchvision.models.resnet18(num_classes=1000) if model == "resnet18" else resnet20()).train()
        x = torch.randn(batch, *shape)
        if layout == "channels_last":
            net = net.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(classes, (batch,))
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        runs[layout] = (net, x, y, opt, [])
    for i in range(steps + 2):
        for layout, (net, x, y, opt, times) in runs.items():
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x), y, label_smoothing=0.1)
            loss.backward()
            opt.step()
            if i >= 2:
                times.append(time.perf_counter() - t0)
    for layout, (_, _, _, _, times) in runs.items():
        m = statistics.median(times)
        print(f"RESULT {model} {layout} {m * 1e3:.1f} ms {batch / m:.2f} img/s (torch {torch.__version__})")


if __name__ == "__main__":
    main()
