"""Which operators of a quantized ONNX model lose the most: a per-node error scan against FP32.

Both models run on the same rows with every candidate node's input and output tensor exposed as
a graph output (quantizers keep the FP32 tensor names around the nodes they replace). A node's
error is the relative L2 distance of its output from the FP32 one, minus the largest such error
already present at its inputs: what the node adds, not what it inherits from upstream. This is the
ranking Neural Compressor's `mse` fallback and ModelOpt's sensitivity scan are built on; the steered
search keeps the worst nodes in FP32 first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the operator imports every pass module to plan; numpy loads when a pass runs
    import numpy as np

    from ..data import Inputs


@dataclass(frozen=True)
class NodeError:
    node: str
    op_type: str
    added_error: float  # output error minus the worst input error
    output_error: float


def quantizable_nodes(model_path: Path, op_types: set[str]) -> list:
    """Named FP32 nodes whose type the quantizer handles (unnamed ones cannot be excluded by name)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [node for node in graph.node if node.name and node.op_type in op_types]


def _exposed_session(model_path: Path, tensors: list[str], threads: int):
    """A session that also returns `tensors` (those present in this graph)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    produced = {name for node in model.graph.node for name in node.output} | {i.name for i in model.graph.input}
    have = {o.name for o in model.graph.output}
    for name in tensors:
        if name in produced and name not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, [o.name for o in session.get_outputs()]


def _run(session_and_names, feeds: list[Inputs]) -> dict[str, list[np.ndarray]]:
    session, names = session_and_names
    import numpy as np

    collected: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for feed in feeds:
        for name, value in zip(names, session.run(None, feed)):
            collected[name].append(np.asarray(value, dtype=np.float64))
    return collected


def _relative_error(mine: list[np.ndarray], reference: list[np.ndarray]) -> float:
    import numpy as np

    a, b = np.concatenate([m.ravel() for m in mine]), np.concatenate([r.ravel() for r in reference])
    return float(np.linalg.norm(a - b) / max(float(np.linalg.norm(b)), 1e-12))


def rank_nodes(fp32_path: Path, quantized_path: Path, nodes: list, feeds: list[Inputs], threads: int) -> list[NodeError]:
    """Candidate nodes, most error-adding first."""
    watched = list(dict.fromkeys(name for node in nodes for name in (*node.input, *node.output) if name))
    reference = _run(_exposed_session(fp32_path, watched, threads), feeds)
    quantized = _run(_exposed_session(quantized_path, watched, threads), feeds)
    errors = {name: _relative_error(quantized[name], reference[name])
              for name in watched if name in reference and name in quantized
              and reference[name][0].dtype.kind == "f" and reference[name][0].size}
    ranked = []
    for node in nodes:
        outputs = [errors[name] for name in node.output if name in errors]
        if not outputs:
            continue  # its output is not visible in the quantized graph: nothing measured
        inherited = max((errors[name] for name in node.input if name in errors), default=0.0)
        ranked.append(NodeError(node.name, node.op_type, max(outputs) - inherited, max(outputs)))
    return sorted(ranked, key=lambda e: e.added_error, reverse=True)
