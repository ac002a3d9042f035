import numpy as np
import torch

from tokenfunnel.models import dinov2_onnx


def test_converted_dinov2_matches_onnxruntime_on_a_real_photo(astronaut):
    import onnx
    import onnxruntime

    image = astronaut.resize((224, 224))
    pixels = (np.asarray(image, dtype=np.float32) / 255 - dinov2_onnx.IMAGE_MEAN) / dinov2_onnx.IMAGE_STD
    pixels = pixels.transpose(2, 0, 1)[None].astype(np.float32)
    graph = onnx.load(str(dinov2_onnx.onnx_path()))
    # The file only outputs the saliency map; expose the backbone's final hidden state.
    graph.graph.output.append(
        onnx.helper.make_tensor_value_info(dinov2_onnx.BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None)
    )
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = session.run([dinov2_onnx.BACKBONE_OUTPUT], {"input_image": pixels})[0]

    model = dinov2_onnx.build_dinov2()
    with torch.no_grad():
        ours = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()

    assert ours.shape == reference.shape == (1, 257, 384)
    assert np.abs(ours - reference).max() <= 1e-4


def test_conversion_finds_all_anonymous_matmul_weights():
    state = dinov2_onnx.convert_state_dict()
    for layer in range(12):
        assert state[f"encoder.layer.{layer}.mlp.fc1.weight"].shape == (1536, 384)
        assert state[f"encoder.layer.{layer}.mlp.fc2.weight"].shape == (384, 1536)
        assert state[f"encoder.layer.{layer}.attention.q_proj.weight"].shape == (384, 384)
    assert state["embeddings.position_embeddings"].shape == (1, 1370, 384)
