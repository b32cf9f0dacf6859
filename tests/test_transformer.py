"""Our EasyAnimate MMDiT against diffusers' EasyAnimateTransformer3DModel on the same random weights."""

import pytest
import torch
import torch.nn.functional as F
from diffusers import EasyAnimateTransformer3DModel
from diffusers.models.transformers.transformer_easyanimate import EasyAnimateRotaryPosEmbed

from easyanimate_core.configs import TransformerConfig, Variant
from easyanimate_core.keys import transformer_to_ours
from easyanimate_core.transformer import EasyAnimateTransformer, apply_rope, rope_3d

BASE = dict(num_attention_heads=2, attention_head_dim=16, out_channels=4, patch_size=2, time_embed_dim=24)
CASES = {
    # V5.1 style: Qwen projection with RMS norm, last block single-stream, after_norm.
    "t2v": dict(
        in_channels=4, num_layers=3, mmdit_layers=2, text_embed_dim=20, add_norm_text_encoder=True, after_norm=True
    ),
    "inp": dict(in_channels=9, num_layers=2, mmdit_layers=2, text_embed_dim=20, add_norm_text_encoder=True),
    "control": dict(
        in_channels=12, num_layers=2, mmdit_layers=1, text_embed_dim=20, add_ref_latent_in_control_model=True
    ),
    "camera": dict(
        in_channels=14, num_layers=2, mmdit_layers=2, text_embed_dim=20, add_ref_latent_in_control_model=True
    ),
    # V5 style: Bert (text_embed_dim) + T5 (text_embed_dim_t5), no input norm.
    "v5": dict(in_channels=4, num_layers=2, mmdit_layers=2, text_embed_dim=12, text_embed_dim_t5=18, after_norm=True),
}
EXPECTED_VARIANT = {
    "t2v": Variant.T2V,
    "inp": Variant.INP,
    "control": Variant.CONTROL,
    "camera": Variant.CAMERA,
    "v5": Variant.T2V,
}


def make_pair(case: str, seed: int = 0):
    kw = {**BASE, **CASES[case]}
    torch.manual_seed(seed)
    ref = EasyAnimateTransformer3DModel(**{k: v for k, v in kw.items() if k != "add_ref_latent_in_control_model"})
    ref.eval()
    with torch.no_grad():
        for p in ref.parameters():  # random weights everywhere, norms and zero-inits included
            p.copy_(torch.randn_like(p) * 0.3)
    ours = EasyAnimateTransformer(TransformerConfig.from_dict(kw)).eval()
    ours.load_state_dict(transformer_to_ours(ref.state_dict()), strict=True)
    return ref, ours, kw


