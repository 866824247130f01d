"""`invoke bench`: the measurements that drive the speed work, as ratios taken in one run.

One module per benchmark (rerun, preprocessing, evaluation, cpu_inference, loadgen, torch,
int8, market_scale), each a function taking a `BenchConfig` and returning a `BenchResult` of
`Figure`s (a value, its target, met or not); `runner` runs them in order, prints one table
and writes results/bench/<date>.json, which `compare` sets beside a later run's. Absolute
times on a shared 2-core machine are noisy, so every target is a ratio against something
measured in the same run on the same machine. `gpu_script` is the prepared measurement for a
bare GPU host (scripts/gpu-measure).
"""

from __future__ import annotations
