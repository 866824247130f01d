"""Measuring as the field does: MLPerf LoadGen as the harness for in-process backends
(`loadgen_harness`), its summary log read back (`loadgen_summary`), repeats judged for
stability with the load average around them (`stability`), and the perf stage's sweep built on
them (`perf_loadgen`).

A library-layer package of its own so that the perf stage, the bench and the GPU script share
one implementation, and so that LoadGen (an optional import) stays out of every other module.
"""
