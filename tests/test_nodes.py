"""The ComfyUI nodes, loaded by the fake ComfyUI host under another folder name, on tiny checkpoints."""

import os
import shutil
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from comfy_host import (
    NodeExecutionError,
    PromptExecutor,
    execute_prompt,
    install_fake_comfy,
    load_pack,
    object_info,
    validate_prompt,
)
from comfy_host.run_workflows import END_IMAGE, START_IMAGE, TINY_LORA, write_inputs, write_tiny_models
from PIL import Image

from easyanimate_core.attention import available_backends
from easyanimate_core.checkpoint import load_checkpoint
from easyanimate_core.pipeline import Request, generate
from easyanimate_core.preview import LatentRGB, fit_latent_rgb, smooth_latents
from easyanimate_core.schedulers import SCHEDULER_NAMES

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = "easyanimate.nodes-under-test"  # a dot and a dash: ComfyUI mangles the module name
T2V, INP = "EasyAnimateV5.1-tiny-T2V", "EasyAnimateV5.1-tiny-InP"
PROMPT, NEGATIVE = "a yellow disc drifts over a blue sea", "blurry, static"
SIZE = {"width": 64, "height": 48, "frames": 9}
OFFICIAL_NEGATIVE = "扭曲的身体，肢体残缺，文本字幕，漫画，静止，丑陋，错误，乱码。"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy")
    models, inputs = str(root / "models"), str(root / "input")
    write_tiny_models(models)
    write_inputs(inputs, width=80, height=56)
    ckpt = os.path.join(models, "EasyAnimate", T2V)  # single files and folders for the single-part loaders
    os.makedirs(os.path.join(models, "diffusion_models"))
    shutil.copy(
        f"{ckpt}/transformer/diffusion_pytorch_model.safetensors", f"{models}/diffusion_models/tiny.safetensors"
    )
    os.makedirs(os.path.join(models, "vae"))
    shutil.copy(f"{ckpt}/vae/diffusion_pytorch_model.safetensors", f"{models}/vae/tiny_vae.safetensors")
    shutil.copy(f"{ckpt}/vae/config.json", f"{models}/vae/tiny_vae.json")
    for part in ("text_encoder", "tokenizer"):
        shutil.copytree(f"{ckpt}/{part}", f"{models}/text_encoders/tiny-qwen2vl/{part}")
    os.makedirs(os.path.join(models, "EasyAnimate", "empty-folder"))
    with install_fake_comfy(models, inputs, str(root / "output")) as comfy:
        pack = load_pack(REPO_DIR, str(root / "custom_nodes"), folder_name=FOLDER)
        yield comfy, pack


@pytest.fixture(scope="module")
def run(env):
    """Execute prompts in one ComfyUI session: loaders with the same inputs run once (ComfyUI's cache)."""
    return PromptExecutor().execute


