"""The command line's commands (``generate``, ``tiny``, ``demo``); parsing and exit codes are in ``__main__``.

Input files are read and sizes checked before any model is loaded, so mistakes fail fast.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import media
from .builders import check_continuation
from .checkpoint import check_compatible, load_checkpoint
from .conditioning import check_size
from .frames import join_clips
from .handles import pick_dtype, vae_dtype_for
from .memory import MemoryPolicy
from .pipeline import NO_OFFLOAD, Models, Request, decode, generate
from .runner import check_device, check_inductor_device, check_speed_options
from .schedulers import read_scheduler_config

log = logging.getLogger("EasyAnimate")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULTS = Request()  # the official settings: 672x384, 49 frames, 50 steps, cfg 6, seed 43 (scheduler: per version)
# The negative prompt of EasyAnimate's predict scripts.
NEGATIVE_PROMPT = "Twisted body, limb deformities, text captions, comic, static, ugly, error, messy code."


class ProgressBar:
    """``label [#####.....] step/total  seconds`` redrawn in place on stderr; a newline when done."""

    def __init__(self, label: str, enabled: bool = True, width: int = 30):
        self.label, self.enabled, self.width, self.start = label, enabled, width, time.perf_counter()
        self.open = False

    def __call__(self, step: int, total: int, *_) -> None:
        if not self.enabled:
            return
        filled = self.width * step // max(total, 1)
        line = f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {step}/{total} "
        sys.stderr.write(line + f"{time.perf_counter() - self.start:.1f}s")
        self.open = step < total
        sys.stderr.write("" if self.open else "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.open:
            sys.stderr.write("\n")
            self.open = False


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_device(name: str | None) -> str:
    """``--device`` (default: cuda if available, else cpu), checked before anything loads."""
    if name is None:
        return default_device()
    check_device(name, "--device")
    return name


def resolve_dtype(name: str | None, device: str) -> torch.dtype:
    """--dtype, or the nodes' auto: float32 on the CPU, bf16 on a GPU that supports it, else fp16."""
    return DTYPES[name] if name else pick_dtype("auto", torch.device(device))


# --- models -----------------------------------------------------------------------------------------------


def _text_encoder_source(folder: Path):
    """A checkpoint-like root (text_encoder/ + tokenizer/ ...) or one model folder holding its tokenizer."""
    if (folder / "text_encoder").is_dir():
        return folder
    if (folder / "config.json").is_file():
        tokenizer = folder.parent / "tokenizer" if (folder.parent / "tokenizer").is_dir() else folder
        return {"text_encoder": folder, "tokenizer": tokenizer}
    return folder  # load_text_encoder explains the expected layout


def load_models(args: argparse.Namespace, dtype: torch.dtype, device: str, memory: MemoryPolicy = NO_OFFLOAD) -> Models:
    """A checkpoint folder (``--model``) or single files (``--transformer --vae --text-encoder``); on ``device``
    unless ``memory`` offloads (then ``generate`` places each model while it works)."""
    text_fp8 = torch.float8_e4m3fn if getattr(args, "text_encoder_fp8", False) else None
    if args.model:
        models = load_checkpoint(args.model, dtype=dtype, weight_dtype=memory.weight_dtype, text_weight_dtype=text_fp8)[
            0
        ]
    else:
        from .loading import load_transformer, load_vae
        from .text_loading import load_text_encoder

        missing = [f"--{n}" for n in ("transformer", "vae", "text-encoder") if not getattr(args, n.replace("-", "_"))]
        if missing:
            raise ValueError(f"give --model FOLDER, or --transformer FILE with {' and '.join(missing)}")
        transformer, _ = load_transformer(args.transformer, dtype=dtype, weight_dtype=memory.weight_dtype)
        vae, _ = load_vae(args.vae, dtype=vae_dtype_for(dtype))  # float32 with fp16, as load_checkpoint
        text_folder = Path(args.text_encoder)
        text_encoder = load_text_encoder(_text_encoder_source(text_folder), dtype=dtype, weight_dtype=text_fp8)
        check_compatible(transformer.config, vae, text_encoder)
        scheduler = read_scheduler_config(text_folder / "scheduler")  # present when given a checkpoint root
        models = Models(transformer, vae, text_encoder, scheduler)
    return models if memory.offloads else to_device(models, device)


def to_device(models: Models, device: str) -> Models:
    models.transformer.to(device)
    models.vae.to(device)
    for module in models.text_encoder.modules():
        module.to(device)
    return models


def render(
    models: Models,
    req: Request,
    *,
    device: str,
    dtype: torch.dtype,
    quiet: bool = False,
    memory: MemoryPolicy = NO_OFFLOAD,
    speed: dict | None = None,
) -> torch.Tensor:
    """Frames [T, H, W, 3] in 0..1 of ``req``, with progress bars on stderr unless ``quiet``.

    ``speed``: generate()'s attention / compile / teacache / fp8_matmul options; TeaCache's skips are reported on stderr."""
    bar = ProgressBar("sampling", not quiet)
    place = dict(memory=memory, offload="cpu")
    speed = dict(speed or {})
    stats: dict = {}
    try:
        latents = generate(
            models, req, device=device, dtype=dtype, progress=bar, output="latents", stats=stats, **speed, **place
        )
        if "teacache_note" in stats:
            print(stats["teacache_note"], file=sys.stderr)
        elif speed.get("teacache"):
            calls = stats["transformer_calls"] + stats["teacache_skipped"]
            print(f"TeaCache skipped {stats['teacache_skipped']} of {calls} transformer calls", file=sys.stderr)
        bar = ProgressBar("decoding", not quiet)
        return decode(models.vae, latents, progress=bar, device=device, **place)
    finally:
        bar.close()


# --- generate ---------------------------------------------------------------------------------------------


def continued_clip(args: argparse.Namespace) -> torch.Tensor | None:
    """``--continue-from``'s video [3, T, H, W] 0..1 (None without it), checked against --overlap and --frames."""
    if args.overlap is not None and not args.continue_from:
        raise ValueError("--overlap applies to --continue-from")
    if not args.continue_from:
        return None
    if args.start_image or args.video:
        raise ValueError("--continue-from begins the video with the clip's last frames: drop --start-image / --video")
    clip = media.read_video(args.continue_from)
    check_continuation(clip.shape[1], overlap_of(args), args.frames, bool(args.end_image))
    return clip


def overlap_of(args: argparse.Namespace) -> int:
    return 4 if args.overlap is None else args.overlap  # EasyAnimate's overlap_video_length


def request_from_args(args: argparse.Namespace, device: str, clip: torch.Tensor | None = None) -> Request:
    """Validate the arguments and read the input files (before any model is loaded: fast failure; cmd_generate
    has checked the sizes). ``clip``: the video to continue (continued_clip), whose last frames start the new one."""
    media.check_output(args.out)
    if args.denoise is not None and not 0 < args.denoise <= 1:
        raise ValueError(f"--denoise must be in (0, 1], got {args.denoise}")
    if args.video and (args.denoise or 0.7) >= 1:
        raise ValueError("--video needs --denoise below 1 (how much of the video to regenerate, e.g. 0.7)")
    if args.denoise is not None and args.denoise < 1 and not args.video:
        raise ValueError("--denoise below 1 needs an input --video")

    def on_device(t):
        return None if t is None else t.to(device)  # the engine conditions on the inputs where they are

    def read(path: str, what: str) -> torch.Tensor:
        video = media.read_video(path, args.frames)
        if video.shape[1] < args.frames:  # said now, not after the models have loaded
            raise ValueError(f"the {what} {path} has {video.shape[1]} frames but --frames is {args.frames}; lower it")
        return video

    return Request(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        width=args.width,
        height=args.height,
        frames=args.frames,
        steps=args.steps,
        cfg=args.cfg,
        seed=args.seed,
        scheduler=args.scheduler,  # None: the version's default (generate)
        shift=args.shift,
        denoise=(args.denoise or 0.7) if args.video else 1.0,
        start_image=on_device(
            media.read_image(args.start_image)
            if args.start_image
            else (clip[:, clip.shape[1] - overlap_of(args) :] if clip is not None else None)
        ),
        end_image=on_device(media.read_image(args.end_image) if args.end_image else None),
        video=on_device(read(args.video, "input video") if args.video else None),
        control_video=on_device(read(args.control_video, "control video") if args.control_video else None),
    )


def cmd_generate(args: argparse.Namespace) -> int:
    if args.model and (args.transformer or args.vae or args.text_encoder):
        raise ValueError(
            "--model loads a whole checkpoint folder, --transformer/--vae/--text-encoder single parts instead: "
            "give one or the other"
        )
    if args.resident_blocks and args.memory_mode != "block_swap":
        raise ValueError(f"--resident-blocks applies to --memory-mode block_swap, not {args.memory_mode}")
    device = pick_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    check_size(args.width, args.height, args.frames)
    clip = continued_clip(args)
    req = request_from_args(args, device, clip)
    memory = MemoryPolicy(args.memory_mode, resident_blocks=args.resident_blocks)
    speed = dict(attention=args.attention, compile=args.compile, teacache=args.teacache, fp8_matmul=args.fp8_matmul)
    check_speed_options(memory, **speed)  # before loading anything
    if args.compile == "inductor":
        check_inductor_device(device)
    models = load_models(args, dtype, device, memory)
    frames = render(models, req, device=device, dtype=dtype, quiet=args.quiet, memory=memory, speed=speed)
    if clip is not None:  # the continued clip, then the new one: one long video
        frames = join_clips(clip.permute(1, 2, 3, 0), frames, overlap_of(args))
    print(media.write_video(frames, args.out))
    return 0


# --- tiny -------------------------------------------------------------------------------------------------


def cmd_tiny(args: argparse.Namespace) -> int:
    from .testing import check_version_variant, write_tiny_checkpoint

    out = Path(args.out)
    check_version_variant(args.version, args.variant)  # before anything is written
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; choose a new one")
    created = not out.exists()
    try:
        write_tiny_checkpoint(out, version=args.version, variant=args.variant, layout=args.layout, seed=args.seed)
    except BaseException:  # a failed write leaves nothing that would block the retry (the folder was new or empty)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise
    print(f"tiny EasyAnimate {args.version} {args.variant} checkpoint ({args.layout} layout, random weights): {out}")
    return 0


# --- demo -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoContext:
    """What every demo step gets: where to write, the cache of tiny checkpoints, the generation settings."""

    out: Path
    cache: Path
    settings: Request
    device: str
    dtype: torch.dtype
    quiet: bool

    def checkpoint(self, version: str, variant: str) -> Path:
        """A tiny checkpoint from the cache, written on first use (atomically, so a crash leaves no half)."""
        from .testing import write_tiny_checkpoint

        folder = self.cache / f"{version}-{variant}"
        if not folder.is_dir():
            partial = folder.with_name(folder.name + ".partial")
            if partial.exists():
                shutil.rmtree(partial)
            write_tiny_checkpoint(partial, version=version, variant=variant)
            partial.rename(folder)
        return folder

    def generate(self, folder: Path, req: Request, stem: str, formats=(".mp4", ".webp")) -> list[Path]:
        models = to_device(load_checkpoint(folder, dtype=self.dtype)[0], self.device)
        frames = render(models, req, device=self.device, dtype=self.dtype, quiet=self.quiet)
        return [media.write_video(frames, self.out / f"{stem}{suffix}") for suffix in formats]


def demo_text_to_video(ctx: DemoContext) -> list[Path]:
    folder = ctx.checkpoint("V5.1", "T2V")
    req = replace(ctx.settings, prompt="A red fox runs through a snowy forest at sunrise, cinematic.")
    return ctx.generate(folder, req, "text_to_video")


def demo_image_to_video(ctx: DemoContext) -> list[Path]:
    folder = ctx.checkpoint("V5.1", "InP")
    s = ctx.settings
    start, end = media.demo_picture(s.width, s.height, 0.0), media.demo_picture(s.width, s.height, 1.0)
    paths = [ctx.out / "image_to_video_start.png", ctx.out / "image_to_video_end.png"]
    start.save(paths[0])
    end.save(paths[1])
    req = replace(
        s,
        prompt="A red box slides across green hills under a setting sun.",
        start_image=media.read_image(paths[0]).to(ctx.device),
        end_image=media.read_image(paths[1]).to(ctx.device),
    )
    return paths + ctx.generate(folder, req, "image_to_video")


# The demo's stages, in order; each writes its files into ctx.out and returns their paths.
DEMO_STEPS: list[tuple[str, Callable[[DemoContext], list[Path]]]] = [
    ("text-to-video (tiny V5.1 T2V)", demo_text_to_video),
    ("image-to-video (tiny V5.1 InP, start and end image)", demo_image_to_video),
]
DEMO_SIZE = dict(width=256, height=160, frames=17, steps=10)


def cmd_demo(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    out = Path(args.out)
    size = dict(width=args.width, height=args.height, frames=args.frames, steps=args.steps, seed=args.seed)
    settings = Request(negative_prompt=NEGATIVE_PROMPT, **size)
    check_size(settings.width, settings.height, settings.frames)
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out, out / ".tiny_models", settings, device, resolve_dtype(args.dtype, device), args.quiet)
    start = time.perf_counter()
    for title, step in DEMO_STEPS:
        print(f"{title}:", flush=True)
        for path in step(ctx):
            print(f"  {path}", flush=True)
    print(f"done in {time.perf_counter() - start:.0f}s; tiny checkpoints cached in {ctx.cache}.")
    print("Their weights are random: the clips show the pipeline at work, not the prompt. For real videos use")
    print("`python -m easyanimate_core generate --model <EasyAnimate checkpoint folder> --prompt ...`.")
    return 0
