"""TensorRT on NVIDIA GPUs: trtexec throughput per batch size and GPU accuracy (the guide's 7.3).

One concept per module, importable without TensorRT, CUDA or a GPU (only `trt_backend`,
`calibration` and `cudart` touch them, and only when called):

- `trtexec`: the trtexec command lines (build, load, precision flags, shapes) and precisions.
- `trtexec_output`: parsing trtexec's text (TensorRT 7's block and 8+'s one-line summary).
- `engine_cache`: which saved engine may be reused (cache key + record beside each engine).
- `cudart`: the few CUDA runtime calls inference needs, through ctypes.
- `trt_backend`: the in-process Backend that runs a saved engine (TensorRT Python API).
- `calibration`: the int8 calibration cache from preprocessed Market-1501 bins.
- `stages`: the stage functions (trt-calibrate, trt-perf, trt-infer).
- `plan`: the StageCalls of the TensorRT part of the pipeline, and their dry-run listing.
- `cli`: the `python -m pcb trt-*` sub-commands (also `python -m pcb.tensorrt`).
"""