def t2v_prompt(ckpt=T2V, seed=7, steps=3, memory="model_offload", **sampler):
    return {
        "1": {"class_type": "EasyAnimateModelLoader", "inputs": {"checkpoint": ckpt, "precision": "fp32", "memory_mode": memory, "resident_blocks": 1}},
        "2": {"class_type": "EasyAnimatePromptEncode", "inputs": {"text_encoder": ["1", 2], "prompt": PROMPT, "negative_prompt": NEGATIVE}},
        "3": {"class_type": "EasyAnimateVideoSampler", "inputs": {"model": ["1", 0], "embeds": ["2", 0], **SIZE, "steps": steps, "cfg": 6.0, "seed": seed, "scheduler": "Flow", "shift": 0.0, **sampler}},
        "4": {"class_type": "EasyAnimateVAEDecode", "inputs": {"vae": ["1", 1], "samples": ["3", 0], "tile": False, "tile_size": 512}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }  # fmt: skip


def i2v_prompt(ckpt=INP, seed=7, **i2v):
    prompt = t2v_prompt(ckpt, seed)
    prompt["6"] = {"class_type": "LoadImage", "inputs": {"image": START_IMAGE}}
    prompt["7"] = {"class_type": "LoadImage", "inputs": {"image": END_IMAGE}}
    prompt["8"] = {
        "class_type": "EasyAnimateImageToVideo",
        "inputs": {"model": ["1", 0], "vae": ["1", 1], "start_image": ["6", 0], "end_image": ["7", 0], **SIZE,
                   "noise_aug_strength": 0.0563, "seed": seed, **i2v},
    }  # fmt: skip
    prompt["3"]["inputs"]["conditioning"] = ["8", 0]
    return prompt


def latents_of(result, node="3") -> torch.Tensor:
    return result.results[node][0][0]["samples"]


def error_of(run, prompt) -> NodeExecutionError:
    with pytest.raises(NodeExecutionError) as info:
        run(prompt)
    return info.value


def image_file(comfy, name) -> torch.Tensor:
    """An input image as the engine takes it: [3, H, W] 0..1."""
    with Image.open(os.path.join(comfy.input_dir, name)) as image:
        return (
            torch.from_numpy(__import__("numpy").asarray(image.convert("RGB")).copy()).float().div(255).movedim(-1, 0)
        )


# --- /object_info ----------------------------------------------------------------------------------


def test_object_info_is_complete(env):
    comfy, pack = env
    info = object_info()
    ours = {name: info[name] for name in pack.node_class_mappings}
    assert {"EasyAnimateModelLoader", "EasyAnimateTransformerLoader", "EasyAnimateVAELoader",
            "EasyAnimateTextEncoderLoader", "EasyAnimatePromptEncode", "EasyAnimateVideoSampler", "EasyAnimateVAEDecode",
            "EasyAnimateVAEEncode", "EasyAnimateImageToVideo"} <= set(ours)  # fmt: skip
    for name, entry in ours.items():
        assert entry["name"] == name and entry["display_name"] == pack.display_name_mappings[name] != name
        assert entry["description"] and entry["category"].startswith("EasyAnimate/")
        assert entry["output_node"] is False and entry["python_module"] == f"custom_nodes.{FOLDER}"
        assert len(entry["output_tooltips"]) == len(entry["output"]) == len(entry["output_name"])
        for category in ("required", "optional"):
            for input_name, spec in entry["input"].get(category, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
    loader = ours["EasyAnimateModelLoader"]["input"]["required"]
    assert loader["checkpoint"][0] == sorted([T2V, INP, "empty-folder"])
    assert loader["memory_mode"][0] == ["none", "model_offload", "fp8", "block_swap"]
    assert loader["precision"][0] == ["auto", "bf16", "fp16", "fp32"]
    sampler = ours["EasyAnimateVideoSampler"]["input"]
    assert sampler["required"]["seed"][1]["control_after_generate"] is True
    assert (
        sampler["required"]["scheduler"][0] == SCHEDULER_NAMES
        and sampler["required"]["scheduler"][1]["default"] == "Flow"
    )
    assert {k: sampler["required"][k][1]["default"] for k in ("width", "height", "frames", "steps", "cfg")} == {
        "width": 672, "height": 384, "frames": 49, "steps": 50, "cfg": 6.0,
    }  # fmt: skip
    assert set(sampler["optional"]) == {"latent", "denoise", "teacache", "conditioning"}
    assert sampler["optional"]["teacache"][1]["default"] == 0.08  # EasyAnimate's predict scripts' threshold
    sample = pack.node_class_mappings["EasyAnimateVideoSampler"].sample  # an API prompt may leave it out
    assert __import__("inspect").signature(sample).parameters["teacache"].default == 0.08
    assert ours["EasyAnimatePromptEncode"]["input"]["required"]["negative_prompt"][1]["default"] == OFFICIAL_NEGATIVE
    assert ours["EasyAnimateImageToVideo"]["input"]["required"]["noise_aug_strength"][1]["default"] == 0.0563
    assert ours["EasyAnimateTransformerLoader"]["input"]["required"]["transformer"][0] == ["tiny.safetensors"]
    assert ours["EasyAnimateTextEncoderLoader"]["input"]["required"]["text_encoder"][0] == ["tiny-qwen2vl"]
    assert ours["EasyAnimateVideoSampler"]["output"] == ("LATENT",) and ours["EasyAnimateVAEDecode"]["output"] == (
        "IMAGE",
    )


# --- validation ------------------------------------------------------------------------------------


def _error_types(prompt):
    valid, _, _, node_errors = validate_prompt(prompt)
    assert valid is False
    return {node: [e["type"] for e in entry["errors"]] for node, entry in node_errors.items()}


@pytest.mark.parametrize(
    "node, name, value, error",
    [
        ("3", "width", 8, "value_smaller_than_min"),
        ("3", "frames", 0, "value_smaller_than_min"),
        ("3", "steps", 0, "value_smaller_than_min"),
        ("3", "cfg", 31.0, "value_bigger_than_max"),
        ("3", "denoise", 1.5, "value_bigger_than_max"),
        ("3", "seed", -1, "value_smaller_than_min"),
        ("3", "frames", "nine", "invalid_input_type"),
        ("3", "scheduler", "Karras", "value_not_in_list"),
        ("1", "checkpoint", "EasyAnimateV5.1-12b-zh", "value_not_in_list"),
        ("1", "memory_mode", "sequential", "value_not_in_list"),
        ("4", "vae", ["3", 0], "return_type_mismatch"),  # a LATENT into the VAE input
        ("3", "embeds", ["1", 2], "return_type_mismatch"),  # a text encoder where embeddings belong
    ],
)
def test_validation_rejects_bad_values(env, node, name, value, error):
    prompt = t2v_prompt()
    prompt[node]["inputs"][name] = value
    assert _error_types(prompt) == {node: [error]}


def test_validation_requires_inputs(env):
    prompt = t2v_prompt()
    del prompt["3"]["inputs"]["embeds"]
    assert _error_types(prompt) == {"3": ["required_input_missing"]}
    assert validate_prompt(t2v_prompt())[0] is True


# --- running ---------------------------------------------------------------------------------------


def test_text_to_video_matches_the_engine_and_repeats(env, run):
    comfy, _ = env
    result = run(t2v_prompt(seed=11))
    latents = latents_of(result)
    assert latents.shape == (1, 16, 3, 6, 8) and latents.dtype == torch.float32
    frames = result.results["4"][0][0]
    assert frames.shape == (9, 48, 64, 3) and 0 <= frames.min() and frames.max() <= 1
    models, _, _ = load_checkpoint(os.path.join(comfy.models_dir, "EasyAnimate", T2V), dtype=torch.float32)
    request = Request(prompt=PROMPT, negative_prompt=NEGATIVE, steps=3, cfg=6.0, seed=11, **SIZE)
    assert torch.allclose(latents, generate(models, request, output="latents"), atol=1e-5)
    again = execute_prompt(t2v_prompt(seed=11))  # a fresh executor: nothing cached
    assert torch.equal(latents_of(again), latents) and torch.equal(again.results["4"][0][0], frames)
    assert not torch.allclose(latents_of(run(t2v_prompt(seed=12))), latents)


def test_image_to_video_matches_the_engine(env, run):
    comfy, _ = env
    result = run(i2v_prompt(seed=5))
    models, _, _ = load_checkpoint(os.path.join(comfy.models_dir, "EasyAnimate", INP), dtype=torch.float32)
    start, end = image_file(comfy, START_IMAGE), image_file(comfy, END_IMAGE)
    request = Request(prompt=PROMPT, negative_prompt=NEGATIVE, steps=3, cfg=6.0, seed=5, start_image=start,
                      end_image=end, **SIZE)  # fmt: skip
    assert torch.allclose(latents_of(result), generate(models, request, output="latents"), atol=1e-5)
    start_only = i2v_prompt(seed=5)
    del start_only["8"]["inputs"]["end_image"]
    assert not torch.allclose(latents_of(run(start_only)), latents_of(result))


def extend_prompt(overlap=4, seed=5):
    """i2v clip "4" -> Extend Video "20" -> Sampler "21" -> Decode "22" -> Join Clips "23" -> preview."""
    prompt = i2v_prompt(seed=seed)
    prompt["20"] = {
        "class_type": "EasyAnimateExtendVideo",
        "inputs": {"model": ["1", 0], "vae": ["1", 1], "video": ["4", 0], "overlap": overlap, **SIZE,
                   "noise_aug_strength": 0.0563, "seed": seed + 1},
    }  # fmt: skip
    prompt["21"] = {**prompt["3"], "inputs": {**prompt["3"]["inputs"], "seed": seed + 1, "conditioning": ["20", 0]}}
    prompt["22"] = {**prompt["4"], "inputs": {**prompt["4"]["inputs"], "samples": ["21", 0]}}
    prompt["23"] = {
        "class_type": "EasyAnimateJoinClips",
        "inputs": {"first": ["4", 0], "second": ["22", 0], "overlap": overlap},
    }
    prompt["24"] = {"class_type": "PreviewImage", "inputs": {"images": ["23", 0]}}
    return prompt


def test_extend_video_continues_the_clip_as_the_engine_does(env, run):
    comfy, _ = env
    result = run(extend_prompt())
    first, second, joined = (result.results[n][0][0] for n in ("4", "22", "23"))
    models, _, _ = load_checkpoint(os.path.join(comfy.models_dir, "EasyAnimate", INP), dtype=torch.float32)
    tail = first[-4:].permute(3, 0, 1, 2)  # the clip's last 4 frames as [3, K, H, W]
    request = Request(prompt=PROMPT, negative_prompt=NEGATIVE, steps=3, cfg=6.0, seed=6, start_image=tail, **SIZE)
    assert torch.allclose(latents_of(result, "21"), generate(models, request, output="latents"), atol=1e-5)
    assert joined.shape == (14, 48, 64, 3)
    assert torch.equal(joined[:5], first[:5]) and torch.equal(joined[9:], second[4:])
    assert torch.allclose(joined[6], first[6] * 0.75 + second[1] * 0.25)
    # overlap 1 is image-to-video from the clip's last frame
    one = run(extend_prompt(overlap=1))
    request = Request(**{**request.__dict__, "start_image": one.results["4"][0][0][-1].movedim(-1, 0)})
    assert torch.allclose(latents_of(one, "21"), generate(models, request, output="latents"), atol=1e-5)


def test_extend_video_errors(env):
    _, pack = env
    loader = pack.node_class_mappings["EasyAnimateModelLoader"]()
    model, vae, _ = loader.load(INP, "fp32", "model_offload", 1)
    node = pack.node_class_mappings["EasyAnimateExtendVideo"]()
    clip = torch.rand(9, 48, 64, 3)
    with pytest.raises(
        ValueError, match="^overlap=5 leaves none of the 5 frames to generate: raise frames to 9 or more"
    ):
        node.encode(model, vae, clip, 5, 64, 48, 5, 0.0, 0)
    assert node.encode(model, vae, clip, 4, 64, 48, 5, 0.0, 0)[0].conditioning.inpaint.shape == (1, 17, 2, 6, 8)
    with pytest.raises(ValueError, match="^overlap=4 plus the end image leaves none of the 5 frames.* to 9 or more"):
        node.encode(model, vae, clip, 4, 64, 48, 5, 0.0, 0, end_image=clip[:1])
    with pytest.raises(ValueError, match="^the video to continue has 2 frames, fewer than overlap=4; lower overlap"):
        node.encode(model, vae, clip[:2], 4, 64, 48, 9, 0.0, 0)
    t2v, t2v_vae, _ = loader.load(T2V, "fp32", "model_offload", 1)
    with pytest.raises(ValueError, match="^continuing a video needs an EasyAnimate InP checkpoint.*this one is T2V"):
        node.encode(t2v, t2v_vae, clip, 4, 64, 48, 9, 0.0, 0)
    cond = node.encode(model, vae, clip, 3, 64, 48, 9, 0.0, 0, end_image=clip[:1])[0]
    assert cond.conditioning.inpaint.shape == (1, 17, 3, 6, 8) and cond.describe() == "64x48, 9 frames"


def vae_encode_prompt(width=64, height=48, frames=9, color=0x3366CC):
    return {
        "1": t2v_prompt(INP)["1"],
        "9": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": frames, "color": color}},
        "11": {"class_type": "EasyAnimateVAEEncode", "inputs": {"vae": ["1", 1], "images": ["9", 0], "tile": False, "tile_size": 512}},
        "12": {"class_type": "EasyAnimateVAEDecode", "inputs": {"vae": ["1", 1], "samples": ["11", 0], "tile": False, "tile_size": 512}},
        "13": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}},
    }  # fmt: skip


