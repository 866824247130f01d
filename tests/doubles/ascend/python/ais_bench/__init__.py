"""Test double of ais_bench (see tests/doubles/ascend/README.md)."""
