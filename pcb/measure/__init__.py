"""Measuring as the field does: MLPerf LoadGen as the harness for in-process backends
(`loadgen_harness`), its summary log read back (`loadgen_summary`), repeats judged for
stability with the load average around them (`stability`), and the perf stage's sweep built on
them (`perf_loadgen`).

A library-layer package of its own so that the perf stage, the bench and the GPU script share
one implementation, and so that LoadGen (an optional import) stays out of every other module.
"""

# How the perf stage times an in-process backend: LoadGen (the default), or the fixed number of
# batches it timed before (--iterations).
PERF_TIMERS = ("loadgen", "fixed")
# LoadGen's own defaults for min_duration_ms and min_query_count (TestSettings(); test_measure
# checks them against the installed LoadGen), in the perf stage's units.
DEFAULT_MIN_DURATION_S = 10.0
DEFAULT_MIN_QUERIES = 100
# Offline runs per batch size, whose spread decides stable / unstable.
DEFAULT_REPEATS = 3
