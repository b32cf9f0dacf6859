"""MagvitVAE against diffusers' AutoencoderKLMagvit on the same tiny random weights (CPU, fp32)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLMagvit
from safetensors.torch import load_file

from easyanimate_core.memory import OutOfMemoryError
from easyanimate_core.testing.vae import (
    make_tiny_vae_state_dict,
    tiny_vae_config,
    tiny_vae_config_original,
    write_tiny_vae,
)
from easyanimate_core.vae import (
    MagvitVAE,
    VAEConfig,
    VAETiling,
    convert_vae_state_dict,
    smaller_tile,
)

TOL = 1e-4  # ours vs diffusers; in practice the outputs are bit-identical on CPU
TILE = 32  # pixels (4 latent pixels); with overlap 8 (stride 24) a 48x48 frame is cut into 2x2 tiles


def _ours(sgn: bool = True, sd: dict | None = None) -> MagvitVAE:
    vae = MagvitVAE.from_config(tiny_vae_config(sgn)).eval()
    vae.load_state_dict(sd if sd is not None else make_tiny_vae_state_dict(0), strict=True)
    return vae


def _diffusers(sgn: bool = True) -> AutoencoderKLMagvit:
    vae = AutoencoderKLMagvit.from_config(tiny_vae_config(sgn)).eval()
    vae.load_state_dict(make_tiny_vae_state_dict(0), strict=True)
    return vae


def _video(frames: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, frames, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _latents(frames: int, size: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 16, frames, size, size, generator=torch.Generator().manual_seed(seed))


def _load_folder(folder: Path) -> MagvitVAE:
    vae = MagvitVAE.from_config(json.loads((folder / "config.json").read_text())).eval()
    vae.load_state_dict(convert_vae_state_dict(load_file(folder / "diffusion_pytorch_model.safetensors")), strict=True)
    return vae


@pytest.fixture(scope="module")
def pair() -> tuple[MagvitVAE, AutoencoderKLMagvit]:
    return _ours(), _diffusers()


@pytest.mark.parametrize("frames", [1, 5, 9])
def test_untiled_matches_diffusers(pair, frames: int) -> None:
    ours, ref = pair
    x = _video(frames)
    with torch.no_grad():
        post = ref.encode(x).latent_dist
        z = _latents((frames - 1) // 4 + 1)
        expected = ref.decode(z).sample
    mean, logvar = ours.encode(x)
    assert mean.shape == (1, 16, (frames - 1) // 4 + 1, 4, 4)
    assert mean.std() > 0.1 and expected.std() > 0.1  # the comparison is not between near-zero tensors
    assert (mean - post.mean).abs().max() <= TOL
    assert (logvar - post.logvar).abs().max() <= TOL
    video = ours.decode(z)
    assert video.shape == (1, 3, frames, 32, 32)
    assert (video - expected).abs().max() <= TOL


def test_joint_group_norm_matches_diffusers() -> None:
    """spatial_group_norm=False: GroupNorm statistics over all frames of a mini-batch."""
    ours, ref = _ours(sgn=False), _diffusers(sgn=False)
    x, z = _video(5), _latents(2)
    with torch.no_grad():
        post, expected = ref.encode(x).latent_dist, ref.decode(z).sample
    mean, _ = ours.encode(x)
    assert (mean - post.mean).abs().max() <= TOL
    assert (ours.decode(z) - expected).abs().max() <= TOL
    assert (mean - _ours(sgn=True).encode(x)[0]).abs().max() > 1e-2  # the option really changes the network


@pytest.mark.parametrize("frames", [1, 5, 9])
def test_tiled_matches_diffusers(pair, frames: int) -> None:
    ours, ref = pair
    x, z = _video(frames, size=48), _latents((frames - 1) // 4 + 1, size=6)
    # decode with overlapping tiles (tile 32 px, stride 24 px: 2x2 tiles)
    ref.enable_tiling(TILE, TILE, tile_sample_stride_height=24, tile_sample_stride_width=24)
    with torch.no_grad():
        expected = ref.decode(z).sample
    video = ours.decode(z, tile=VAETiling(TILE, overlap=0.25))
    assert (video - expected).abs().max() <= TOL
    assert (video - ours.decode(z)).abs().max() > 1e-2  # tiling really happened
    # encode: diffusers' tiled_encode misplaces overlapping tiles (it keeps whole tiles instead of
    # a stride of each), so compare without overlap here and check placement in the next test
    ref.enable_tiling(TILE, TILE, tile_sample_stride_height=TILE, tile_sample_stride_width=TILE)
    with torch.no_grad():
        post = ref.encode(x).latent_dist
    mean, logvar = ours.encode(x, tile=VAETiling(TILE, overlap=0))
    assert (mean - post.mean).abs().max() <= TOL
    assert (logvar - post.logvar).abs().max() <= TOL
    assert (mean - ours.encode(x)[0]).abs().max() > 1e-2


def test_tiled_encode_places_overlapping_tiles(pair) -> None:
    """Outside the blend bands every latent of a tiled encode is its own tile's latent, at the
    tile's position (diffusers' tiled_encode fails this when tiles overlap)."""
    ours = pair[0]
    x = _video(5, size=64)
    mean, _ = ours.encode(x, tile=VAETiling(TILE, overlap=8))  # stride 24 px = 3 latents, blend 1
    assert mean.shape == (1, 16, 2, 8, 8)
    for r in range(3):
        for c in range(3):
            tile_mean, _ = ours.encode(x[:, :, :, 24 * r : 24 * r + TILE, 24 * c : 24 * c + TILE])
            rows = slice(0 if r == 0 else 1, min(3, tile_mean.shape[3]))  # kept and not blended
            cols = slice(0 if c == 0 else 1, min(3, tile_mean.shape[4]))
            got = mean[:, :, :, 3 * r + rows.start : 3 * r + rows.stop, 3 * c + cols.start : 3 * c + cols.stop]
            assert got.numel() > 0
            assert torch.equal(got, tile_mean[:, :, :, rows, cols])


def test_tiled_equals_untiled_when_tiles_cannot_see_borders() -> None:
    """With spatially pointwise weights (only the centre tap of each 3x3) and a spatially uniform
    input, no layer can tell a tile from the whole frame, so tiled == untiled up to rounding
    (float64, tolerance 1e-9); this checks the blend weights sum to one and every pixel is covered
    once. (float64 because in float32 GroupNorm over a few near-equal values is ill-conditioned:
    tiles of some shapes drift by ~3e-3.) With ordinary random weights tiles differ at their
    borders (max |diff| ~ 3 on this tiny VAE), in diffusers as well."""
    sd = make_tiny_vae_state_dict(0)
    for w in sd.values():
        if w.ndim == 5 and w.shape[-1] == 3:
            centre = w[:, :, :, 1, 1].clone()
            w.zero_()
            w[:, :, :, 1, 1] = centre
    vae = _ours(sd=sd).double()
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(1, 3, 5, 1, 1, generator=gen, dtype=torch.float64) * 2 - 1).expand(1, 3, 5, 48, 40)
    z = torch.randn(1, 16, 2, 1, 1, generator=gen, dtype=torch.float64).expand(1, 16, 2, 6, 5)
    tile = VAETiling(TILE, overlap=0.25)
    mean, _ = vae.encode(x)
    video = vae.decode(z)
    assert video.std() > 0.1 and mean.std() > 0.1
    assert (vae.encode(x, tile=tile)[0] - mean).abs().max() <= 1e-9
    assert (vae.decode(z, tile=tile) - video).abs().max() <= 1e-9


def test_original_layout_loads_to_same_outputs(tmp_path: Path) -> None:
    diff = _load_folder(write_tiny_vae(tmp_path / "diffusers" / "vae", layout="diffusers"))
    orig = _load_folder(write_tiny_vae(tmp_path / "original" / "vae", layout="original"))
    assert orig.config == diff.config
    x = _video(5, size=16)
    assert torch.equal(orig.encode(x)[0], diff.encode(x)[0])
    assert torch.equal(orig.decode(_latents(2, size=2)), diff.decode(_latents(2, size=2)))


def test_config_normalisation() -> None:
    cfg = VAEConfig.from_dict(tiny_vae_config_original())
    assert cfg == VAEConfig.from_dict(tiny_vae_config())
    assert cfg.latent_channels == 16 and cfg.scaling_factor == 0.7125
    assert (cfg.spatial_compression, cfg.temporal_compression) == (8, 4)
    real_v51 = {
        k: v for k, v in tiny_vae_config_original().items() if k not in ("block_out_channels", "norm_num_groups")
    }
    real_v51.update(ch=128, ch_mult=[1, 2, 4, 4], down_block_types=str(real_v51["down_block_types"]))
    assert VAEConfig.from_dict(real_v51).block_out_channels == (128, 256, 512, 512)
    assert VAEConfig.from_dict(real_v51).norm_num_groups == 32
    with pytest.raises(ValueError, match="mid_block_use_attention"):
        VAEConfig.from_dict({**tiny_vae_config_original(), "mid_block_use_attention": True})
    with pytest.raises(ValueError, match="cache_mag_vae"):
        VAEConfig.from_dict({**tiny_vae_config_original(), "cache_mag_vae": False, "slice_mag_vae": True})
    with pytest.raises(ValueError, match="unsupported down block"):
        VAEConfig.from_dict({**tiny_vae_config(), "down_block_types": ["DownBlock3D"] * 4})


def test_convert_state_dict() -> None:
    sd = make_tiny_vae_state_dict(0)
    prefixed = {"vae." + k: v for k, v in sd.items()} | {"loss.discriminator.conv.weight": torch.zeros(1)}
    converted = convert_vae_state_dict(prefixed)
    assert converted.keys() == sd.keys()
    assert all(converted[k] is sd[k] for k in sd)
    with pytest.raises(ValueError, match="attention"):
        convert_vae_state_dict({**sd, "encoder.mid_block.attentions.0.to_q.weight": torch.zeros(1)})


def test_bad_input_names_nearest_valid_value(pair) -> None:
    ours = pair[0]
    with pytest.raises(ValueError, match=r"4k\+1 frames, got 6 .*nearest valid value: 5"):
        ours.encode(_video(6))
    with pytest.raises(ValueError, match=r"height must be a multiple of 8, got 34 .*nearest valid value: 32"):
        ours.encode(torch.zeros(1, 3, 1, 34, 32))
    with pytest.raises(ValueError, match=r"width must be a multiple of 8, got 46 .*nearest valid value: 48"):
        ours.encode(torch.zeros(1, 3, 1, 32, 46))
    with pytest.raises(ValueError, match=r"3 channels, got 4 .*nearest valid value: 3"):
        ours.encode(torch.zeros(1, 4, 1, 32, 32))
    with pytest.raises(ValueError, match=r"16 channels, got 8 .*nearest valid value: 16"):
        ours.decode(torch.zeros(1, 8, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\[B, C, T, H, W\]"):
        ours.decode(torch.zeros(16, 1, 4, 4))
    with pytest.raises(ValueError, match="tile_size must be a multiple of 8; nearest: 40"):
        ours.decode(_latents(1, size=8), tile=VAETiling(41))


def test_deterministic_and_stateless(pair) -> None:
    """Same input twice gives identical output, also with another video in between (no cache
    survives a call)."""
    ours = pair[0]
    x, z = _video(5, size=16), _latents(2, size=2)
    first, first_dec = ours.encode(x)[0], ours.decode(z)
    ours.encode(_video(5, size=16, seed=7))
    ours.decode(_latents(2, size=2, seed=7))
    assert torch.equal(ours.encode(x)[0], first)
    assert torch.equal(ours.decode(z), first_dec)


def test_causal(pair) -> None:
    """Latent frame k depends only on pixel frames up to 4k, and decoded frames only on earlier latents."""
    ours = pair[0]
    x, z = _video(9, size=16), _latents(3, size=2)
    # not bit-equal: the 1x1 (post_)quant_conv sees tensors of other shapes and may round differently
    assert (ours.encode(x[:, :, :5])[0] - ours.encode(x)[0][:, :, :2]).abs().max() <= 1e-6
    assert (ours.decode(z[:, :, :2]) - ours.decode(z)[:, :, :5]).abs().max() <= 1e-5
    assert (ours.encode(x)[0][:, :, 2] - ours.encode(x[:, :, :5])[0][:, :, 1]).abs().max() > 1e-2


def test_progress_counts_mini_batches_and_tiles(pair) -> None:
    ours, calls = pair[0], []
    ours.encode(_video(9, size=16), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]  # first frame, then two groups of 4
    calls.clear()
    ours.decode(_latents(3, size=8), tile=VAETiling(TILE, overlap=0), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 12) for i in range(1, 13)]  # 2x2 tiles x 3 latent frames


def test_tiny_state_dict_is_deterministic_and_small() -> None:
    a, b, c = make_tiny_vae_state_dict(0), make_tiny_vae_state_dict(0), make_tiny_vae_state_dict(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["encoder.conv_in.weight"], c["encoder.conv_in.weight"])
    assert sum(v.numel() * v.element_size() for v in a.values()) < 2 * 1024 * 1024


def test_smaller_tile_halves_to_multiples_of_64() -> None:
    assert [smaller_tile(s) for s in (1008, 576, 512, 448, 192, 128, 127, 64)] == [
        448,
        256,
        256,
        192,
        64,
        64,
        None,
        None,
    ]


def _out_of_memory_above(vae: MagvitVAE, method: str, limit: int, monkeypatch, error=None) -> list[int]:
    """Make ``vae.<method>`` (one mini-batch call) raise out-of-memory on inputs wider than ``limit`` (its own
    units: latent pixels for _decode_frames, pixels for _encode_frames); returns the widths it was called on."""
    real, seen = getattr(vae, method), []

    def patched(x: torch.Tensor, tick):
        seen.append(x.shape[-1])
        if x.shape[-1] > limit:
            raise (error or OutOfMemoryError)("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real(x, tick)

    monkeypatch.setattr(vae, method, patched)
    return seen


@pytest.mark.parametrize("first", [None, VAETiling(128)])
def test_out_of_memory_retries_in_smaller_tiles(pair, monkeypatch, caplog, first) -> None:
    ours, _ = pair
    z, x = _latents(3, size=32), _video(5, size=256)  # 256x256 frames
    with torch.no_grad():
        want_decode, want_encode = ours.decode(z, tile=VAETiling(64)), ours.encode(x, tile=VAETiling(64))
    decoded = _out_of_memory_above(ours, "_decode_frames", 8, monkeypatch)  # only 64-pixel tiles fit
    encoded = _out_of_memory_above(ours, "_encode_frames", 64, monkeypatch)
    with caplog.at_level("WARNING", logger="EasyAnimate"):
        got_decode, got_encode = ours.decode(z, tile=first), ours.encode(x, tile=first)
    assert torch.equal(got_decode, want_decode) and all(torch.equal(a, b) for a, b in zip(got_encode, want_encode))
    # each failed attempt stops at its first call: untiled (256) -> 128-pixel tiles -> 64; or 128 -> 64
    tried = [32, 16, 8] if first is None else [16, 8]
    assert decoded[: len(tried)] == tried and encoded[: len(tried)] == [8 * t for t in tried]
    assert max(decoded[len(tried) :]) == 8  # the rest ran in 64-pixel tiles
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 * (len(tried) - 1) and "retrying in 64-pixel tiles" in warnings[-1]
    assert ("untiled" in warnings[0]) == (first is None)


def test_out_of_memory_even_in_the_smallest_tiles_is_raised(pair, monkeypatch) -> None:
    ours, _ = pair
    state = {k: v.clone() for k, v in ours.state_dict().items()}
    seen = _out_of_memory_above(ours, "_decode_frames", 4, monkeypatch)  # not even 64-pixel tiles fit
    with pytest.raises(OutOfMemoryError, match="Tried to allocate") as info:
        ours.decode(_latents(3, size=24))  # 192 px -> 64-pixel tiles -> none smaller
    assert seen == [24, 8]  # 192 px untiled, then the first 64-pixel tile
    assert str(info.value).startswith("out of memory in the VAE decode of 192x192 frames in 64-pixel tiles, the")
    assert "memory mode none the transformer and the text encoder stay there" in info.value.advice
    with pytest.raises(OutOfMemoryError) as info:
        ours.decode(_latents(3, size=12))  # 96 px untiled: no tile smaller than the frame to retry in
    assert " of 96x96 frames untiled: other models" in str(info.value)
    assert all(torch.equal(v, state[k]) for k, v in ours.state_dict().items())


def test_out_of_memory_with_a_tile_as_large_as_the_frame_halves_the_frame_not_the_tile(pair, monkeypatch) -> None:
    """A 4096-pixel tile on 256-pixel frames runs untiled: the retry halves the frame (128), not 4096 (2048, an
    untiled pass again). A pixel overlap becomes the same fraction of the smaller tile, so a stride remains."""
    ours, _ = pair
    z = _latents(3, size=32)  # 256x256 frames
    with torch.no_grad():
        want = ours.decode(z, tile=VAETiling(128, overlap=0.125))
    seen = _out_of_memory_above(ours, "_decode_frames", 16, monkeypatch)  # 128-pixel tiles fit
    got = ours.decode(z, tile=VAETiling(4096, overlap=512))  # 512 px = 1/8 of the tile
    assert seen[:2] == [32, 16] and torch.equal(got, want)


def test_one_bar_over_several_encodes_survives_an_out_of_memory_retry() -> None:
    """builders.in_stages: a retried encode restarts its count mid-way; that stays in its share of the bar."""
    from easyanimate_core.builders import in_stages

    seen = []
    report = in_stages(lambda done, total: seen.append((done, total)), 2)
    for done, total in [(1, 12), (2, 12), (3, 12)] + [(d, 20) for d in range(1, 21)] + [(d, 4) for d in (1, 2, 3, 4)]:
        report(done, total)  # encode 1 fails after 3 of 12 tiles, is retried in 20 smaller ones, then encode 2
    assert seen[:4] == [(1, 24), (2, 24), (3, 24), (1, 40)]  # the retry restarts within the first share
    assert seen[22] == (20, 40) and seen[23:] == [(5, 8), (6, 8), (7, 8), (8, 8)]  # then the second share


@pytest.mark.skipif(not hasattr(torch, "AcceleratorError"), reason="torch.AcceleratorError is torch >= 2.8")
def test_an_accelerator_out_of_memory_error_retries_too_and_other_errors_do_not(pair, monkeypatch) -> None:
    """ROCm and other devices report running out of memory as torch.AcceleratorError; ComfyUI's is_oom counts
    it, and so does the retry. Any other error, even an AcceleratorError, is raised at once."""
    ours, _ = pair
    z = _latents(3, size=32)  # 256x256 frames
    with torch.no_grad():
        want = ours.decode(z, tile=VAETiling(64))
    seen = _out_of_memory_above(ours, "_decode_frames", 8, monkeypatch, torch.AcceleratorError)
    assert torch.equal(ours.decode(z), want) and seen[:3] == [32, 16, 8]
    monkeypatch.undo()

    def broken(x, tick):
        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(ours, "_decode_frames", broken)
    with pytest.raises(torch.AcceleratorError, match="illegal memory access"):
        ours.decode(z)
