"""torchvision's ImageFolder + DataLoader with the same training transform as
bench/loader_bench.cpp, for a side-by-side figure (Debian's python3-torchvision).
Usage: /usr/bin/python3 bench/torchvision_loader.py ROOT [epochs]"""
import sys
import time

import torch
from torchvision import datasets, transforms

root = sys.argv[1]
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
torch.set_num_threads(1)
tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                         transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
ds = datasets.ImageFolder(root, tf)
print("| loader | workers | images/s |\n|---|---|---|")
for workers in (0, 2):
    best = 0.0
    for _ in range(epochs):
        dl = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, num_workers=workers)
        t0 = time.time()
        n = sum(x.shape[0] for x, _ in dl)
        best = max(best, n / (time.time() - t0))
    print(f"| torchvision ImageFolder + DataLoader | {workers} | {best:.0f} |")
