"""Ascend NPU support: the chips, the vendor tools' command lines and output formats (atc, aoe,
ais_bench, npu-smi, the old benchmark tool), and the stages built on them (convert, NPU
inference and throughput, importing results made by hand).

The parsers and command builders are pure functions, tested on real output text; the stages
run the tools as subprocesses in the cann image, where `with-cann` has sourced the toolkit's
set_env.sh. Everything here runs on the cann image's Python (3.10 to 3.12, that of its
CANN base) as well as on the host's.
"""
