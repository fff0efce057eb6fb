"""Imported first by every tool, before torch loads GNU OpenMP: its waiting threads spin ``GOMP_SPINCOUNT=3000``
times before they sleep instead of libgomp's default of about 300,000, so that a tool sharing the CPU with another
job is not slowed down many-fold by threads spinning for cores the other job needs.

Measured on the 2-core machine (docs/benchmarks.md, "CPU contention"): DenseNet-BC-100 training, batch 32, next to
a second identical job, 6.4x slower than alone with the default, 1.4-1.9x with 3000, at the same speed alone
(``OMP_WAIT_POLICY=PASSIVE``: 1.5x next to another job, but about 10% slower alone). A value already in the
environment wins, and the library itself never changes thread settings on import.
"""

import os

os.environ.setdefault("GOMP_SPINCOUNT", "3000")
