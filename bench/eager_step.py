#!/usr/bin/env python3
"""Plain PyTorch eager training step of torchvision's ResNet-18 on CPU: the
floor under both mpq's FP step (bench/qat_bench.cpp) and the original's.

Forward, label-smoothing cross-entropy, backward, SGD (momentum 0.9,
nesterov), on one fixed random batch, as qat_bench's FP step. NCHW and
channels-last steps alternate; prints the median of each.

Usage: python bench/eager_step.py [steps] [threads] [batch]
"""
import statistics
import sys
import time

import torch
import torchvision


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    runs = {}
    for layout in ("nchw", "channels_last"):
        net = torchvision.models.resnet18(num_classes=1000).train()
        x = torch.randn(batch, 3, 224, 224)
        if layout == "channels_last":
            net = net.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(1000, (batch,))
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
        print(f"RESULT resnet18 {layout} {m * 1e3:.1f} ms {batch / m:.2f} img/s (torch {torch.__version__})")


if __name__ == "__main__":
    main()
