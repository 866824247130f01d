"""A tiny ONNX stand-in for PCB (same input and output interface) for fast tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper


def make_tiny_model(
    path: Path, batch: int | str = "N", input_name: str = "input_1", height: int = 384
) -> Path:
    """input_1 [N,3,384,128] -> AveragePool(64x128) -> 1x1 Conv -> output_1 [N,2048,6,1]."""
    rng = np.random.default_rng(1)
    weight = helper.make_tensor(
        "w", TensorProto.FLOAT, [2048, 3, 1, 1], rng.standard_normal(2048 * 3).tolist()
    )
    nodes = [
        helper.make_node(
            "AveragePool", [input_name], ["pooled"], kernel_shape=[64, 128], strides=[64, 128]
        ),
        helper.make_node("Conv", ["pooled", "w"], ["output_1"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_pcb",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, height, 128])],
        [helper.make_tensor_value_info("output_1", TensorProto.FLOAT, [batch, 2048, 6, 1])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7  # readable by every onnxruntime >= 1.16
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
