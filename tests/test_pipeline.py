"""End-to-end generation against diffusers' EasyAnimate pipelines, schedulers, and the sampling loop's contract."""

from dataclasses import replace

import pytest
import torch
from diffusers import (
    EasyAnimateControlPipeline,
    EasyAnimateInpaintPipeline,
    EasyAnimatePipeline,
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.pipelines.easyanimate.pipeline_easyanimate import rescale_noise_cfg
from diffusers.pipelines.easyanimate.pipeline_easyanimate_inpaint import get_image_to_video_latent

from easyanimate_core.checkpoint import load_checkpoint
from easyanimate_core.conditioning import add_reference_noise
from easyanimate_core.loading import load_transformer
from easyanimate_core.pipeline import Request, generate
from easyanimate_core.sampling import Interrupted, rescale_guidance, sample
from easyanimate_core.schedulers import SCHEDULER_NAMES, build_scheduler, set_timesteps
from easyanimate_core.testing import TINY_SCHEDULERS, write_tiny_checkpoint
from easyanimate_core.text import TextEmbeds

PROMPT, NEGATIVE = "a cat walks on the grass, 一只猫", "blurry, low quality"
SIZE = dict(width=64, height=48, frames=9)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {
        name: write_tiny_checkpoint(root / name, version=ver, variant=var, layout="diffusers")
        for name, ver, var in [("t2v", "V5.1", "T2V"), ("inp", "V5.1", "InP"), ("v5", "V5", "T2V")]
    }


@pytest.fixture(scope="module")
def loaded(ckpts):
    return {name: load_checkpoint(path, dtype=torch.float32)[0] for name, path in ckpts.items()}


def diffusers_frames(out) -> torch.Tensor:
    return out.frames[0].permute(0, 2, 3, 1)  # [T, 3, H, W] -> [T, H, W, 3]


def test_text_to_video_matches_diffusers_pipeline(ckpts, loaded):
    pipe = EasyAnimatePipeline.from_pretrained(str(ckpts["t2v"]), dtype=torch.float32)
    ref = pipe(
        prompt=PROMPT, negative_prompt=NEGATIVE, num_frames=9, height=48, width=64, num_inference_steps=4,
        guidance_scale=6.0, generator=torch.Generator("cpu").manual_seed(7), output_type="pt",
    )  # fmt: skip
    req = Request(prompt=PROMPT, negative_prompt=NEGATIVE, steps=4, cfg=6.0, seed=7, **SIZE)
    ours = generate(loaded["t2v"], req, teacache=0.0)  # diffusers has no TeaCache
    expected = diffusers_frames(ref)
    assert ours.shape == (9, 48, 64, 3)
    assert expected.std() > 0.05  # a real picture, not a flat one
    assert (ours - expected).abs().max().item() <= 1e-3


@pytest.mark.parametrize("with_end", [False, True])
def test_image_to_video_matches_diffusers_inpaint_pipeline(ckpts, loaded, with_end):
    pipe = EasyAnimateInpaintPipeline.from_pretrained(str(ckpts["inp"]), dtype=torch.float32)
    pipe.vae.register_to_config(cache_mag_vae=True)  # diffusers' pipeline reads it; its VAE class does not register it
    g = torch.Generator().manual_seed(0)
    start, end = torch.rand(3, 48, 64, generator=g), torch.rand(3, 48, 64, generator=g)
    end = end if with_end else None
    video, mask = get_image_to_video_latent(start, end, 9, (48, 64))
    ref = pipe(
        prompt=PROMPT, negative_prompt=NEGATIVE, num_frames=9, height=48, width=64, video=video, mask_video=mask,
        num_inference_steps=4, guidance_scale=6.0, generator=torch.Generator("cpu").manual_seed(7), output_type="pt",
    )  # fmt: skip
    req = Request(
        prompt=PROMPT, negative_prompt=NEGATIVE, steps=4, cfg=6.0, seed=7, start_image=start, end_image=end, **SIZE
    )
    ours = generate(loaded["inp"], req, teacache=0.0)
    assert (ours - diffusers_frames(ref)).abs().max().item() <= 1e-3
    # the start image conditions the result: another start image gives another video
    other = generate(loaded["inp"], Request(**{**req.__dict__, "start_image": 1 - start}))
    assert (other - ours).abs().max() > 1e-2


def test_continuation_matches_diffusers_inpaint_pipeline_with_start_frames(ckpts, loaded):
    """A video that begins with K given frames (EasyAnimate's long-video loop): diffusers takes them as a list of
    start images, we as a [3, K, H, W] start."""
    pipe = EasyAnimateInpaintPipeline.from_pretrained(str(ckpts["inp"]), dtype=torch.float32)
    pipe.vae.register_to_config(cache_mag_vae=True)
    tail = torch.rand(3, 4, 48, 64, generator=torch.Generator().manual_seed(1))
    video, mask = get_image_to_video_latent(list(tail.unbind(1)), None, 9, (48, 64))
    ref = pipe(
        prompt=PROMPT, negative_prompt=NEGATIVE, num_frames=9, height=48, width=64, video=video, mask_video=mask,
        num_inference_steps=4, guidance_scale=6.0, generator=torch.Generator("cpu").manual_seed(7), output_type="pt",
    )  # fmt: skip
    req = Request(prompt=PROMPT, negative_prompt=NEGATIVE, steps=4, cfg=6.0, seed=7, start_image=tail, **SIZE)
    ours = generate(loaded["inp"], req, teacache=0.0)
    assert (ours - diffusers_frames(ref)).abs().max().item() <= 1e-3
    # all K frames condition the result, not only the first (deterministic: the same request gives the same video)
    later = tail.clone()
    later[:, 3] = 1 - later[:, 3]
    assert (generate(loaded["inp"], Request(**{**req.__dict__, "start_image": later})) - ours).abs().max() > 2e-3


@pytest.mark.parametrize("with_mask", [False, True])
def test_video_to_video_matches_diffusers_inpaint_pipeline(ckpts, loaded, monkeypatch, with_mask):
    """InP video-to-video at denoise (diffusers' strength) 0.7, with no mask (zero inpaint channels) and with a
    mask that regenerates the right half (the left half's masked-video latents condition the model).

    diffusers 0.42.1 starts from a *sample* of the input video's posterior (EasyAnimateInpaintPipeline.prepare_latents,
    drawn from the unseeded global RNG); the original starts from its mode (aigc-apps/EasyAnimate
    easyanimate/pipeline/pipeline_easyanimate_inpaint.py line 871, ``video_bs = video_bs.mode()``), as we do. Here
    diffusers takes the mode too; with its sample the videos differ by up to 0.58."""
    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode())
    pipe = EasyAnimateInpaintPipeline.from_pretrained(str(ckpts["inp"]), dtype=torch.float32)
    pipe.vae.register_to_config(cache_mag_vae=True)
    video = torch.rand(3, 9, 48, 64, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(9, 48, 64)
    mask[..., 32:] = 1  # 1 = regenerate
    ref = pipe(
        prompt=PROMPT, negative_prompt=NEGATIVE, num_frames=9, height=48, width=64, video=video[None],
        mask_video=mask[None, None] * 255 if with_mask else None, strength=0.7, num_inference_steps=10,
        guidance_scale=6.0, generator=torch.Generator("cpu").manual_seed(7), output_type="pt",
    )  # fmt: skip
    req = Request(
        prompt=PROMPT, negative_prompt=NEGATIVE, steps=10, cfg=6.0, seed=7, video=video, denoise=0.7,
        mask=mask if with_mask else None, **SIZE,
    )  # fmt: skip
    ours = generate(loaded["inp"], req, teacache=0.0)
    expected = diffusers_frames(ref)
    assert expected.std() > 0.05
    assert (ours - expected).abs().max().item() <= 1e-3


def control_pipeline(path) -> EasyAnimateControlPipeline:
    """diffusers' control pipeline, made callable: in 0.42.1 its __call__ passes ``text_encoder_index=0`` to its own
    encode_prompt, which takes no such argument (a TypeError), and it has no decode_latents, so it can only return
    latents (output_type="latent"); the tests compare latents. (The TypeError is huggingface/diffusers#13638.)"""
    pipe = EasyAnimateControlPipeline.from_pretrained(str(path), dtype=torch.float32)
    encode = pipe.encode_prompt
    pipe.encode_prompt = lambda *args, text_encoder_index=0, **kw: encode(*args, **kw)
    return pipe


@pytest.fixture(scope="module")
def control_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("control")
    out = {}
    for name, variant in [("control", "Control"), ("camera", "Control-Camera")]:
        path = write_tiny_checkpoint(root / name, version="V5.1", variant=variant, layout="diffusers")
        out[name] = (path, load_checkpoint(path, dtype=torch.float32)[0])
    return out


def _control_run(pipe, models, req, **pipe_inputs):
    ref = req.ref_image[None, :, None] if req.ref_image is not None else None  # [1, 3, 1, H, W]
    expected = pipe(
        prompt=PROMPT, negative_prompt=NEGATIVE, num_frames=9, height=48, width=64, ref_image=ref,
        num_inference_steps=4, guidance_scale=6.0, generator=torch.Generator("cpu").manual_seed(7),
        output_type="latent", **pipe_inputs,
    ).frames  # fmt: skip
    return generate(models, req, teacache=0.0, output="latents"), expected


@pytest.mark.parametrize("with_ref", [False, True])
def test_control_video_matches_diffusers_control_pipeline(control_models, with_ref):
    path, models = control_models["control"]
    g = torch.Generator().manual_seed(2)
    control, ref = torch.rand(3, 9, 48, 64, generator=g), torch.rand(3, 48, 64, generator=g)
    req = Request(
        prompt=PROMPT, negative_prompt=NEGATIVE, steps=4, cfg=6.0, seed=7, control_video=control,
        ref_image=ref if with_ref else None, **SIZE,
    )  # fmt: skip
    ours, expected = _control_run(control_pipeline(path), models, req, control_video=control[None])
    assert (ours - expected).abs().max().item() <= 1e-3
    # the input steers the result: another control video (or ref image) gives other latents
    key = "ref_image" if with_ref else "control_video"
    other = generate(models, replace(req, **{key: 1 - getattr(req, key)}), teacache=0.0, output="latents")
    assert (other - ours).abs().max() > 1e-2


@pytest.mark.parametrize("with_ref", [False, True])
def test_camera_control_matches_diffusers_control_pipeline(control_models, with_ref):
    """Control-Camera: our Plücker embedding input vs diffusers' control_camera_video (both resized to the latent
    grid, first frame alone, times 6)."""
    path, models = control_models["camera"]
    g = torch.Generator().manual_seed(4)
    camera, ref = torch.randn(6, 9, 48, 64, generator=g), torch.rand(3, 48, 64, generator=g)
    req = Request(
        prompt=PROMPT, negative_prompt=NEGATIVE, steps=4, cfg=6.0, seed=7, camera=camera,
        ref_image=ref if with_ref else None, **SIZE,
    )  # fmt: skip
    ours, expected = _control_run(control_pipeline(path), models, req, control_camera_video=camera[None])
    assert (ours - expected).abs().max().item() <= 1e-3
    key, flip = ("ref_image", lambda x: 1 - x) if with_ref else ("camera", lambda x: -x)
    other = generate(models, replace(req, **{key: flip(getattr(req, key))}), teacache=0.0, output="latents")
    assert (other - ours).abs().max() > 1e-2


def test_start_frames_are_kept_and_the_first_fills_the_rest():
    """image_to_video with K start frames lays the video and mask out as the official get_image_to_video_latent."""
    from easyanimate_core.conditioning import image_to_video

    start, end = torch.rand(1, 3, 3, 4, 5), torch.rand(1, 3, 4, 5)
    video, mask = image_to_video(start, end, 9)
    assert torch.equal(video[:, :, :3], start) and torch.equal(video[:, :, -1], end)
    assert torch.equal(video[:, :, 3:8], start[:, :, :1].expand(-1, -1, 5, -1, -1))
    assert mask[0, 0, :, 0, 0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 0]
    with pytest.raises(ValueError, match="^3 start frame\\(s\\) and an end image do not fit in 3 frames"):
        image_to_video(start, end, 3)


def test_join_clips_cross_fades_the_shared_frames():
    from easyanimate_core.frames import join_clips

    first, second = torch.zeros(6, 4, 8, 3), torch.ones(5, 4, 8, 3)
    joined = join_clips(first, second, 4)
    assert joined.shape == (7, 4, 8, 3)  # 6 + 5 - 4
    assert joined[:, 0, 0, 0].tolist() == [0, 0, 0, 0.25, 0.5, 0.75, 1]  # the official mix ratios i / overlap
    assert torch.equal(join_clips(first, second, 0), torch.cat([first, second]))
    # a first clip of another size is fitted to the second's (cover, centre-crop); gray and RGBA work
    wide = torch.zeros(6, 4, 16, 1)
    wide[:, :, 4:12] = 1  # the centre half is white: the crop keeps exactly it
    fitted = join_clips(wide, torch.cat([second, torch.zeros(5, 4, 8, 1)], -1), 2)
    assert fitted.shape == (9, 4, 8, 3) and torch.allclose(fitted, torch.ones_like(fitted), atol=1e-6)
    with pytest.raises(ValueError, match="^overlap=6 is longer than a clip \\(6 and 5 frames\\); lower overlap"):
        join_clips(first, second, 6)


@pytest.mark.parametrize("shift", [1.0, 3.0, 7.5])
@pytest.mark.parametrize("denoise", [1.0, 0.5])
def test_flow_timesteps_and_sigmas_match_diffusers(shift, denoise):
    ours = build_scheduler("Flow", {"_class_name": "FlowMatchEulerDiscreteScheduler"}, shift=shift)
    kept = set_timesteps(ours, 10, denoise)
    ref = FlowMatchEulerDiscreteScheduler(shift=shift)
    ref.set_timesteps(10)
    start = 10 - int(10 * denoise)
    assert torch.equal(kept, ref.timesteps[start:])
    assert torch.equal(ours.sigmas, ref.sigmas)
    assert len(kept) == int(10 * denoise)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_every_scheduler_runs_four_steps(loaded, name):
    models = loaded["t2v"] if name == "Flow" else loaded["v5"]
    calls = []
    req = Request(prompt=PROMPT, negative_prompt=NEGATIVE, steps=4, cfg=5.0, seed=3, scheduler=name, **SIZE)
    out = generate(models, req, progress=lambda i, n, lat: calls.append((i, n, tuple(lat.shape))))
    assert torch.isfinite(out).all() and out.std() > 0.01
    assert [c[0] for c in calls] == list(range(1, len(calls) + 1)) and calls[-1][0] == calls[-1][1]
    assert calls[0][2] == (1, 16, 3, 6, 8)
    assert torch.equal(out, generate(models, req))  # same seed, same video
    assert not torch.equal(out, generate(models, Request(**{**req.__dict__, "seed": 4})))


def test_guidance_rescale_matches_diffusers():
    g = torch.Generator().manual_seed(0)
    guided, cond = torch.randn(2, 4, 3, 5, 5, generator=g), torch.randn(2, 4, 3, 5, 5, generator=g) * 3
    assert torch.allclose(rescale_guidance(guided, cond, 0.7), rescale_noise_cfg(guided, cond, 0.7))


def test_should_stop_ends_cleanly_and_leaves_the_model_unchanged(loaded):
    models = loaded["t2v"]
    before = {k: v.clone() for k, v in models.transformer.state_dict().items()}
    seen = []
    req = Request(prompt=PROMPT, steps=5, cfg=1.0, seed=1, **SIZE)
    with pytest.raises(Interrupted, match="before step 3 of 5"):
        generate(models, req, progress=lambda i, n, lat: seen.append(i), should_stop=lambda: len(seen) >= 2)
    assert seen == [1, 2]
    assert all(torch.equal(v, models.transformer.state_dict()[k]) for k, v in before.items())
    assert torch.equal(generate(models, req), generate(models, req))  # still works afterwards


def test_video_to_video_denoise_stays_near_the_input(loaded):
    models = loaded["t2v"]
    video = torch.rand(3, 9, 48, 64, generator=torch.Generator().manual_seed(5))
    base = Request(prompt=PROMPT, steps=8, cfg=1.0, seed=2, video=video, **SIZE)
    low = generate(models, Request(**{**base.__dict__, "denoise": 0.25}), output="latents")
    high = generate(models, Request(**{**base.__dict__, "denoise": 0.75}), output="latents")
    from easyanimate_core.conditioning import encode_mode
    from easyanimate_core.pipeline import fit_video

    init = encode_mode(models.vae, fit_video(video, 64, 48, 9))
    assert (low - init).abs().mean() < (high - init).abs().mean()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(width=65), "width must be divisible by 16; nearest: 64"),
        (dict(height=40), "height must be divisible by 16; nearest: 48"),
        (dict(frames=50), "nearest: 49"),
        (dict(start_image=torch.rand(3, 48, 64)), "need an InP checkpoint; this one is T2V"),
        (dict(denoise=0.5), "needs an input video"),
        (dict(control_video=torch.rand(3, 9, 48, 64)), "needs a Control checkpoint"),
        (
            dict(ref_image=torch.rand(3, 48, 64)),
            "a reference image needs a Control or Control-Camera checkpoint; this one is T2V",
        ),
    ],
)
def test_bad_input_is_a_clear_error(loaded, kw, message):
    req = Request(**{**dict(prompt=PROMPT, steps=2, cfg=1.0, **SIZE), "frames": 9, **kw})
    with pytest.raises(ValueError, match=message):
        generate(loaded["t2v"], req)


