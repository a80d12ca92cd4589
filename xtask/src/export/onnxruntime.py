# Runs model.onnx in ONNX Runtime on grey images and writes the probabilities.
# argv: model.onnx, images (N x 784 bytes), output (N x 10 float32, little-endian).
import sys

import numpy as np
import onnxruntime

model, images, output = sys.argv[1:4]
session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
pixels = np.fromfile(images, dtype=np.uint8).astype(np.float32).reshape(-1, 1, 28, 28)
rows = [session.run(["probabilities"], {"pixels": pixels[i : i + 1000]})[0] for i in range(0, len(pixels), 1000)]
np.concatenate(rows).astype("<f4").tofile(output)
print(f"onnxruntime {onnxruntime.__version__}: {len(pixels)} images")
