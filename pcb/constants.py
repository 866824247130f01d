"""Numbers fixed by the model and the guide's preprocessing (facts.md sections 1-3)."""

from __future__ import annotations

INPUT_NAME = "input_1"
OUTPUT_NAME = "output_1"
INPUT_CHANNELS = 3
INPUT_HEIGHT = 384
INPUT_WIDTH = 128
INPUT_SHAPE = (INPUT_CHANNELS, INPUT_HEIGHT, INPUT_WIDTH)
# One preprocessed image as raw float32 NCHW: 3 * 384 * 128 * 4 bytes.
INPUT_BYTES = INPUT_CHANNELS * INPUT_HEIGHT * INPUT_WIDTH * 4

NUM_STRIPES = 6
FEATURE_CHANNELS = 2048
FEATURE_SHAPE = (FEATURE_CHANNELS, NUM_STRIPES, 1)
FEATURE_DIM = FEATURE_CHANNELS * NUM_STRIPES  # 12288
FEATURE_BYTES = FEATURE_DIM * 4

NUM_TRAIN_IDS = 751

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

OPSET = 11
DEFAULT_BATCH_SIZES = (1, 4, 8, 16, 32, 64)

SPLITS = ("query", "gallery")
# The backend every other one is compared with (parity, the report's "vs" columns).
REFERENCE_BACKEND = "onnxruntime"
# PyTorch as a backend (pcb/torch_backend.py): the GPU column without TensorRT.
TORCH_BACKENDS = ("torch", "torch-bf16", "torch-fp16")
# Market-1501 folder of each split.
SPLIT_FOLDERS = {"query": "query", "gallery": "bounding_box_test"}

# The guide's published accuracy (section 6.1) and its pass criterion (within 1 point).
GUIDE_ACCURACY = {"top1": 0.921, "top5": 0.969, "top10": 0.981}
GUIDE_TOLERANCE = 0.01

# Written by `pcb demo-data` into the Market root: its numbers are synthetic.
DEMO_MARKER = ".pcb-demo.json"

PCB_3_7_NAME = "PCB_3_7.pt"
PCB_3_7_MD5 = "c5bc5ddabcbcc45f127ead797fe8cb35"
