"""Writes python_written.safetensors with the reference implementation.

The C++ reader test opens this file to prove that it reads what Python's
safetensors package writes, and that our writer produces the same bytes for
the same tensors. Run from this folder: python3 make_python_written.py
"""

import numpy as np
from safetensors.numpy import save_file

tensors = {
    "weight": np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5,
    "bias": np.array([-1, 2, -3], dtype=np.int64),
    "scale": np.array(3.25, dtype=np.float64),
    "mask": np.array([True, False, True, True]),
    "half": np.array([[1.5, -2.0]], dtype=np.float16),
    "empty": np.zeros((0, 4), dtype=np.int32),
}
save_file(tensors, "python_written.safetensors", metadata={"format": "pt"})
