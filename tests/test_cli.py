"""The command line (``python -m easyanimate_core``) end to end on tiny checkpoints."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image

from easyanimate_core import cli, media
from easyanimate_core.__main__ import main
from easyanimate_core.checkpoint import load_checkpoint
from easyanimate_core.pipeline import Request, generate
from easyanimate_core.testing import write_single_file, write_tiny_checkpoint

ROOT = Path(__file__).resolve().parent.parent
PROMPT, NEGATIVE = "a boat on a lake", "blurry"
SIZE = ["--width", "64", "--height", "48", "--frames", "9", "--steps", "2", "--seed", "5"]
REQUEST = dict(prompt=PROMPT, negative_prompt=NEGATIVE, width=64, height=48, frames=9, steps=2, seed=5)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_ckpt")
    return {name: write_tiny_checkpoint(root / name, variant=name) for name in ("T2V", "InP")}


@pytest.fixture(scope="module")
def api(ckpts):
    """The Python API's models for the same checkpoints, to compare the CLI's output with."""
    return {name: load_checkpoint(path, dtype=torch.float32)[0] for name, path in ckpts.items()}


@pytest.fixture(scope="module")
def start_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli_img") / "start.png"
    media.demo_picture(80, 56).save(path)  # another size than the video's: fitted by the engine
    return path


def gen(model, out, *extra) -> int:
    return main(["generate", "--model", str(model), "--prompt", PROMPT, "--negative-prompt", NEGATIVE, *SIZE,
                 "--out", str(out), "-q", *extra])  # fmt: skip


def test_npy_equals_python_api(ckpts, api, tmp_path, capsys):
    out = tmp_path / "clip.npy"
    assert gen(ckpts["T2V"], out) == 0
    assert capsys.readouterr().out.strip() == str(out)
    expected = generate(api["T2V"], Request(**REQUEST)).numpy()
    got = np.load(out)
    assert got.dtype == np.float32 and got.shape == (9, 48, 64, 3)
    assert np.array_equal(got, expected)


def frame_count(path: Path) -> tuple[int, tuple[int, int]]:
    if path.suffix == ".mp4":
        with imageio.get_reader(str(path), format="FFMPEG") as reader:
            frames = [f for f in reader]  # noqa: C416 (list(reader) asks its infinite length)
        return len(frames), frames[0].shape[1::-1]
    with Image.open(path) as im:
        return im.n_frames, im.size


@pytest.mark.parametrize("suffix", [".mp4", ".webp", ".gif"])
def test_video_files_readable(ckpts, tmp_path, suffix):
    out = tmp_path / "sub" / f"clip{suffix}"  # a missing folder is created
    assert gen(ckpts["T2V"], out) == 0
    assert frame_count(out) == (9, (64, 48))
    assert media.read_video(out).shape == (3, 9, 48, 64)


def test_image_to_video_with_start_image(ckpts, api, tmp_path, start_png):
    out = tmp_path / "i2v.npy"
    assert gen(ckpts["InP"], out, "--start-image", str(start_png)) == 0
    expected = generate(api["InP"], Request(**REQUEST, start_image=media.read_image(start_png))).numpy()
    assert np.array_equal(np.load(out), expected)
    assert gen(ckpts["InP"], tmp_path / "t2v.npy") == 0  # the same InP model without the image differs
    assert np.abs(np.load(tmp_path / "t2v.npy") - expected).max() > 1e-2


def test_npy_videos_that_would_be_misread_are_refused(tmp_path):
    video = np.random.default_rng(0).random((5, 48, 64, 3), dtype=np.float32)
    np.save(tmp_path / "ok.npy", video)
    assert torch.equal(
        media.read_video(tmp_path / "ok.npy", max_frames=3), torch.from_numpy(video[:3]).permute(3, 0, 1, 2)
    )
    cases = [
        (video[0], r"holds one image \[48, 64, 3\], not a video \[T, H, W, 3\]"),  # was 48 frames 3 pixels tall
        (video * 255, r"holds float values from .* to 25\d.*; float frames must be in 0\.\.1"),  # was clamped white
        (np.where(video > 0.5, np.nan, video), r"float frames must be in 0\.\.1"),
        ((video * 100).astype(np.int64), "holds int64 values"),
    ]
    for array, message in cases:
        np.save(tmp_path / "bad.npy", array)
        with pytest.raises(ValueError, match=message):
            media.read_video(tmp_path / "bad.npy")


def test_short_input_videos_are_refused_before_loading(tmp_path, capsys):
    np.save(tmp_path / "five.npy", np.zeros((5, 48, 64, 3), dtype=np.float32))
    for flag, what in (("--control-video", "control video"), ("--video", "input video")):
        argv = ["generate", "--model", str(tmp_path / "no-such-model"), "--prompt", PROMPT, *SIZE, flag,
                str(tmp_path / "five.npy"), "--out", str(tmp_path / "x.npy")]  # fmt: skip
        assert main(argv + (["--denoise", "0.5"] if flag == "--video" else [])) != 0
        assert f"the {what} {tmp_path / 'five.npy'} has 5 frames but --frames is 9; lower it" in one_line_error(capsys)


def test_video_to_video_from_frame_folder(ckpts, api, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(11):  # frame_10 after frame_9: names sorted as numbers
        media.demo_picture(64, 48, i / 10).save(frames / f"frame_{i}.png")
    out = tmp_path / "v2v.npy"
    assert gen(ckpts["T2V"], out, "--video", str(frames), "--denoise", "0.5") == 0
    video = media.read_video(frames)
    assert torch.equal(video[:, 10], media.read_image(frames / "frame_10.png"))
    expected = generate(api["T2V"], Request(**REQUEST, video=video, denoise=0.5)).numpy()
    assert np.array_equal(np.load(out), expected)


def test_continue_from_writes_the_joined_long_video(ckpts, api, tmp_path, capsys):
    clip = torch.rand(3, 11, 56, 80, generator=torch.Generator().manual_seed(4))  # another size: fitted
    np.save(tmp_path / "clip.npy", clip.permute(1, 2, 3, 0).numpy())
    out = tmp_path / "long.npy"
    assert gen(ckpts["InP"], out, "--continue-from", str(tmp_path / "clip.npy"), "--overlap", "3") == 0
    new = generate(api["InP"], Request(**REQUEST, start_image=clip[:, -3:])).numpy()  # begins with its last 3
    long = np.load(out)
    assert long.shape == (11 + 9 - 3, 48, 64, 3)
    assert np.array_equal(long[11:], new[3:])  # after the cross-faded frames, the new clip
    assert np.allclose(long[9], media_fit(clip[:, 9]) * 2 / 3 + new[1] / 3, atol=1e-6)  # weights 1 - 1/3, 1/3
    assert np.allclose(long[0], media_fit(clip[:, 0]), atol=1e-6)
    capsys.readouterr()  # the run's TeaCache report
    for extra, message in [
        (["--overlap", "2"], "--overlap applies to --continue-from"),
        (["--continue-from", str(tmp_path / "clip.npy"), "--overlap", "9"], "overlap=9 leaves none of the 9 frames"),
        (["--continue-from", str(tmp_path / "clip.npy"), "--video", "x.mp4"], "drop --start-image / --video"),
    ]:
        assert gen(ckpts["InP"], tmp_path / "bad.npy", *extra) != 0
        assert message in one_line_error(capsys)
    assert gen(ckpts["T2V"], tmp_path / "bad.npy", "--continue-from", str(tmp_path / "clip.npy")) != 0
    assert "(and continuing a clip) need an InP checkpoint; this one is T2V" in one_line_error(capsys)


def media_fit(frame: torch.Tensor) -> np.ndarray:
    """A [3, H, W] 0..1 frame fitted to the 64x48 generation size, as IMAGE [H, W, 3] 0..1."""
    from easyanimate_core.frames import fit_image

    return ((fit_image(frame, 64, 48) + 1) / 2).permute(1, 2, 0).numpy()


def test_single_file_route_equals_folder(ckpts, tmp_path, capsys):
    folder = ckpts["T2V"]
    config = json.loads((folder / "transformer" / "config.json").read_text())
    single = write_single_file(tmp_path / "easyanimate_t2v.safetensors", config, dtype=torch.float32)
    assert gen(folder, tmp_path / "folder.npy") == 0
    for i, text_encoder in enumerate([folder / "text_encoder", folder]):  # a model folder, or a checkpoint root
        out = tmp_path / f"single{i}.npy"
        argv = ["generate", "--transformer", str(single), "--vae", str(folder / "vae"), "--text-encoder",
                str(text_encoder), "--prompt", PROMPT, "--negative-prompt", NEGATIVE, *SIZE, "--out", str(out), "-q"]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        assert np.array_equal(np.load(out), np.load(tmp_path / "folder.npy"))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--width", "65"], "nearest: 64"),
        (["--frames", "50"], "nearest: 49"),
        (["--scheduler", "Bogus"], "invalid choice"),
        (["--out", "clip.avi"], "must end with one of"),
        (["--start-image", "/no/such.png"], "image not found"),
        (["--compile", "inductor", "--memory-mode", "block_swap"], "cannot be combined with block swap"),
        (["--teacache", "-0.1"], "TeaCache threshold must be 0 (off) or positive"),
        (["--attention", "xformers"], "invalid choice"),
        (["--fp8-matmul"], "load the transformer with memory mode fp8"),
        (["--transformer", "t.safetensors"], "--model loads a whole checkpoint folder"),
        (["--resident-blocks", "3"], "--resident-blocks applies to --memory-mode block_swap, not none"),
        (["--device", "foo"], "--device 'foo' is not a device"),
        (["--seed", str(2**64)], "argument --seed: must be from 0 to 18446744073709551615"),  # was an overflow
        (["--seed", "-1"], "argument --seed: must be from 0 to"),
        (["--out", "README.md/clip.npy"], "README.md is a file, not a folder"),  # was found after sampling
        (["--out", "tests"], "must end with one of"),
        pytest.param(
            ["--device", "cuda"],
            "sees no CUDA GPU; use --device cpu",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present"),
        ),
    ],
)
def test_bad_arguments_fail_fast_in_one_line(capsys, extra, message):
    # --model points at a folder that does not exist: these checks happen before any loading
    assert main(["generate", "--model", "/no/such/model", *extra]) != 0
    assert message in one_line_error(capsys)


@pytest.mark.parametrize("option", ["--cfg", "--shift", "--teacache", "--denoise"])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999"])
def test_non_finite_numbers_are_refused_in_one_line(capsys, option, value):
    # inf/nan made an all-NaN video with exit status 0 (--cfg inf, --shift nan); argparse refuses them now
    assert main(["generate", "--model", "/no/such/model", f"{option}={value}"]) == 2
    assert one_line_error(capsys) == (
        f"python -m easyanimate_core generate: error: argument {option}: must be a finite number, got {value!r} "
        "(see --help)"
    )


def test_missing_attention_package_fails_fast(capsys, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)  # no optional package installed
    assert main(["generate", "--model", "/no/such/model", "--attention", "flash3"]) != 0
    assert "needs the Python package 'flash_attn_interface', which is not installed" in one_line_error(capsys)


def test_teacache_and_attention_equal_the_python_api(ckpts, api, tmp_path, capsys):
    out = tmp_path / "tea.npy"
    assert gen(ckpts["T2V"], out, "--steps", "8", "--teacache", "0.3", "--attention", "sdpa") == 0
    stats = {}
    expected = generate(api["T2V"], Request(**{**REQUEST, "steps": 8}), teacache=0.3, stats=stats).numpy()
    assert np.array_equal(np.load(out), expected)
    assert 0 < stats["teacache_skipped"] < 8  # some calls skipped, so the option really acted
    assert f"TeaCache skipped {stats['teacache_skipped']} of 8 transformer calls" in capsys.readouterr().err
    assert not np.array_equal(expected, generate(api["T2V"], Request(**{**REQUEST, "steps": 8})).numpy())


def test_missing_model_folder_lists_layout(capsys, tmp_path):
    assert main(["generate", "--model", str(tmp_path / "nothing"), *SIZE, "--out", str(tmp_path / "a.npy")]) == 1
    line = one_line_error(capsys)
    assert "checkpoint folder not found" in line and "transformer/" in line and "vae/" in line


def test_no_model_given(capsys, tmp_path):
    assert main(["generate", "--transformer", "x.safetensors", *SIZE, "--out", str(tmp_path / "a.npy")]) == 1
    assert "--vae and --text-encoder" in one_line_error(capsys)


def test_start_image_on_t2v_model(ckpts, tmp_path, start_png, capsys):
    assert gen(ckpts["T2V"], tmp_path / "a.npy", "--start-image", str(start_png)) == 1
    assert "need an InP checkpoint" in one_line_error(capsys)


def test_ctrl_c_exits_130(ckpts, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "generate", interrupted)
    assert gen(ckpts["T2V"], tmp_path / "a.npy") == 130
    assert one_line_error(capsys) == "interrupted"


def test_subprocess_error_is_one_line():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "easyanimate_core", "generate", "--width", "65"]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: width must be divisible by 16; nearest: 64"]


def test_tiny_writes_a_loadable_checkpoint(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["tiny", "--out", str(out), "--variant", "InP", "--layout", "diffusers"]) == 0
    assert str(out) in capsys.readouterr().out
    _, info, _ = load_checkpoint(out, dtype=torch.float32)
    assert (info.version, info.variant, info.layout) == ("V5.1", "InP", "diffusers")
    capsys.readouterr()
    assert main(["tiny", "--out", str(out)]) == 1  # never writes into a folder that holds something
    assert "not an empty folder" in one_line_error(capsys)
    big = tmp_path / "big-seed"  # seed * 1_000_003 passed 2**64 (an overflow from manual_seed) above ~1.8e13
    assert main(["tiny", "--out", str(big), "--seed", str(2**64 - 1)]) == 0, capsys.readouterr().err
    assert load_checkpoint(big, dtype=torch.float32)[1].variant == "InP"  # the default variant


def test_tiny_with_an_invalid_pair_writes_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "t1"
    assert main(["tiny", "--out", str(out), "--version", "V5", "--variant", "Control-Camera"]) == 1
    assert one_line_error(capsys) == "error: Control-Camera checkpoints exist for V5.1 only"
    assert not out.exists()  # nothing half-written blocks the retry
    assert main(["tiny", "--out", str(out), "--version", "V5", "--variant", "Control"]) == 0
    assert load_checkpoint(out, dtype=torch.float32)[1].variant == "Control"
    capsys.readouterr()

    def fail_midway(folder, **_):
        (Path(folder) / "text_encoder").mkdir(parents=True)
        raise OSError("disk full")

    monkeypatch.setattr("easyanimate_core.testing.write_tiny_checkpoint", fail_midway)
    assert main(["tiny", "--out", str(tmp_path / "t2")]) == 1  # any failure while writing: the folder is removed
    assert one_line_error(capsys) == "error: disk full" and not (tmp_path / "t2").exists()
    (tmp_path / "t3").mkdir()  # an empty folder the user made is kept, and left empty
    assert main(["tiny", "--out", str(tmp_path / "t3")]) == 1
    assert (tmp_path / "t3").is_dir() and not any((tmp_path / "t3").iterdir())


def test_demo_writes_its_files(ckpts, tmp_path, capsys):
    out = tmp_path / "output"
    shutil.copytree(ckpts["T2V"], out / ".tiny_models" / "V5.1-T2V")  # cached; InP is written by the demo
    argv = ["demo", "--out", str(out), "--width", "64", "--height", "48", "--frames", "5", "--steps", "2", "-q"]
    assert main(argv) == 0
    names = ["text_to_video.mp4", "text_to_video.webp", "image_to_video_start.png", "image_to_video_end.png",
             "image_to_video.mp4", "image_to_video.webp"]  # fmt: skip
    printed = capsys.readouterr().out
    for name in names:
        assert (out / name).is_file() and str(out / name) in printed
    assert frame_count(out / "image_to_video.mp4") == (5, (64, 48))
    assert load_checkpoint(out / ".tiny_models" / "V5.1-InP", dtype=torch.float32)[1].variant == "InP"


@pytest.mark.parametrize(
    "mode", [["--memory-mode", "model_offload"], ["--memory-mode", "block_swap", "--resident-blocks", "1"]]
)
def test_memory_modes_give_the_same_video(ckpts, api, tmp_path, mode):
    out = tmp_path / "clip.npy"
    assert gen(ckpts["T2V"], out, *mode) == 0
    assert np.array_equal(np.load(out), generate(api["T2V"], Request(**REQUEST)).numpy())


def test_fp8_memory_mode_stores_fp8_and_stays_close(ckpts, api, tmp_path):
    out = tmp_path / "clip.npy"
    assert gen(ckpts["T2V"], out, "--memory-mode", "fp8") == 0
    got, expected = np.load(out), generate(api["T2V"], Request(**REQUEST)).numpy()
    assert got.shape == expected.shape and 0 < np.abs(got - expected).mean() < 0.05  # fp8 rounding, not garbage


def test_text_encoder_fp8_flag_equals_the_python_api(ckpts, api, tmp_path):
    out = tmp_path / "fp8_text.npy"
    assert gen(ckpts["T2V"], out, "--text-encoder-fp8") == 0
    models = load_checkpoint(ckpts["T2V"], dtype=torch.float32, text_weight_dtype=torch.float8_e4m3fn)[0]
    expected = generate(models, Request(**REQUEST)).numpy()
    assert np.array_equal(np.load(out), expected)
    assert not np.array_equal(expected, generate(api["T2V"], Request(**REQUEST)).numpy())  # the flag acted


def test_write_video_replaces_the_file_only_when_complete(tmp_path, monkeypatch):
    """A Ctrl+C or an error mid-write keeps the earlier file; a writer that produced nothing (ffmpeg does not report
    a full disk or a denied write) is an OSError; no temporary file is left either way."""
    from easyanimate_core import media

    frames = torch.rand(3, 8, 10, 3)
    out = media.write_video(frames, tmp_path / "clip.npy")
    before = out.read_bytes()
    real = media._write

    def broken(x, path, suffix, fps):
        real(x, path, suffix, fps)
        path.write_bytes(path.read_bytes()[:20])  # half written
        raise KeyboardInterrupt

    monkeypatch.setattr(media, "_write", broken)
    with pytest.raises(KeyboardInterrupt):
        media.write_video(torch.zeros(3, 8, 10, 3), out)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["clip.npy"]
    monkeypatch.setattr(media, "_write", lambda x, path, suffix, fps: None)  # ffmpeg failed silently
    with pytest.raises(OSError, match="writer produced no file"):
        media.write_video(frames, tmp_path / "new.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.npy"]
    monkeypatch.setattr(media, "_write", real)
    for suffix in (".npy", ".webp", ".gif", ".mp4"):
        assert media.write_video(frames, tmp_path / f"again{suffix}").stat().st_size > 0
    assert np.allclose(np.load(tmp_path / "again.npy"), frames.numpy(), atol=1e-7)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def cli_args(argv):
    from easyanimate_core.__main__ import build_parser

    return build_parser().parse_args(argv)


def test_fp16_runs_the_vae_in_float32_and_auto_avoids_bf16_where_unsupported(ckpts, monkeypatch):
    """As the nodes do (the official fp16 recipe's upcast VAE); both routes of the CLI, and load_checkpoint."""
    folder = ckpts["T2V"]
    args = cli_args(["generate", "--model", str(folder)])
    models = cli.load_models(args, torch.float16, "cpu")
    assert next(models.vae.parameters()).dtype == torch.float32
    assert next(models.transformer.parameters()).dtype == torch.float16
    args = cli_args(["generate", "--transformer", str(folder / "transformer"), "--vae", str(folder / "vae"),
                     "--text-encoder", str(folder)])  # fmt: skip
    assert next(cli.load_models(args, torch.float16, "cpu").vae.parameters()).dtype == torch.float32
    bf16 = load_checkpoint(folder, dtype=torch.bfloat16)[0]
    assert next(bf16.vae.parameters()).dtype == torch.bfloat16  # other precisions run the VAE as they are
    assert cli.resolve_dtype(None, "cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100 or a 2080 Ti
    assert cli.resolve_dtype(None, "cuda") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert cli.resolve_dtype(None, "cuda") == torch.bfloat16
    assert cli.resolve_dtype("fp32", "cuda") == torch.float32


def test_out_of_memory_while_sampling_prints_the_advice(capsys, monkeypatch, tmp_path):
    """The sampler's advice (memory.raise_with_advice) is printed whole, then the start of torch's own message."""
    from easyanimate_core.memory import raise_with_advice

    torch_message = "CUDA out of memory. Tried to allocate 2.00 GiB. " + "x" * 300

    def load(*args, **kwargs):
        raise_with_advice(torch.OutOfMemoryError(torch_message), "out of memory on cuda:0 while sampling " + "y" * 300)

    monkeypatch.setattr(cli, "load_models", load)
    assert main(["generate", "--model", str(tmp_path), *SIZE, "--out", str(tmp_path / "a.npy")]) == 1
    line = one_line_error(capsys)
    assert line == f"error: out of memory on cuda:0 while sampling {'y' * 300} ({torch_message[:200]})"


@pytest.mark.parametrize("error", ["OutOfMemoryError", "AcceleratorError"])
def test_out_of_memory_is_a_one_line_error(error, capsys, monkeypatch, tmp_path):
    """CUDA's OutOfMemoryError, or ROCm's AcceleratorError saying so; any other error is not caught as one."""
    kind = getattr(torch, error, None)
    if kind is None:
        pytest.skip(f"torch.{error} is newer than this torch")

    def load(*args, **kwargs):
        raise kind("HIP out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(cli, "load_models", load)
    assert main(["generate", "--model", str(tmp_path), *SIZE, "--out", str(tmp_path / "a.npy")]) == 1
    assert one_line_error(capsys).startswith("error: out of memory (HIP out of memory. Tried to allocate 20.00 GiB)")
    if kind is torch.OutOfMemoryError:
        return
    monkeypatch.setattr(cli, "load_models", lambda *a, **k: (_ for _ in ()).throw(kind("device-side assert")))
    with pytest.raises(kind, match="device-side assert"):  # an accelerator error that is not out of memory
        main(["generate", "--model", str(tmp_path), *SIZE, "--out", str(tmp_path / "a.npy")])