def test_video_to_video_matches_the_engine(env, run):
    comfy, _ = env
    prompt = {**t2v_prompt(INP, denoise=0.5, latent=["11", 0]), **vae_encode_prompt()}
    prompt["3"]["inputs"].update(width=672, height=384, frames=49)  # ignored: the latent gives the size
    result = run(prompt)
    assert result.results["11"][0][0]["samples"].shape == (1, 16, 3, 6, 8)
    assert result.results["12"][0][0].shape == result.results["4"][0][0].shape == (9, 48, 64, 3)
    models, _, _ = load_checkpoint(os.path.join(comfy.models_dir, "EasyAnimate", INP), dtype=torch.float32)
    colour = torch.tensor([0x33 / 0xFF, 0x66 / 0xFF, 0xCC / 0xFF])  # EmptyImage's colour
    request = Request(prompt=PROMPT, negative_prompt=NEGATIVE, steps=3, cfg=6.0, seed=7, denoise=0.5,
                      video=colour.view(3, 1, 1, 1).expand(3, 9, 48, 64), **SIZE)  # fmt: skip
    assert torch.allclose(latents_of(result), generate(models, request, output="latents"), atol=1e-5)


def test_vae_decode_tiles(env, run):
    prompt = vae_encode_prompt(width=96, height=64, frames=1)
    plain = run(prompt).results["12"][0][0]
    prompt["12"]["inputs"].update(tile=True, tile_size=64)
    tiled = run(prompt).results["12"][0][0]
    assert tiled.shape == plain.shape == (1, 64, 96, 3) and not torch.equal(tiled, plain)  # 4 tiles blended


def test_progress_bar_and_previews(env, run, every_progress_event):
    comfy, _ = env
    result = run(t2v_prompt(seed=3, steps=4))
    steps = [(p["value"], p["max"]) for p in result.events("progress") if p["node"] == "3"]
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    previews = [p for node, p in result.previews if node == "3"]
    assert len(previews) == 4 and all(kind == "JPEG" and image.size == (8, 6) for kind, image, _ in previews)
    decode = [(p["value"], p["max"]) for p in result.events("progress") if p["node"] == "4"]
    assert decode and decode[-1][0] == decode[-1][1]  # the VAE's bar reaches its total


@pytest.mark.parametrize("memory", ["model_offload", "block_swap"])
def test_interrupt_mid_sampling(env, run, memory):
    comfy, _ = env
    utils = comfy.modules["comfy.utils"]
    executor = PromptExecutor()
    first = executor.execute(t2v_prompt(seed=1, memory=memory))
    model = first.results["1"][0][0]
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    original = utils.PROGRESS_BAR_HOOK

    def hook(value, total, preview, prompt_id=None, node_id=None):
        original(value, total, preview, prompt_id=prompt_id, node_id=node_id)
        if comfy.server.last_node_id == "3" and value == 2:
            comfy.interrupt()  # the user presses Cancel during step 3

    utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            executor.execute(t2v_prompt(seed=2, memory=memory, steps=4))
    finally:
        utils.set_progress_bar_global_hook(original)
    assert comfy.messages[-1][0] == "execution_interrupted" and comfy.messages[-1][1]["node_id"] == "3"
    assert comfy.model_management.processing_interrupted() is False
    after = model.model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) and after[k].dtype == v.dtype for k, v in before.items())
    resumed = executor.execute(t2v_prompt(seed=2, memory=memory, steps=4))  # the same model, loaded once
    assert resumed.results["1"][0][0] is model and "1" in resumed.cached
    assert torch.equal(latents_of(resumed), latents_of(run(t2v_prompt(seed=2, memory=memory, steps=4))))


def model_state(model) -> dict:
    """Every module's own attributes (LoRA branches, fp8 switches, attention backend) and every weight with its dtype
    and device: what a run must leave as it found it."""
    state = {
        f"{name}:attrs": repr(sorted((k, v) for k, v in m.__dict__.items() if k[0] != "_"))
        for name, m in model.named_modules()
    }
    return state | {k: (v.clone(), v.dtype, v.device) for k, v in model.state_dict().items()}


def assert_same_state(before: dict, after: dict) -> None:
    assert after.keys() == before.keys()
    for key, value in before.items():
        if isinstance(value, tuple):
            assert torch.equal(after[key][0], value[0]) and after[key][1:] == value[1:], key
        else:
            assert after[key] == value, key


@pytest.mark.parametrize("memory,fp8_matmul", [("fp8", True), ("block_swap", False)])
def test_an_error_inside_a_block_leaves_the_model_as_it_was(env, memory, fp8_matmul, monkeypatch):
    """A failure halfway through a step (raised by block 1's third call) with every per-run switch on (Speed
    Options, a LoRA, TeaCache): the model's weights and attributes are as before, and the next run equals a run in a
    session where nothing failed."""
    prompt = t2v_prompt(seed=5, steps=4, memory=memory, teacache=0.3)
    prompt["9"] = {"class_type": "EasyAnimateSpeedOptions", "inputs": {"model": ["1", 0], "attention": "sdpa", "compile": "off", "fp8_matmul": fp8_matmul}}  # fmt: skip
    prompt["10"] = {"class_type": "EasyAnimateLoraLoader", "inputs": {"model": ["9", 0], "lora_name": TINY_LORA, "strength": 0.8}}  # fmt: skip
    prompt["3"]["inputs"]["model"] = ["10", 0]
    clean = latents_of(PromptExecutor().execute(prompt))
    executor = PromptExecutor()
    model = executor.execute(t2v_prompt(seed=1, memory=memory)).results["1"][0][0].model
    before, block, calls = model_state(model), model.transformer_blocks[1], []
    forward = type(block).forward

    def failing(self, *args):
        calls.append(self is block)
        if calls.count(True) == 3:
            raise RuntimeError("block 1 failed")
        return forward(self, *args)

    monkeypatch.setattr(type(block), "forward", failing)
    with pytest.raises(NodeExecutionError, match="block 1 failed"):
        executor.execute(prompt)
    monkeypatch.undo()
    assert_same_state(before, model_state(model))
    assert torch.equal(latents_of(executor.execute(prompt)), clean)
    assert_same_state(before, model_state(model))


def test_out_of_memory_while_sampling_reaches_comfyui_with_advice(env, monkeypatch):
    """An out-of-memory error in the transformer reaches ComfyUI as one (it unloads its models and appends its tips)
    with the pack's advice first; the model is as before and the next run is unaffected."""
    comfy, _ = env
    prompt = t2v_prompt(seed=5, memory="none")
    executor = PromptExecutor()
    clean = latents_of(executor.execute(prompt))
    model = executor.execute(prompt).results["1"][0][0].model
    before, forward, unloads = model_state(model), type(model.transformer_blocks[1]).forward, []

    def failing(self, *args):
        if self is model.transformer_blocks[1]:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return forward(self, *args)

    monkeypatch.setattr(type(model.transformer_blocks[1]), "forward", failing)
    monkeypatch.setattr(comfy.model_management, "unload_all_models", lambda: unloads.append(True))
    error = error_of(lambda p: executor.execute(p), t2v_prompt(seed=6, memory="none"))
    message = error.details["exception_message"]
    assert error.node_id == "3" and type(error.__cause__) is torch.OutOfMemoryError and unloads == [True]
    assert message.startswith("out of memory on cpu while sampling 64x48, 9 frames in memory mode none, which needs")
    assert "These need less: fp8 (about" in message and "model_offload (the same for sampling" in message
    assert "[CUDA out of memory. Tried to allocate 20.00 MiB]\nThis error means you ran out of memory" in message
    monkeypatch.undo()
    assert_same_state(before, model_state(model))
    assert torch.equal(latents_of(executor.execute(prompt)), clean)