def test_the_default_scheduler_follows_the_version(loaded):
    """Request() leaves the scheduler to the model: Flow for V5.1, DDIM for V5 (Flow on V5 is an error)."""
    req = Request(prompt=PROMPT, steps=2, cfg=1.0, seed=3, **SIZE)
    assert req.scheduler is None
    v5 = generate(loaded["v5"], req, output="latents")
    assert torch.equal(v5, generate(loaded["v5"], replace(req, scheduler="DDIM"), output="latents"))
    t2v = generate(loaded["t2v"], req, output="latents")
    assert torch.equal(t2v, generate(loaded["t2v"], replace(req, scheduler="Flow"), output="latents"))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(device="bogus"), "device 'bogus' is not a device"),  # was a raw RuntimeError
        (dict(offload=3.5), "offload 3.5 is not a device"),
        (dict(dtype=torch.int8), "the compute dtype must be torch.float32, torch.bfloat16 or torch.float16"),
        (dict(output="video"), "output must be 'frames' or 'latents', got 'video'"),  # frames were returned
        pytest.param(
            dict(device="cuda"),
            "sees no CUDA GPU; use device='cpu'",  # was an AssertionError from torch
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present"),
        ),
    ],
)
def test_generate_checks_device_and_dtype_first(loaded, kw, message):
    with pytest.raises(ValueError, match=message):
        generate(loaded["t2v"], Request(prompt=PROMPT, steps=2, cfg=1.0, **SIZE), **kw)


