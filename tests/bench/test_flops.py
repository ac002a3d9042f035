"""Analytic FLOPs against hand computations on tiny configs."""

from transformers import CLIPVisionConfig, Dinov2Config, LlamaConfig

from tokenfunnel.bench.flops import context_flops, encoder_flops, layer_flops, prefill_flops, vit_layer_flops


def test_vit_layer_by_hand():
    config = CLIPVisionConfig(hidden_size=4, intermediate_size=8, num_attention_heads=2)
    # 3 tokens, width 4: q/k/v/o 4 x (2*3*4*4) = 384; MLP 2 x (2*3*4*8) = 384; scores + sum 2 x (2*3*3*4) = 144
    assert vit_layer_flops(3, config) == 384 + 384 + 144
    assert encoder_flops([3, 3, 1], config) == 2 * 912 + (2 * 1 * 4 * 16 + 2 * 1 * 4 * 16 + 4 * 1 * 4)


def test_dinov2_mlp_ratio_and_swiglu():
    plain = Dinov2Config(hidden_size=6, mlp_ratio=3, num_attention_heads=2)
    assert vit_layer_flops(1, plain) == 2 * 4 * 36 + 2 * 6 * 36 + 4 * 6  # MLP 6 -> 18 -> 6
    gated = Dinov2Config(hidden_size=6, mlp_ratio=3, num_attention_heads=2, use_swiglu_ffn=True)
    # SwiGLU width: int(18 * 2/3) = 12, rounded up to a multiple of 8 = 16; three matrices of 6 x 16
    assert vit_layer_flops(1, gated) == 2 * 4 * 36 + 2 * 6 * 48 + 4 * 6


def test_decoder_layer_by_hand():
    config = LlamaConfig(hidden_size=4, intermediate_size=8, num_attention_heads=2, num_key_value_heads=1)
    # 3 tokens, head_dim 2: q,o 2 heads and k,v 1 head: 2*3*4*2*(4+2) = 288; gated MLP 2*3*3*4*8 = 576;
    # causal attention over 1+2+3 = 6 visible pairs: 2 * 2 * 6 * 2 heads * 2 = 96
    assert layer_flops(3, config) == 288 + 576 + 96
    assert prefill_flops([3, 3], config) == 2 * 960


def test_frozen_context_by_hand():
    config = LlamaConfig(hidden_size=4, intermediate_size=8, num_attention_heads=2, num_key_value_heads=1)
    # 5 frozen tokens, head_dim 2, one key/value head: k,v 2*5*4*2*2 = 160; 3 visual queries over them: 2*2*3*5*2*2
    assert context_flops([5], [3], config) == 160 + 240
    assert context_flops([0, 5], [7, 3], config) == 400