def test_a_run_leaves_torch_global_state_alone(env):
    """Loading (the preview map's fit), image-to-video's noise augmentation, a LoRA and TeaCache draw from their own
    seeded generators, never from torch's global stream, and change no global setting."""

    def settings():
        return (torch.is_grad_enabled(), torch.get_default_dtype(), torch.get_num_threads(),
                torch.get_float32_matmul_precision(), torch.are_deterministic_algorithms_enabled())  # fmt: skip

    rng, before = torch.random.get_rng_state(), settings()
    prompt = i2v_prompt(seed=3)
    prompt["10"] = {"class_type": "EasyAnimateLoraLoader", "inputs": {"model": ["1", 0], "lora_name": TINY_LORA, "strength": 1.0}}  # fmt: skip
    prompt["3"]["inputs"].update(model=["10", 0], teacache=0.3)
    PromptExecutor().execute(prompt)
    assert torch.equal(torch.random.get_rng_state(), rng) and settings() == before


def test_memory_modes_give_the_same_video(env, run):
    reference = latents_of(run(t2v_prompt(seed=4, memory="none")))
    assert torch.equal(latents_of(run(t2v_prompt(seed=4, memory="block_swap"))), reference)
    fp8 = latents_of(run(t2v_prompt(seed=4, memory="fp8")))
    assert fp8.shape == reference.shape and torch.isfinite(fp8).all()


def test_single_part_loaders(env, run, every_progress_event):
    prompt = t2v_prompt(seed=9)
    prompt["1"] = {"class_type": "EasyAnimateTransformerLoader", "inputs": {"transformer": "tiny.safetensors", "precision": "fp32", "memory_mode": "none", "resident_blocks": 0}}  # fmt: skip
    prompt["20"] = {"class_type": "EasyAnimateVAELoader", "inputs": {"vae": "tiny_vae.safetensors", "precision": "fp32", "offload": True}}  # fmt: skip
    prompt["21"] = {"class_type": "EasyAnimateTextEncoderLoader", "inputs": {"text_encoder": "tiny-qwen2vl", "precision": "fp32", "offload": False}}  # fmt: skip
    prompt["2"]["inputs"]["text_encoder"] = ["21", 0]
    prompt["4"]["inputs"]["vae"] = ["20", 0]
    result = run(prompt)
    assert torch.equal(latents_of(result), latents_of(run(t2v_prompt(seed=9))))
    assert result.results["1"][0][0].latent_rgb is None and result.results["20"][0][0].latent_rgb is not None
    assert not [node for node, _ in result.previews if node == "3"]  # no VAE, no previews; progress still runs
    assert [p["value"] for p in result.events("progress") if p["node"] == "3"] == [1, 2, 3]


def test_text_encode_cache_is_bounded_and_per_encoder(env):
    _, pack = env
    classes = pack.node_class_mappings
    (encoder,) = classes["EasyAnimateTextEncoderLoader"]().load("tiny-qwen2vl", "fp32", True)
    node = classes["EasyAnimatePromptEncode"]()
    first = node.encode(encoder, "a cat", "")[0]
    assert node.encode(encoder, "a cat", "")[0] is first
    assert node.encode(encoder, "a dog", "")[0] is not first
    for i in range(8):
        node.encode(encoder, f"prompt {i}", "")
    assert node.encode(encoder, "a cat", "")[0] is not first  # evicted: at most 8 pairs are kept
    again = node.encode(encoder, "a cat", "")[0]
    assert torch.equal(again.positive.embeds, first.positive.embeds) and again.kind == "qwen2vl"
    (other,) = classes["EasyAnimateTextEncoderLoader"]().load("tiny-qwen2vl", "fp32", True)
    assert node.encode(other, "a cat", "")[0] is not again  # another encoder starts a new cache


def test_text_encoder_fp8_option(env, run):
    """Both loaders store the text encoder's linear weights in fp8 on request; the embeddings stay close."""
    _, pack = env
    classes = pack.node_class_mappings
    (plain,) = classes["EasyAnimateTextEncoderLoader"]().load("tiny-qwen2vl", "fp32", True)
    (fp8,) = classes["EasyAnimateTextEncoderLoader"]().load("tiny-qwen2vl", "fp32", True, fp8=True)
    _, _, from_checkpoint = classes["EasyAnimateModelLoader"]().load(T2V, "fp32", "none", 0, text_encoder_fp8=True)

    def q_proj_dtype(handle):
        return next(m for n, m in handle.encoder.model.named_modules() if n.endswith("q_proj")).weight.dtype

    assert q_proj_dtype(fp8) == q_proj_dtype(from_checkpoint) == torch.float8_e4m3fn
    assert q_proj_dtype(plain) == torch.float32
    node = classes["EasyAnimatePromptEncode"]()
    a, b = node.encode(plain, "a cat", "")[0].positive.embeds, node.encode(fp8, "a cat", "")[0].positive.embeds
    assert 0 < ((b - a).norm() / a.norm()).item() < 0.1
    prompt = t2v_prompt(seed=3)
    prompt["1"]["inputs"]["text_encoder_fp8"] = True  # the optional widget through the executor
    assert torch.isfinite(latents_of(run(prompt))).all()


def test_loader_attaches_one_preview_map(env):
    _, pack = env
    model, vae, _ = pack.node_class_mappings["EasyAnimateModelLoader"]().load(INP, "auto", "model_offload", 0)
    assert model.latent_rgb is vae.latent_rgb and len(vae.latent_rgb.latent_rgb_factors) == 16
    assert model.dtype == torch.float32 and model.memory.mode == "model_offload" and vae.memory.offloads
    assert model.config.variant.value == "InP" and model.scheduler_config["_class_name"].startswith("FlowMatch")


# --- clear errors from bad input -------------------------------------------------------------------


def test_bad_input_raises_clear_errors(env, run):
    comfy, _ = env
    error = error_of(run, t2v_prompt(width=65))
    assert error.node_id == "3" and isinstance(error.__cause__, ValueError)
    assert "nearest: 64" in error.details["exception_message"]
    assert "nearest: 9" in error_of(run, t2v_prompt(frames=10)).details["exception_message"]
    error = error_of(run, i2v_prompt(ckpt=T2V))
    assert error.node_id == "8" and "InP" in error.details["exception_message"]
    message = error_of(run, i2v_prompt(width=80)).details["exception_message"]
    assert "80x48" in message and "64x48" in message and "same width" in message
    assert "VAE Encode" in error_of(run, t2v_prompt(denoise=0.5)).details["exception_message"]
    assert "nearest: 9" in error_of(run, vae_encode_prompt(frames=8)).details["exception_message"]
    assert "nearest: 64" in error_of(run, vae_encode_prompt(width=70)).details["exception_message"]


def test_missing_checkpoint_errors_say_what_and_where(env):
    comfy, pack = env
    loader = pack.node_class_mappings["EasyAnimateModelLoader"]()
    with pytest.raises(FileNotFoundError, match="looked in") as info:
        loader.load("EasyAnimateV5.1-12b-zh", "auto", "none", 0)
    assert os.path.join(comfy.models_dir, "EasyAnimate") in str(info.value)
    with pytest.raises(ValueError, match="transformer/"):
        loader.load("empty-folder", "auto", "none", 0)


# --- previews from the VAE -------------------------------------------------------------------------


