"""Test-wide settings: one BLAS thread.

The tests run thousands of tiny forward passes; OpenBLAS's thread pool makes each of them
many times slower on a busy 2-core machine (check on mlp: 28 s at load 5, 2.7 s with one
thread). Set before NumPy is first imported, and inherited by every subprocess.
"""

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