def test_reference_noise_is_added_on_the_video_device():
    """The noise comes from the CPU generator (reproducible across devices) but is added on the video's device.

    The meta device stands in for CUDA: mixing the CPU noise into a CUDA video crashed image-to-video on a GPU.
    """
    video = torch.full((1, 3, 2, 4, 4), -1.0)
    video[:, :, 0] = 0.5
    out = add_reference_noise(video, 0.1, torch.Generator().manual_seed(0))
    assert (out[:, :, 1] == -1).all()  # blank frames stay blank
    assert 0 < (out[:, :, 0] - 0.5).abs().max() < 0.6  # kept frames get noise of the given strength
    on_device = add_reference_noise(video.to("meta"), 0.1, torch.Generator().manual_seed(0))
    assert on_device.device.type == "meta" and on_device.shape == video.shape


def test_t2v_inpainting_at_full_denoise_keeps_the_unmasked_latents(loaded):
    """T2V + video + mask at denoise 1: the kept half is the video's latents exactly, the masked half is new.

    (The engine API used to raise here: it encoded the video only for denoise < 1, but the keep mask needs it.)
    """
    from easyanimate_core.conditioning import encode_mode
    from easyanimate_core.pipeline import fit_video

    models = loaded["t2v"]
    video = torch.rand(3, 9, 48, 64, generator=torch.Generator().manual_seed(6))
    mask = torch.zeros(9, 48, 64)
    mask[..., 32:] = 1  # regenerate the right half
    req = Request(prompt=PROMPT, steps=3, cfg=1.0, seed=2, video=video, mask=mask, denoise=1.0, **SIZE)
    out = generate(models, req, output="latents")
    init = encode_mode(models.vae, fit_video(video, 64, 48, 9))
    torch.testing.assert_close(out[..., :3], init[..., :3], atol=1e-6, rtol=0)  # latent columns 0-2: kept
    assert (out[..., 5:] - init[..., 5:]).abs().mean() > 0.1  # latent columns 5-7: generated