def test_fitted_preview_map_reproduces_the_vae_colours(env):
    comfy, _ = env
    models, _, _ = load_checkpoint(os.path.join(comfy.models_dir, "EasyAnimate", T2V), dtype=torch.float32)
    vae = models.vae
    latent_rgb = fit_latent_rgb(vae)
    assert isinstance(latent_rgb, LatentRGB) and fit_latent_rgb(vae) == latent_rgb  # deterministic
    generator = torch.Generator().manual_seed(1234)  # other latents than the fit's, at another size
    z = smooth_latents(16, 16, (6, 10), generator)
    with torch.no_grad():
        rgb = F.avg_pool2d(vae.decode(z / vae.scaling_factor)[:, :, 0], 8)  # [n, 3, h, w]
    spread = (rgb - rgb.mean(dim=(0, 2, 3), keepdim=True)).pow(2).mean()  # error of the mean colour
    error = (latent_rgb.to_rgb(z)[:, :, 0] - rgb).pow(2).mean()
    assert error < spread  # explains part of the colour: better than no map
    factors = torch.tensor(latent_rgb.latent_rgb_factors)
    for _ in range(5):  # chance: the same weights given to the wrong channels
        shuffled = LatentRGB(tuple(map(tuple, factors[torch.randperm(16, generator=generator)].tolist())),
                             latent_rgb.latent_rgb_factors_bias)  # fmt: skip
        assert error < (shuffled.to_rgb(z)[:, :, 0] - rgb).pow(2).mean()


def test_speed_options_and_teacache(env, run):
    reference = run(t2v_prompt(seed=5, steps=4))
    assert reference.outputs["3"]["text"] == ["4 transformer calls, 0 skipped by TeaCache"]
    cached = run(t2v_prompt(seed=5, steps=4, teacache=0.9))
    assert cached.outputs["3"]["text"] == ["2 transformer calls, 2 skipped by TeaCache"]
    assert not torch.equal(latents_of(cached), latents_of(reference))
    prompt = t2v_prompt(seed=5, steps=4)
    prompt["9"] = {"class_type": "EasyAnimateSpeedOptions", "inputs": {"model": ["1", 0], "attention": "sdpa", "compile": "aot_eager", "fp8_matmul": False}}  # fmt: skip
    prompt["3"]["inputs"]["model"] = ["9", 0]
    result = run(prompt)
    assert torch.allclose(latents_of(result), latents_of(reference), atol=1e-5)
    assert sorted(result.results["9"][0][0].compiled) == [0, 1]  # both tiny blocks compiled, on the new handle only
    assert result.results["1"][0][0].compiled == {}
    missing = [b for b in ("flash", "sage") if b not in available_backends()]
    if missing:
        prompt["9"]["inputs"].update(attention=missing[0], compile="off")
        with pytest.raises(NodeExecutionError, match="not installed"):
            run(prompt)


def test_speed_options_inductor_without_triton_on_a_gpu_is_an_error(env, run, monkeypatch):
    """On a GPU without Triton (Windows torch), compile=inductor fails before any work, naming the fix."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real_find_spec(name, *a)
    )
    prompt = t2v_prompt(seed=5, steps=4)
    run(prompt)  # the loader's output is cached: it does not run again on the "GPU" below
    monkeypatch.setattr(pack_host(), "torch_device", lambda: torch.device("cuda"))
    prompt["9"] = {"class_type": "EasyAnimateSpeedOptions", "inputs": {"model": ["1", 0], "attention": "sdpa", "compile": "inductor", "fp8_matmul": False}}  # fmt: skip
    prompt["3"]["inputs"]["model"] = ["9", 0]
    error = error_of(run, prompt)
    assert "node #9 (EasyAnimateSpeedOptions)" in str(error) and "needs Triton" in str(error)


def test_speed_options_fp8_matmul(env, run):
    """fp8 GEMMs on an fp8-stored model: close to the plain fp8 run (activation rounding), not equal to it,
    repeatable, and only with memory mode fp8."""
    fp8 = latents_of(run(t2v_prompt(seed=5, memory="fp8")))
    prompt = t2v_prompt(seed=5, memory="fp8")
    speed = {"model": ["1", 0], "attention": "sdpa", "compile": "off", "fp8_matmul": True}
    prompt["9"] = {"class_type": "EasyAnimateSpeedOptions", "inputs": speed}
    prompt["3"]["inputs"]["model"] = ["9", 0]
    result = run(prompt)
    fast = latents_of(result)
    assert result.results["9"][0][0].fp8_matmul and not result.results["1"][0][0].fp8_matmul
    assert not torch.equal(fast, fp8)
    assert ((fast - fp8).norm() / fp8.norm()).item() < 0.05
    assert torch.equal(latents_of(PromptExecutor().execute(prompt)), fast)  # a fresh session: same output
    prompt["1"]["inputs"]["memory_mode"] = "model_offload"
    assert "load the transformer with memory mode fp8" in str(error_of(run, prompt))


def pack_host():
    """The loaded pack's nodes/host.py module."""
    suffix = os.path.join(FOLDER, "nodes", "host.py")
    return next(m for m in list(sys.modules.values()) if (getattr(m, "__file__", None) or "").endswith(suffix))


def test_nodes_make_room_before_device_work(env, monkeypatch):
    """Every node that puts a model on the device first asks ComfyUI's model manager to free what it needs
    (host.make_room -> model_management.free_memory), as ComfyUI's own loaders do: the conditioning's VAE encode,
    text encoding, sampling and decoding, each asking the engine's estimate of what it adds on the device."""
    from easyanimate_core.memory import param_bytes, sampling_vram_bytes, vae_vram_bytes

    host, asked = pack_host(), []
    make_room = host.make_room

    def recording(estimate, *args, **kwargs):
        asked.append(estimate(*args, **kwargs, device=host.torch_device()))
        return make_room(estimate, *args, **kwargs)

    monkeypatch.setattr(host, "make_room", recording)
    result = execute_prompt(i2v_prompt(seed=3))
    model, vae, text_encoder = (output[0] for output in result.results["1"])
    cpu = torch.device("cpu")  # ComfyUI's compute device here
    # in the executor's order: the conditioning's VAE encode, text encoding, sampling, decoding
    assert len(asked) == 4 and asked[1] == 2**30  # the text encoder's weights are all there: its margin only
    # weights already on the compute device add nothing (everything is on the CPU here); elsewhere they count
    shape = (1, 16, 3, 6, 8)
    assert asked[2] == sampling_vram_bytes(model.model, model.memory, shape, model.dtype, device=cpu) > 0
    everything = sampling_vram_bytes(model.model, model.memory, shape, model.dtype, device=torch.device("meta"))
    assert everything - asked[2] == param_bytes(model.model) > 0
    assert asked[0] == asked[3] == vae_vram_bytes(vae.vae, 48, 64, vae.dtype, device=cpu) > 0  # same size


def test_make_room_offload_devices_and_precision_follow_comfyui(env, monkeypatch):
    comfy, pack = env
    mm, host = comfy.model_management, pack_host()
    calls = mm.free_memory_calls
    calls.clear()
    assert host.make_room(lambda device: 5000) == torch.device("cpu") and calls == []  # as load_models_gpu: not the CPU
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(mm, "get_torch_device", lambda: gpu)
    monkeypatch.setattr(mm, "EXTRA_RESERVED_VRAM", 2**30)  # --reserve-vram 1
    assert host.make_room(lambda device: 5000 if device == gpu else 0) == gpu
    assert calls == [(5000 + 2**30, gpu)]
    # idle weights go where ComfyUI puts that kind of model (e.g. with --highvram only the diffusion model stays)
    monkeypatch.setattr(mm, "unet_offload_device", lambda: gpu)
    assert host.offload_device() == host.offload_device("transformer") == gpu
    assert host.offload_device("vae") == host.offload_device("text_encoder") == torch.device("cpu")
    monkeypatch.setattr(mm, "vae_offload_device", lambda: gpu)
    assert host.offload_device("vae") == gpu
    # precision auto is ComfyUI's choice for its device (e.g. --force-fp32 makes both answers False)
    monkeypatch.setattr(mm, "should_use_bf16", lambda device=None, **_: False)
    monkeypatch.setattr(mm, "should_use_fp16", lambda device=None, **_: False)
    assert [host.precision(p, gpu) for p in ("auto", "bf16")] == ["fp32", "bf16"]  # explicit choices stay
    # like ComfyUI's rule for GPUs without bf16: fp16 when fp32 weights of that size would not fit (told by the pack)
    too_big_for_fp32 = lambda device=None, model_params=0, manual_cast=False, **_: (  # noqa: E731
        device == gpu and manual_cast and model_params * 4 > 24 * 2**30
    )
    monkeypatch.setattr(mm, "should_use_fp16", too_big_for_fp32)
    assert host.precision("auto", gpu) == "fp16" and host.precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(mm, "should_use_bf16", lambda device=None, **_: True)
    assert host.precision("auto", gpu) == "bf16"
    monkeypatch.setattr(mm, "get_torch_device", lambda: torch.device("cpu"))
    model = pack.node_class_mappings["EasyAnimateTransformerLoader"]().load("tiny.safetensors", "auto", "none", 0)[0]
    assert model.dtype == torch.bfloat16  # the loader asked ComfyUI


