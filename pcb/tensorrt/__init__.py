"""TensorRT on NVIDIA GPUs: trtexec throughput per batch size and GPU accuracy (the guide's 7.3).

Vendor knowledge and the stage bodies; the command line is pcb/cli/, the TensorRT backend and
its CUDA calls pcb/backends/ (tensorrt_backend, cudart), the orchestration pcb/orchestration/.
One concept per module, importable without TensorRT, CUDA or a GPU (only `calibration`
touches them, and only when called):

- `trtexec`: the trtexec command lines (build, load, precision flags, shapes) and precisions.
- `trtexec_output`: parsing trtexec's text (TensorRT 7's block and 8+'s one-line summary).
- `engine_cache`: which saved engine may be reused (cache key + record beside each engine).
- `calibration`: the int8 calibration cache from preprocessed Market-1501 bins.
- `stages`: the stage functions (trt-perf, trt-infer; trt-infer through pcb.infer's loop).
- `tools`: running trtexec and nvidia-smi (through pcb.tool), and what they say first.
- `names`, `flags`, `versions`, `image_matrix`, `timing_json`: names of results, trtexec's
  flags per version, the supported versions and images, trtexec's --exportTimes JSON.
"""
