#!/usr/bin/env python3
"""PyTorch side of the training-engine speed benchmark: the issue's reference CNN (conv 1->32->32,
pool, 32->64->64, pool, each conv + BN + ReLU; linear 3136->128->10) on Fashion-MNIST-shaped random
data, SGD momentum 0.9 / wd 5e-4, same batch and thread count as
`cargo bench -p rws-nn --bench train_speed`.

usage: python3 scripts/bench_train_pytorch.py [BATCHES] [BATCH] [THREADS]
"""
import sys
import time

import torch
import torch.nn as nn

batches = int(sys.argv[1]) if len(sys.argv) > 1 else 20
bs = int(sys.argv[2]) if len(sys.argv) > 2 else 128
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)


def block(i, o):
    return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]


net = nn.Sequential(
    *block(1, 32), *block(32, 32), nn.MaxPool2d(2),
    *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10),
)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
data = [(torch.rand(bs, 1, 28, 28), torch.randint(0, 10, (bs,))) for _ in range(min(batches, 8))]
loss_fn = nn.CrossEntropyLoss()
warm = 2

net.train()
for i in range(warm + batches):
    if i == warm:
        t0, c0 = time.perf_counter(), time.process_time()
    x, y = data[i % len(data)]
    opt.zero_grad()
    loss = loss_fn(net(x), y)
    loss.backward()
    opt.step()
train = batches * bs / (time.perf_counter() - t0)
train_cpu = batches * bs / (time.process_time() - c0)

net.eval()
with torch.no_grad():
    for i in range(warm + batches):
        if i == warm:
            t0, c0 = time.perf_counter(), time.process_time()
        x, _ = data[i % len(data)]
        net(x).argmax(1)
eval_ = batches * bs / (time.perf_counter() - t0)
eval_cpu = batches * bs / (time.process_time() - c0)
print(f"threads {torch.get_num_threads()} batch {bs} batches {batches} torch {torch.__version__}")
print(f"pytorch train {train:8.1f} img/s   eval {eval_:8.1f} img/s   "
      f"(per CPU-second: train {train_cpu:8.1f}, eval {eval_cpu:8.1f})")