def test_latent_noise_mask_keeps_the_video_where_it_is_zero(env, run):
    """Set Latent Noise Mask works as with KSampler: mask 0 gives back the input latents exactly (each step puts
    them back, un-noised after the last), mask 1 equals the run without a mask, a half mask keeps its half."""
    encoded = run(vae_encode_prompt()).results["11"][0][0]["samples"]

    def masked(value=None, denoise=1.0):
        prompt = {**t2v_prompt(INP, seed=9, denoise=denoise, latent=["11", 0]), **vae_encode_prompt()}
        if value is not None:
            prompt["20"] = {"class_type": "SolidMask", "inputs": {"value": value, "width": 64, "height": 48}}
            prompt["21"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["11", 0], "mask": ["20", 0]}}
            prompt["3"]["inputs"]["latent"] = ["21", 0]
        return latents_of(run(prompt))

    assert torch.equal(masked(0.0), encoded)
    assert torch.equal(masked(0.0, denoise=0.6), encoded)
    assert torch.equal(masked(1.0), masked(None))
    assert not torch.equal(masked(1.0), encoded)
    left = torch.zeros(1, 48, 64)
    left[:, :, 32:] = 1  # regenerate the right half only
    from easyanimate_core.builders import noise_mask_conditioning
    from easyanimate_core.sampling import Conditioning

    keep = noise_mask_conditioning(Conditioning(), left[:, None], encoded, tuple(encoded.shape)).keep_mask
    assert keep.shape == (1, 1, 3, 6, 8) and torch.equal(keep[..., :3], torch.zeros(1, 1, 3, 6, 3))
    assert torch.equal(keep[..., 5:], torch.ones(1, 1, 3, 6, 3))
    with pytest.raises(ValueError, match="one mask for all frames or 9"):
        noise_mask_conditioning(Conditioning(), torch.ones(4, 1, 48, 64), encoded, tuple(encoded.shape))
    with pytest.raises(ValueError, match="use one"):
        noise_mask_conditioning(Conditioning(keep_mask=keep), left, encoded, tuple(encoded.shape))
    half = noise_mask_conditioning(Conditioning(), left[:, ::2, ::2], encoded, tuple(encoded.shape)).keep_mask
    assert torch.equal(half, keep)  # the same aspect ratio at another size is scaled
    wide = torch.zeros(1, 64, 128)
    wide[:, :, :32] = 1  # regenerate the left quarter of a 2:1 mask (e.g. drawn on wider source frames)
    quarter = noise_mask_conditioning(Conditioning(), wide, encoded, tuple(encoded.shape)).keep_mask
    # stretched to the 64x48 video as KSampler does: 2 of the 8 latent columns (a centre crop would leave 1)
    assert torch.equal(quarter[..., :2], torch.ones(1, 1, 3, 6, 2)) and torch.count_nonzero(quarter[..., 2:]) == 0


def test_soft_latent_noise_mask_blends_as_ksampler_does(env, run):
    """A noise mask between 0 and 1 (SolidMask 0.5, a feathered Grow Mask) is not binarised: ComfyUI's
    prepare_mask keeps its values, so KSampler half-regenerates where it is 0.5; a 0.5 mask kept the whole video."""
    encoded = run(vae_encode_prompt()).results["11"][0][0]["samples"]

    def masked(value):
        prompt = {**t2v_prompt(INP, seed=9, latent=["11", 0]), **vae_encode_prompt()}
        prompt["20"] = {"class_type": "SolidMask", "inputs": {"value": value, "width": 32, "height": 24}}
        prompt["21"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["11", 0], "mask": ["20", 0]}}
        prompt["3"]["inputs"]["latent"] = ["21", 0]
        return latents_of(run(prompt))

    half, kept, redrawn = masked(0.5), masked(0.0), masked(1.0)
    assert torch.equal(kept, encoded)
    # the last step blends the sampler's result with the input latents half and half
    assert not torch.equal(half, encoded) and not torch.equal(half, redrawn)
    from easyanimate_core.builders import noise_mask_conditioning
    from easyanimate_core.sampling import Conditioning

    soft = torch.full((1, 1, 24, 32), 0.5)  # Set Latent Noise Mask's [N, 1, H, W] of a smaller mask
    keep = noise_mask_conditioning(Conditioning(), soft, encoded, tuple(encoded.shape)).keep_mask
    assert keep.shape == (1, 1, 3, 6, 8) and torch.allclose(keep, torch.full_like(keep, 0.5))
    ramp = torch.linspace(0, 1, 64).expand(1, 48, 64)  # a feathered edge stays a ramp on the latent grid
    keep = noise_mask_conditioning(Conditioning(), ramp, encoded, tuple(encoded.shape)).keep_mask
    assert keep[0, 0, 0, 0, 0] == 0 and keep[0, 0, 0, 0, -1] == 1 and 0 < keep[0, 0, 0, 0, 3] < 1


def test_per_frame_noise_mask_repeated_with_the_latent_batch():
    """Set Latent Noise Mask with one mask per frame, then Repeat Latent Batch (amount 2): ComfyUI repeats the
    [9, 1, H, W] mask to [18, 1, H, W] along with the latents. The 18 masks are the 9 frames of each video in
    turn; they were refused as '18 frames but a 9-frame video'."""
    from easyanimate_core.builders import noise_mask_conditioning
    from easyanimate_core.sampling import Conditioning

    latents = torch.zeros(2, 16, 3, 6, 8)
    first, second = torch.zeros(9, 1, 48, 64), torch.zeros(9, 1, 48, 64)
    first[:, :, :, 32:] = 1  # regenerate the right half of the first video
    second[5:] = 1  # and the last frames of the second
    keep = noise_mask_conditioning(Conditioning(), torch.cat([first, second]), latents, tuple(latents.shape)).keep_mask
    one = (1, 16, 3, 6, 8)
    expected = [noise_mask_conditioning(Conditioning(), m, latents[:1], one).keep_mask for m in (first, second)]
    assert keep.shape == (2, 1, 3, 6, 8) and torch.equal(keep, torch.cat(expected))
    assert not torch.equal(keep[0], keep[1])
    repeated = noise_mask_conditioning(Conditioning(), first.repeat(2, 1, 1, 1), latents, tuple(latents.shape))
    assert torch.equal(repeated.keep_mask, expected[0].expand(2, -1, -1, -1, -1))  # what Repeat Latent Batch makes
    with pytest.raises(ValueError, match=r"has 3 frames .* or 9 \(one per frame\), or 18 \(one per frame of each"):
        noise_mask_conditioning(Conditioning(), torch.ones(3, 1, 48, 64), latents, tuple(latents.shape))
    stills = torch.zeros(2, 16, 1, 6, 8)  # two 1-frame videos, one mask each: per video, as the error offers
    masks = torch.stack([first[0], second[-1]])
    keep = noise_mask_conditioning(Conditioning(), masks, stills, tuple(stills.shape)).keep_mask
    assert keep.shape == (2, 1, 1, 6, 8) and keep[0].mean() == 0.5 and keep[1].min() == 1


