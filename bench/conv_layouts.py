#!/usr/bin/env python3
"""ResNet-18's (224x224) or ResNet-20's (28x28) convolutions in plain PyTorch eager on CPU, NCHW
against channels-last: per layer shape, the forward, the input gradient and
the weight gradient timed apart (aten::convolution_backward with one output
mask at a time), medians of `repeats`, then each summed over the network's
layers (a shape's count times its time); and what one NHWC -> NCHW copy of
layer1's activation costs (64 channels at 56x56 for ResNet-18, 16 at 28x28 for ResNet-20). Where oneDNN's two layouts differ per part, this
says by how much a layout choice per part could move a step; for the one
that differs most on AVX2 machines, the 3x3 weight gradient, it also
times that choice whole: channels-last input and output gradient copied
to NCHW, the weight gradient taken there and copied back.

Usage: python bench/conv_layouts.py [repeats] [threads] [batch] [resnet18|resnet20]
"""
import statistics
import sys
import time

import torch

repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 16
model = sys.argv[4] if len(sys.argv) > 4 else "resnet18"
torch.set_num_threads(threads)

# (in, out, kernel, stride, input side, how many in ResNet-18)
SHAPES = {
    "resnet18": [(3, 64, 7, 2, 224, 1), (64, 64, 3, 1, 56, 4), (64, 128, 3, 2, 56, 1), (128, 128, 3, 1, 28, 3),
                 (64, 128, 1, 2, 56, 1), (128, 256, 3, 2, 28, 1), (256, 256, 3, 1, 14, 3), (128, 256, 1, 2, 28, 1),
                 (256, 512, 3, 2, 14, 1), (512, 512, 3, 1, 7, 3), (256, 512, 1, 2, 14, 1)],
    "resnet20": [(1, 16, 3, 1, 28, 1), (16, 16, 3, 1, 28, 6), (16, 32, 3, 2, 28, 1), (32, 32, 3, 1, 14, 5),
                 (16, 32, 1, 2, 28, 1), (32, 64, 3, 2, 14, 1), (64, 64, 3, 1, 7, 5), (32, 64, 1, 2, 14, 1)],
}
if model not in SHAPES:
    sys.exit(f"conv_layouts: model '{model}' is not one of {', '.join(SHAPES)}")
LAYERS = SHAPES[model]
IMAGE_CHANNELS = LAYERS[0][0]
FORMATS = {"NCHW": torch.contiguous_format, "channels-last": torch.channels_last}
PARTS = ["forward", "input gradient", "weight gradient"]


def median_ms(fn):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


totals = {(f, p): 0.0 for f in FORMATS for p in PARTS}
totals3 = {(f, p): 0.0 for f in FORMATS for p in PARTS}  # 3x3 layers only
mixed3 = 0.0  # 3x3 weight gradients of channels-last tensors taken in NCHW, copies included
print("| layer | count | " + " | ".join(f"{f} {p} (ms)" for f in FORMATS for p in PARTS) + " |")
print("|---|---|" + "---|" * (len(FORMATS) * len(PARTS)))
for cin, cout, k, s, side, count in LAYERS:
    row = []
    for name, fmt in FORMATS.items():
        torch.manual_seed(0)
        w = torch.randn(cout, cin, k, k).to(memory_format=fmt)
        x = torch.randn(batch, cin, side, side).to(memory_format=fmt)
        y = torch.nn.functional.conv2d(x, w, None, s, k // 2)
        g = torch.randn_like(y)

        def backward(mask):
            return torch.ops.aten.convolution_backward(g, x, w, None, [s, s], [k // 2, k // 2], [1, 1], False,
                                                       [0, 0], 1, mask)

        # The first conv's input is the image: no gradient is taken for it in training.
        times = [median_ms(lambda: torch.nn.functional.conv2d(x, w, None, s, k // 2)),
                 median_ms(lambda: backward([True, False, False])) if cin != IMAGE_CHANNELS else 0.0,
                 median_ms(lambda: backward([False, True, False]))]
        for p, t in zip(PARTS, times):
            totals[(name, p)] += count * t
            if k == 3 and cin != IMAGE_CHANNELS:
                totals3[(name, p)] += count * t
        row += times
        if name == "channels-last" and k == 3 and cin != IMAGE_CHANNELS:
            wn = w.contiguous()

            def in_nchw():
                r = torch.ops.aten.convolution_backward(g.contiguous(), x.contiguous(), wn, None, [s, s],
                                                        [k // 2, k // 2], [1, 1], False, [0, 0], 1,
                                                        [False, True, False])
                return r[1].contiguous(memory_format=torch.channels_last)

            mixed3 += count * median_ms(in_nchw)
    print(f"| {cin}->{cout} k{k} s{s} {side}x{side} | {count} | " + " | ".join(f"{t:.1f}" for t in row) + " |")

print()
print(f"| summed over {model}, ms per step | " + " | ".join(FORMATS) + " |")
print("|---|" + "---|" * len(FORMATS))
for p in PARTS:
    print(f"| {p} | " + " | ".join(f"{totals[(f, p)]:.0f}" for f in FORMATS) + " |")
for p in PARTS[1:]:
    print(f"| of it, 3x3 {p} | " + " | ".join(f"{totals3[(f, p)]:.0f}" for f in FORMATS) + " |")
print(f"| 3x3 weight gradient of channels-last tensors, taken in NCHW (copies included) | | {mixed3:.0f} |")
c, side = (64, 56) if model == "resnet18" else (16, 28)
x = torch.randn(batch, c, side, side).to(memory_format=torch.channels_last)
print(f"\nNHWC -> NCHW copy of a {batch}x{c}x{side}x{side} tensor: {median_ms(lambda: x.contiguous()):.2f} ms")