def inputs(kw, frames=3, h=8, w=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    c = kw["out_channels"]
    x = torch.randn(2, c, frames, h, w, generator=g)
    extra_c = kw["in_channels"] - c
    extra = torch.randn(2, extra_c, frames, h, w, generator=g) if extra_c else None
    txt = torch.randn(2, 7, kw["text_embed_dim"], generator=g)
    txt5 = torch.randn(2, 5, kw["text_embed_dim_t5"], generator=g) if kw.get("text_embed_dim_t5") else None
    return x, torch.tensor([999.0, 37.5]), txt, txt5, extra


@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_diffusers(case):
    ref, ours, kw = make_pair(case)
    assert ours.config.variant == EXPECTED_VARIANT[case]
    x, t, txt, txt5, extra = inputs(kw)
    is_inp = case == "inp"
    with torch.no_grad():
        expected = ref(
            x,
            t,
            encoder_hidden_states=txt,
            encoder_hidden_states_t5=txt5,
            inpaint_latents=extra if is_inp else None,
            control_latents=None if is_inp else extra,
            return_dict=False,
        )[0]
        got = ours(x, t, txt, txt5, inpaint=extra if is_inp else None, control=None if is_inp else extra)
    assert got.shape == x.shape
    assert expected.abs().max() > 0.1  # the comparison is not between two near-zero tensors
    assert (got - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("grid", [(1, 4, 4), (3, 8, 12), (2, 16, 6), (5, 30, 45), (2, 60, 106)])
def test_rope_matches_diffusers(grid):
    t, h, w = grid
    ref_cos, ref_sin = EasyAnimateRotaryPosEmbed(2, 64)(torch.zeros(1, 4, t, 2 * h, 2 * w))
    cos, sin = rope_3d(64, t, h, w)
    assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)


def test_apply_rope_rotates_pairs():
    x = torch.tensor([[[[1.0, 0.0, 0.0, 2.0]]]])  # [B, H, L, D] with pairs (1, 0) and (0, 2)
    angle = torch.tensor([torch.pi / 2, torch.pi / 2, torch.pi, torch.pi])
    out = apply_rope(x, (angle.cos()[None], angle.sin()[None]))
    # (1, 0) rotated by 90 degrees is (0, 1); (0, 2) rotated by 180 degrees is (0, -2)
    assert torch.allclose(out, torch.tensor([[[[0.0, 1.0, 0.0, -2.0]]]]), atol=1e-6)


def test_single_stream_blocks_project_text_like_the_original():
    """With two or more single-stream blocks, diffusers 0.42 skips ``to_out`` on the text stream; the
    original EasyAnimate (whose weights these are) applies ``attn1.to_out`` to the whole joint sequence.
    We follow the original: the text stream after a single-stream block equals a hand computation."""
    kw = {**BASE, **CASES["t2v"], "num_layers": 4}  # blocks 2 and 3 single-stream; 3 is the last
    torch.manual_seed(0)
    ours = EasyAnimateTransformer(TransformerConfig.from_dict(kw)).eval()
    block = ours.transformer_blocks[2]
    assert block.attn2 is None and not block.last
    g = torch.Generator().manual_seed(3)
    x, txt = torch.randn(1, 24, 32, generator=g), torch.randn(1, 5, 32, generator=g)
    temb = torch.randn(1, 24, generator=g)
    rope = ours.rope(1, 8, 12)
    with torch.no_grad():
        got_x, got_txt = block(x, txt, temb, rope)
        nx, nt, gate, t_gate = block.norm1(x, txt, temb)
        joint = torch.cat([nt, nx], 1)  # [1, 5 + 24, 32]
        q, k, v = (getattr(block.attn1, n)(joint).view(1, -1, 2, 16).transpose(1, 2) for n in ("to_q", "to_k", "to_v"))
        q, k = block.attn1.norm_q(q), block.attn1.norm_k(k)
        q = torch.cat([q[:, :, :5], apply_rope(q[:, :, 5:], rope)], 2)
        k = torch.cat([k[:, :, :5], apply_rope(k[:, :, 5:], rope)], 2)
        a = block.attn1.to_out[0](F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, -1, 32))
        x1, txt1 = x + gate * a[:, 5:], txt + t_gate * a[:, :5]  # to_out applied to the text part too
        nx2, nt2, gate2, t_gate2 = block.norm2(x1, txt1, temb)
        expected_x = x1 + gate2 * block.norm3(block.ff(nx2))
        expected_txt = txt1 + t_gate2 * block.norm3(block.ff(nt2))
    assert torch.allclose(got_x, expected_x, atol=1e-5)
    assert torch.allclose(got_txt, expected_txt, atol=1e-5)


@pytest.mark.parametrize("case", ["t2v", "inp"])  # single-stream and multi-modal last blocks
def test_last_block_updates_only_the_video_tokens(case):
    """The last block skips the text stream's output (nothing reads it): its video output equals the same block
    computing both streams, and the text tokens come back as given."""
    _, ours, kw = make_pair(case)
    last = ours.transformer_blocks[-1]
    assert last.last and not any(b.last for b in ours.transformer_blocks[:-1])
    g = torch.Generator().manual_seed(5)
    x, txt = torch.randn(2, 24, 32, generator=g), torch.randn(2, 7, 32, generator=g)
    temb, rope = torch.randn(2, 24, generator=g), ours.rope(1, 8, 12)
    with torch.no_grad():
        got_x, got_txt = last(x, txt, temb, rope)
        last.last = False
        try:
            full_x, full_txt = last(x, txt, temb, rope)
        finally:
            last.last = True
    assert got_txt is txt
    assert not torch.allclose(full_txt, txt, atol=1e-3)  # the full block would have changed the text
    assert torch.allclose(got_x, full_x, atol=1e-5) and full_x.abs().max() > 0.1


def test_wrong_conditioning_channels_is_a_clear_error():
    _, ours, kw = make_pair("inp")
    x, t, txt, _, _ = inputs(kw)
    with pytest.raises(ValueError, match="expects 9 input channels .*InP"):
        ours(x, t, txt)


def test_v5_needs_both_text_embeddings():
    _, ours, kw = make_pair("v5")
    x, t, txt, _, _ = inputs(kw)
    with pytest.raises(ValueError, match="T5"):
        ours(x, t, txt)


def test_variant_detection_rejects_unknown_width():
    with pytest.raises(ValueError, match="matches no EasyAnimate variant"):
        _ = TransformerConfig.from_dict({**BASE, "in_channels": 7}).variant