def test_scheduler_family_must_match_the_model_version():
    """The official rule (predict_t2v.py): V5.1 samples with Flow only, V5 with the DDPM family; the other pairing
    would run and make noise. PNDM's warm-up needs 4 steps."""
    from easyanimate_core.schedulers import build_scheduler, check_scheduler_for, set_timesteps

    check_scheduler_for("V5.1", "Flow")
    check_scheduler_for("V5", "DDIM")
    with pytest.raises(ValueError, match="V5 is a DDPM-family model: choose DDIM, Euler, Euler A, DPM"):
        build_scheduler("Flow", TINY_SCHEDULERS["V5"], version="V5")
    with pytest.raises(ValueError, match="V5.1 is a flow-matching model: choose Flow"):
        build_scheduler("DDIM", TINY_SCHEDULERS["V5"], version="V5.1")
    with pytest.raises(ValueError, match="single transformer file lacks"):
        build_scheduler("DDIM", None, version="V5")
    pndm = build_scheduler("PNDM", TINY_SCHEDULERS["V5"], version="V5")
    with pytest.raises(ValueError, match="PNDM needs at least 4 steps.*nearest: 4"):
        set_timesteps(pndm, 3)
    assert len(set_timesteps(build_scheduler("PNDM", TINY_SCHEDULERS["V5"]), 4)) > 0


