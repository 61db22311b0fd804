#!/usr/bin/env python3
"""Where a plain PyTorch eager FP training step of a ResNet-20 (28x28,
channels-last, SGD) spends its CPU time, quiet and beside busy processes,
in one run: the step's median time and torch.profiler's share of
BatchNorm, convolution and ReLU, per condition.

"busy" runs the step beside one spinning process per thread, as another
job on the machine would be; quiet and busy alternate, twice each.

Usage: python bench/eager_profile.py [steps] [threads] [batch]
"""
import multiprocessing
import statistics
import sys
import time

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile


def spin():
    while True:
        pass


def resnet20():
    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
                             nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))
    layers, c = [nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(True)], 16
    for cout, s in [(16, 1)] * 3 + [(32, 2)] + [(32, 1)] * 2 + [(64, 2)] + [(64, 1)] * 2:
        layers.append(block(c, cout, s))
        c = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers).to(memory_format=torch.channels_last)


def measure(steps, batch):
    torch.manual_seed(0)
    net = resnet20()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(3):
            step()
    ev = {e.key: e for e in p.key_averages()}
    total = sum(e.self_cpu_time_total for e in ev.values())
    share = lambda *names: 100 * sum(ev[n].self_cpu_time_total for n in names if n in ev) / total
    per_call = lambda n: ev[n].self_cpu_time_total / ev[n].count / 1000 if n in ev else float("nan")
    return {
        "step_ms": 1000 * statistics.median(times),
        "bn_fwd_ms": per_call("aten::native_batch_norm"),
        "bn_share": share("aten::native_batch_norm", "aten::native_batch_norm_backward"),
        "conv_share": share("aten::mkldnn_convolution", "aten::convolution_backward"),
        "relu_share": share("aten::clamp_min_", "aten::threshold_backward", "aten::relu_"),
    }


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    torch.set_num_threads(threads)
    print(f"eager ResNet-20 FP step, batch {batch}, {threads} threads, torch {torch.__version__}")
    print("| condition | step ms | BatchNorm fwd ms/call | BatchNorm fwd+bwd % | conv fwd+bwd % | ReLU fwd+bwd % |")
    print("|---|---|---|---|---|---|")
    for cond in ("quiet", "busy", "quiet", "busy"):
        spinners = []
        if cond == "busy":
            spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(threads)]
            for s in spinners:
                s.start()
        try:
            r = measure(steps, batch)
        finally:
            for s in spinners:
                s.terminate()
                s.join()
        print(f"| {cond} | {r['step_ms']:.0f} | {r['bn_fwd_ms']:.2f} | {r['bn_share']:.1f} | {r['conv_share']:.1f} | "
              f"{r['relu_share']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
