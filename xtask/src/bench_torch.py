# The PyTorch side of `cargo xtask bench-train`: the same network, optimiser and batch.
# Prints "ready", then for each line "STEPS" on stdin answers
# "<train img/s> <infer img/s at batch 1> <infer img/s at batch 256> <cores busy training>",
# the last the process's CPU time (all its threads) over the wall time of the timed steps.
import sys, time
import torch
from torch import nn

batch_size, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(1, 64, 3), nn.BatchNorm2d(64), nn.GELU(), nn.MaxPool2d(2),
    nn.Conv2d(64, 64, 3), nn.BatchNorm2d(64), nn.GELU(), nn.MaxPool2d(2), nn.Flatten(),
    nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10),
)
optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
images = torch.randn(batch_size, 1, 28, 28)
labels = torch.arange(batch_size) % 10

def step():
    optimiser.zero_grad()
    loss_fn(model(images), labels).backward()
    optimiser.step()

def infer_rate(batch, repeats):
    x = torch.full((batch, 1, 28, 28), 0.1)
    model.eval()
    with torch.no_grad():
        torch.softmax(model(x), 1)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.softmax(model(x), 1)
        elapsed = time.perf_counter() - start
    model.train()
    return batch * repeats / elapsed

print("ready", flush=True)
for line in sys.stdin:
    steps = int(line)
    step()
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    train, cores = steps * batch_size / elapsed, (time.process_time() - cpu) / elapsed
    print(f"{train} {infer_rate(1, 200)} {infer_rate(256, 4)} {cores}", flush=True)