def test_unreadable_scheduler_config_names_the_file(tmp_path):
    from easyanimate_core.schedulers import read_scheduler_config

    (tmp_path / "scheduler_config.json").write_text("{ not json")
    with pytest.raises(ValueError, match="scheduler_config.json is not valid JSON .*re-download it"):
        read_scheduler_config(tmp_path)
    (tmp_path / "scheduler_config.json").write_text("[1, 2]")  # JSON, but not an object: was an AttributeError
    with pytest.raises(ValueError, match=r"scheduler_config.json holds a JSON list, not an object: re-download it"):
        read_scheduler_config(tmp_path)


@pytest.mark.parametrize("shift", [0.0, -1.0, float("nan"), float("inf")])
def test_flow_shift_must_be_a_positive_number(shift):
    from easyanimate_core.schedulers import build_scheduler

    with pytest.raises(ValueError, match="shift must be a positive number"):  # NaN and inf made all-NaN videos
        build_scheduler("Flow", None, shift=shift)


def test_conditioning_builders_take_gray_images_and_an_optional_progress(loaded):
    """The Python API shares the nodes' builders: gray [1, H, W] images work like RGB, progress is optional and
    fills one bar across the encodes, and frames=1 takes one image."""
    from easyanimate_core import builders
    from easyanimate_core.handles import VAEHandle
    from easyanimate_core.memory import MemoryPolicy
    from easyanimate_core.pipeline import build_conditioning

    models = loaded["inp"]
    gray = torch.rand(1, 56, 80, generator=torch.Generator().manual_seed(8))
    base = Request(prompt=PROMPT, steps=2, cfg=1.0, seed=3, noise_aug_strength=0.0, **SIZE)
    cpu = dict(device=torch.device("cpu"), offload=torch.device("cpu"))

    def inpaint(**kw):
        return build_conditioning(models, Request(**{**base.__dict__, **kw}), **cpu).inpaint

    assert torch.equal(inpaint(start_image=gray), inpaint(start_image=gray.expand(3, -1, -1)))
    with pytest.raises(ValueError, match="^frames=1 has room for one image"):
        inpaint(start_image=gray, end_image=gray, frames=1)
    vh = VAEHandle(models.vae, torch.float32, MemoryPolicy())
    cfg, seen = models.transformer.config, []
    video, mask = torch.rand(9, 48, 64, 3), (torch.arange(64) >= 32).float().expand(1, 48, 64)
    kw = dict(noise_aug_strength=0.0, seed=1, **cpu)
    with_bar, _ = builders.inpaint_video_conditioning(
        vh, cfg, video, mask, 64, 48, 9, progress=lambda done, total: seen.append(done / total), **kw
    )
    without, _ = builders.inpaint_video_conditioning(vh, cfg, video, mask, 64, 48, 9, **kw)
    assert torch.equal(with_bar.inpaint, without.inpaint)
    assert len(seen) > 2 and seen == sorted(set(seen)) and seen[-1] == 1.0  # two encodes, one rising bar


