# Loads model.safetensors into the PyTorch module the README shows, strictly, and writes its
# probabilities for grey images.
# argv: model.safetensors, images (N x 784 bytes), output (N x 10 float32, little-endian).
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


class Net(nn.Module):
    def __init__(s):
        super().__init__()
        s.conv1, s.norm1, s.conv2, s.norm2 = nn.Conv2d(1, 64, 3), nn.BatchNorm2d(64), nn.Conv2d(64, 64, 3), nn.BatchNorm2d(64)
        s.fc1, s.fc2, s.fc3 = nn.Linear(1600, 128), nn.Linear(128, 128), nn.Linear(128, 10)

    def forward(s, x):  # x: (grey / 255 - 0.1307) / 0.3081, [N, 1, 28, 28]
        x = F.max_pool2d(F.gelu(s.norm2(s.conv2(F.max_pool2d(F.gelu(s.norm1(s.conv1(x))), 2)))), 2)
        return F.softmax(s.fc3(F.relu(s.fc2(F.relu(s.fc1(x.flatten(1)))))), 1)


weights, images, output = sys.argv[1:4]
net = Net().eval()
net.load_state_dict(load_file(weights), strict=True)
grey = torch.from_numpy(np.fromfile(images, dtype=np.uint8).astype(np.float32).reshape(-1, 1, 28, 28))
with torch.no_grad():
    net((grey / 255 - 0.1307) / 0.3081).numpy().astype("<f4").tofile(output)
print(f"torch {torch.__version__}: {len(grey)} images")
