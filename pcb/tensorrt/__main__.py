"""`python -m pcb.tensorrt <trt-calibrate|trt-perf|trt-infer>`: the TensorRT stages alone."""

from __future__ import annotations

import sys

from ..cli.tensorrt import main

sys.exit(main())