def test_without_cfg_the_negative_prompt_is_not_encoded(loaded, monkeypatch):
    """cfg <= 1 never reads the negative prompt, so generate() skips its encoder pass; the video is the same as
    with the negative encoded (compared through the sampler's own switch: any negative gives the same output)."""
    models = loaded["t2v"]
    prompts = []
    encode = models.text_encoder.encode
    monkeypatch.setattr(models.text_encoder, "encode", lambda texts, **kw: prompts.append(texts) or encode(texts, **kw))
    req = Request(prompt=PROMPT, negative_prompt="blurry", steps=2, cfg=1.0, seed=4, **SIZE)
    plain = generate(models, req)
    assert prompts == [[PROMPT]]
    assert torch.equal(generate(models, replace(req, negative_prompt="anything else")), plain)
    prompts.clear()
    generate(models, replace(req, cfg=4.0))
    assert prompts == [[PROMPT], ["blurry"]]


def test_the_transformer_gets_the_timestep_rounded_to_the_compute_dtype(ckpts, monkeypatch):
    """The reference pipelines (the original V5 one and diffusers') cast the timestep to the latents' dtype before
    the transformer: in bf16 DDIM's 750 reaches the model as 752. The same rounding must happen here."""
    model, _ = load_transformer(ckpts["v5"] / "transformer", dtype=torch.bfloat16)
    cfg = model.config
    seen = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda x, t, *a, **kw: seen.append(t.clone()) or forward(x, t, *a, **kw))
    text = TextEmbeds(
        torch.randn(1, 5, cfg.text_embed_dim), torch.ones(1, 5, dtype=torch.long),
        torch.randn(1, 7, cfg.text_embed_dim_t5), torch.ones(1, 7, dtype=torch.long),
    )  # fmt: skip
    scheduler = build_scheduler("DDIM", TINY_SCHEDULERS["V5"], version="V5")
    sample(model, scheduler, text, text, torch.randn(1, 16, 2, 4, 6), steps=4, cfg=5.0, dtype=torch.bfloat16)
    assert [t.dtype for t in seen] == [torch.bfloat16] * 4
    assert [t.float().tolist() for t in seen] == [[752.0] * 2, [500.0] * 2, [250.0] * 2, [0.0] * 2]
