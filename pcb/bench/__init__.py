"""`invoke bench`: the measurements that drive the speed work, as ratios taken in one run.

One module per benchmark (cpu_inference, int8, preprocessing, evaluation, rerun), each a
function taking a `BenchConfig` and returning a `BenchResult` of `Figure`s (a value, its
target, met or not); `runner` runs them in order, prints one table and writes
results/bench/<date>.json. Absolute times on a shared 2-core machine are noisy, so every
target is a ratio against something measured in the same run on the same machine.
"""

from __future__ import annotations