def spied_sampler(pack, monkeypatch):
    """(model, vae, Sampler node, its module, calls): the tiny T2V model and a Sampler whose make_room and
    run_sampler only record that they were reached (for errors that must come before any model work)."""
    model, vae, _ = pack.node_class_mappings["EasyAnimateModelLoader"]().load(T2V, "fp32", "model_offload", 1)
    sampler = pack.node_class_mappings["EasyAnimateVideoSampler"]()
    sampling = sys.modules[type(sampler).__module__]
    calls = []
    monkeypatch.setattr(sampling.host, "make_room", lambda *a, **k: calls.append("make_room"))
    monkeypatch.setattr(sampling, "run_sampler", lambda *a, **k: calls.append("run_sampler"))
    return model, vae, sampler, sampling, calls


def test_sampler_names_upscale_latent_for_a_latent_of_an_unusable_size(env, monkeypatch):
    """Upscale Latent By 1.5 turns a 64x48 video's [1, 16, 3, 6, 8] latent into [1, 16, 3, 9, 12] (ComfyUI's
    common_upscale scales the last two dimensions of a 5-D latent): a 96x72 video. The error says the size
    comes from the latent and how to fix it there, not only that the height must be divisible by 16."""
    _, pack = env
    model, _, sampler, sampling, calls = spied_sampler(pack, monkeypatch)
    scaled = {"samples": torch.nn.functional.interpolate(torch.zeros(3, 16, 6, 8), size=(9, 12))[None].movedim(1, 2)}
    assert scaled["samples"].shape == (1, 16, 3, 9, 12)
    for denoise in (0.5, 1.0):
        with pytest.raises(
            ValueError,
            match=r"the latent \(12x9, 3 latent frames\) is a 96x72 video.*height must be "
            r"divisible by 16; nearest: 80.*Upscale Latent.*Upscale Latent By",
        ):
            sampler.sample(model, None, 64, 48, 9, 2, 6.0, 0, "Flow", 0.0, latent=scaled, denoise=denoise)
    assert calls == []


def test_latents_of_other_models_are_refused_naming_the_fix(env, monkeypatch):
    """Empty Latent Image's [1, 4, H/8, W/8] and EmptyMochiLatentVideo's [1, 12, (frames-1)/6+1, H/8, W/8] (as
    ComfyUI 0.3.64 makes them) into the Sampler or VAE Decode: an error naming the LATENT's kind and what to
    connect, before any model work (the decoder said 'latents must have 16 channels, got 12 (nearest valid
    value: 16)', the Sampler 'input latents ... do not match the run's', or took a Mochi latent's size as ours).
    EmptyHunyuanLatentVideo's [1, 16, (frames-1)/4+1, H/8, W/8] is the same layout as ours and is taken."""
    _, pack = env
    model, vae, sampler, sampling, calls = spied_sampler(pack, monkeypatch)
    decoder = pack.node_class_mappings["EasyAnimateVAEDecode"]()
    image, mochi = torch.zeros(1, 4, 6, 8), torch.zeros(1, 12, 3, 6, 8)
    for latents, kind in ((image, "an image latent"), (mochi, "not an EasyAnimate video latent")):
        for denoise in (0.5, 1.0):
            with pytest.raises(ValueError, match=f"the Sampler's latent input got a LATENT .*{kind}.*VAE Encode"):
                sampler.sample(
                    model, None, 64, 48, 9, 2, 6.0, 0, "Flow", 0.0, latent={"samples": latents}, denoise=denoise
                )
        with pytest.raises(ValueError, match=f"EasyAnimate VAE Decode got a LATENT .*{kind}.*Sampler"):
            decoder.decode(vae, {"samples": latents}, False, 512)
    assert calls == []
    hunyuan = {"samples": torch.zeros(1, 16, 3, 6, 8)}
    assert sampling._generation_size(hunyuan, 672, 384, 49, 1.0, model.config.out_channels) == ((64, 48, 9), None)


def test_latent_from_batch_keeps_the_noise_it_had_in_the_batch(env):
    """A LATENT's batch_index (Latent From Batch, Latent Batch) picks each video's noise from the batch drawn
    whole, as KSampler does: video 2 taken out of a batch of 3 comes out as it did in the batch (batched
    arithmetic aside); without batch_index a single video gets the batch's first noise. The output keeps
    batch_index, and one that does not fit the batch is an error."""
    _, pack = env
    classes = pack.node_class_mappings
    model, _, encoder = classes["EasyAnimateModelLoader"]().load(T2V, "fp32", "model_offload", 1)
    (embeds,) = classes["EasyAnimatePromptEncode"]().encode(encoder, PROMPT, NEGATIVE)
    sampler = classes["EasyAnimateVideoSampler"]()

    def run(latent):
        args = (model, embeds, 64, 48, 9, 2, 6.0, 5, "Flow", 0.0)
        return sampler.sample(*args, latent=latent, denoise=1.0, teacache=0.0)["result"][0]

    empty = torch.zeros(3, 16, 3, 6, 8)  # EmptyHunyuanLatentVideo's layout, batch 3
    whole = run({"samples": empty})["samples"]
    taken = run({"samples": empty[2:], "batch_index": [2]})  # what Latent From Batch (2, 1) gives
    plain = run({"samples": empty[2:]})["samples"]
    assert taken["batch_index"] == [2]
    assert torch.allclose(taken["samples"][0], whole[2], atol=1e-4)
    assert torch.allclose(plain[0], whole[0], atol=1e-4) and (plain[0] - whole[2]).abs().max() > 1e-2
    assert "batch_index" not in run({"samples": empty[:1]})
    assert run({"samples": empty[2:], "batch_index": [np.int64(2)]})["batch_index"] == [2]  # numpy's integers too
    for bad in ([0], [0, -1], [0, 1.5], "0,1"):
        with pytest.raises(ValueError, match="batch_index .* Latent From Batch"):
            run({"samples": empty[:2], "batch_index": bad})


def test_sampler_refuses_an_empty_latent_batch_before_any_model_work(env, monkeypatch):
    """A LATENT of batch 0 (e.g. left by a rebatch) is a clear error, not an IndexError from the preview."""
    _, pack = env
    model, _, sampler, sampling, calls = spied_sampler(pack, monkeypatch)
    empty = {"samples": torch.zeros(0, 16, 3, 6, 8)}
    message = r"^the latent batch is empty \(shape \[0, 16, 3, 6, 8\]\): connect a LATENT with at least one video$"
    for denoise in (0.5, 1.0):
        with pytest.raises(ValueError, match=message):
            sampler.sample(model, None, 64, 48, 9, 2, 6.0, 0, "Flow", 0.0, latent=empty, denoise=denoise)
    assert calls == []


def image_to_video_node(env):
    _, pack = env
    model, vae, _ = pack.node_class_mappings["EasyAnimateModelLoader"]().load(INP, "fp32", "model_offload", 1)
    node = pack.node_class_mappings["EasyAnimateImageToVideo"]()

    def encode(frames=9, **images):
        return node.encode(model, vae, 64, 48, frames, 0.0, 0, **images)[0].conditioning.inpaint

    return encode


def test_image_to_video_with_one_frame_takes_one_image(env):
    encode = image_to_video_node(env)
    red, blue = torch.zeros(1, 48, 64, 3), torch.zeros(1, 48, 64, 3)
    red[..., 0], blue[..., 2] = 1, 1
    message = "^frames=1 has room for one image: connect only start_image or end_image, or set frames to 5 or more$"
    with pytest.raises(ValueError, match=message):
        encode(1, start_image=red, end_image=blue)
    start, end = encode(1, start_image=red), encode(1, end_image=blue)
    assert start.shape == end.shape == (1, 17, 1, 6, 8) and not torch.equal(start, end)
    assert encode(5, start_image=red, end_image=blue).shape == (1, 17, 2, 6, 8)


def test_image_to_video_keeps_a_batch_of_start_images_as_the_first_frames(env):
    """The official nodes turn every image of a start batch into a kept frame (get_image_to_video_latent)."""
    encode = image_to_video_node(env)
    batch = torch.rand(3, 48, 64, 3, generator=torch.Generator().manual_seed(8))
    frames = batch.movedim(-1, 0)  # [3, K, H, W], what continuing a clip passes
    assert torch.equal(encode(start_image=batch), continued(env, frames))
    assert not torch.equal(encode(start_image=batch), encode(start_image=batch[:1]))  # not just the first
    with pytest.raises(ValueError, match=r"9 start frame\(s\) and an end image do not fit in 9 frames"):
        encode(start_image=torch.rand(9, 48, 64, 3), end_image=batch[:1])
    # keeping every frame would run the sampler to reproduce the input: said, as for continuing a clip
    message = r"^9 start frames leave none of the 9 frames to generate: raise frames to 13 or connect fewer images$"
    with pytest.raises(ValueError, match=message):
        encode(start_image=torch.rand(9, 48, 64, 3))
    with pytest.raises(ValueError, match=r"^8 start frames and an end image leave none of the 9 frames"):
        encode(start_image=torch.rand(8, 48, 64, 3), end_image=batch[:1])
    assert encode(start_image=torch.rand(8, 48, 64, 3)).shape[2] == 3  # one frame left to generate is fine


def continued(env, frames):
    _, pack = env
    from easyanimate_core.builders import image_to_video_conditioning

    model, vae, _ = pack.node_class_mappings["EasyAnimateModelLoader"]().load(INP, "fp32", "model_offload", 1)
    cond = image_to_video_conditioning(
        vae, model.config, frames, None, 64, 48, 9, noise_aug_strength=0.0, seed=0, device=torch.device("cpu"),
        offload=torch.device("cpu"),
    )  # fmt: skip
    return cond.inpaint


def test_image_to_video_takes_gray_and_rgba_images(env):
    encode = image_to_video_node(env)
    gray = torch.rand(2, 56, 80, 1, generator=torch.Generator().manual_seed(3))
    rgb = gray.expand(-1, -1, -1, 3)
    expected = encode(start_image=rgb, end_image=rgb.flip(1))
    assert torch.equal(encode(start_image=gray, end_image=gray.flip(1)), expected)
    rgba = torch.cat([rgb, torch.rand(2, 56, 80, 1)], dim=-1)  # the alpha is dropped
    assert torch.equal(encode(start_image=rgba, end_image=rgba.flip(1)), expected)
    with pytest.raises(
        ValueError, match=r"^end_image: IMAGE must have 1 \(gray\), 3 \(RGB\) or 4 \(RGBA\) channels, got 2"
    ):
        encode(start_image=rgb, end_image=torch.rand(1, 56, 80, 2))
    with pytest.raises(ValueError, match="^start_image is an empty batch"):
        encode(start_image=torch.rand(0, 56, 80, 3))
    broken = rgb.clone()
    broken[1, 5, 7, 0] = float("nan")  # an upstream node's NaN gave an all-NaN video without a word
    with pytest.raises(ValueError, match="^end_image contains NaN or infinite values"):
        encode(start_image=rgb, end_image=broken)


def test_image_to_video_encode_reports_progress_and_stops_on_cancel(env, every_progress_event):
    comfy, _ = env
    steps = [(p["value"], p["max"]) for p in execute_prompt(i2v_prompt(seed=2)).events("progress") if p["node"] == "8"]
    assert steps and steps[-1][0] == steps[-1][1]  # the VAE encode's bar reaches its total
    encode = image_to_video_node(env)
    comfy.interrupt()  # Cancel before the node encodes
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        encode(start_image=torch.rand(1, 48, 64, 3))
    assert comfy.model_management.processing_interrupted() is False
    utils = comfy.modules["comfy.utils"]
    original = utils.PROGRESS_BAR_HOOK

    def hook(value, total, preview, prompt_id=None, node_id=None):
        original(value, total, preview, prompt_id=prompt_id, node_id=node_id)
        if comfy.server.last_node_id == "8" and value == 1:
            comfy.interrupt()  # Cancel while the node encodes

    utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            execute_prompt(i2v_prompt(seed=2))
    finally:
        utils.set_progress_bar_global_hook(original)
    assert comfy.messages[-1][0] == "execution_interrupted" and comfy.messages[-1][1]["node_id"] == "8"


# Node IDs registered by other EasyAnimate node packs (ComfyUI keeps the last pack loaded for a clashing ID, so a
# clash would break our workflows or theirs): kijai/ComfyUI-EasyAnimateWrapper's nodes.py and the official
# aigc-apps/EasyAnimate comfyui/ package, as read on 2026-11-22.
OTHER_PACKS_NODE_IDS = {
    "DownloadAndLoadEasyAnimateModel", "EasyAnimateSampler", "EasyAnimateTextEncode", "EasyAnimateDecode",
    "EasyAnimateResize", "EasyAnimateImageEncoder",  # kijai
    "LoadEasyAnimateModel", "LoadEasyAnimateLora", "EasyAnimate_TextBox", "TextBox", "EasyAnimateT2VSampler",
    "EasyAnimateI2VSampler", "EasyAnimateV2VSampler", "EasyAnimateV5_T2VSampler", "EasyAnimateV5_I2VSampler",
    "EasyAnimateV5_V2VSampler", "CameraBasicFromChaoJie", "CameraCombineFromChaoJie", "CameraJoinFromChaoJie",
    "CameraTrajectoryFromChaoJie", "CreateTrajectoryBasedOnKJNodes", "ImageMaximumNode",  # official
}  # fmt: skip


def test_node_ids_do_not_clash_with_other_easyanimate_packs(env):
    _, pack = env
    ours = set(pack.node_class_mappings)
    assert len(ours) == 23 and all(name.startswith("EasyAnimate") for name in ours)
    assert not ours & OTHER_PACKS_NODE_IDS


def test_conditioning_from_another_model_variant_is_refused(env, run):
    prompt = i2v_prompt(INP)
    prompt["30"] = {**prompt["1"], "inputs": {**prompt["1"]["inputs"], "checkpoint": T2V}}
    prompt["3"]["inputs"]["model"] = ["30", 0]  # the conditioning was made with the InP model "1"
    message = str(error_of(run, prompt))
    assert "made for an EasyAnimate InP checkpoint but this model is T2V" in message
    assert "connect the same model to the conditioning node and to the sampler" in message


def test_sampler_report_is_shown_again_when_cached(env, run):
    """HAS_INTERMEDIATE_OUTPUT: on a fully cached run ComfyUI sends the Sampler's UI (its call report) again."""
    run(t2v_prompt(seed=21))
    again = run(t2v_prompt(seed=21))
    assert "3" in again.cached and "3" not in again.executed
    shown = [e["output"] for e in again.events("executed") if e["node"] == "3"]
    assert shown == [{"text": ["3 transformer calls, 0 skipped by TeaCache"]}]  # 3 steps, CFG batched
    assert object_info()["EasyAnimateVideoSampler"]["has_intermediate_output"] is True


def test_loaded_models_tell_comfyui_cache_their_size(env):
    """ComfyUI's RAM-pressure cache sizes a cached output by the tensors `_comfy_cache_tensors()` returns."""
    _, pack = env
    model, vae, text_encoder = pack.node_class_mappings["EasyAnimateModelLoader"]().load(INP, "fp32", "none", 0)

    def size(handle):
        return sum(t.numel() * t.element_size() for t in handle._comfy_cache_tensors())

    assert size(model) == sum(t.numel() * 4 for t in model.model.state_dict().values()) > 0
    assert size(vae) == sum(t.numel() * 4 for t in vae.vae.state_dict().values()) > 0
    encoders = text_encoder.encoder.modules()
    assert size(text_encoder) == sum(p.numel() * 4 for m in encoders for p in m.parameters()) + sum(
        b.numel() * b.element_size() for m in encoders for b in m.buffers()
    )


def test_model_loader_shows_progress(env, every_progress_event):
    """Load EasyAnimate Model's bar: the transformer's weight files, the VAE, the text encoder (a fresh session, so
    the loader really runs)."""
    result = execute_prompt(t2v_prompt(seed=3, memory="none"))
    loading = [(p["value"], p["max"]) for p in result.events("progress") if p["node"] == "1"]
    assert loading == [(1, 3), (2, 3), (3, 3)]  # one weights file, the VAE, the text encoder
