"""``python -m easyanimate_core generate | tiny | demo``: argument parsing and exit codes.

``main(argv)`` returns the exit status instead of exiting, so tests run it in-process. Every input error
(argparse's, the engine's ValueError, OSError for files) is one line on stderr, no traceback, with
status 2 (arguments) or 1 (engine); Ctrl-C exits 130. The commands themselves are in ``cli.py``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable

try:  # torch and the engine take seconds to import: a Ctrl-C meanwhile is still a one-line exit 130
    from .attention import BACKENDS
    from .cli import DEFAULTS, DEMO_SIZE, DTYPES, NEGATIVE_PROMPT, cmd_demo, cmd_generate, cmd_tiny
    from .configs import Variant
    from .memory import MEMORY_MODES, is_out_of_memory
    from .runner import COMPILE_BACKENDS
    from .sampling import Interrupted
    from .schedulers import SCHEDULER_NAMES
    from .teacache import DEFAULT_THRESHOLD
except KeyboardInterrupt:
    sys.stderr.write("interrupted\n")
    raise SystemExit(130) from None

log = logging.getLogger("EasyAnimate")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def finite_float(text: str) -> float:
    """argparse type: a float that is not inf or nan (which would make an all-NaN video)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def seed_int(text: str) -> int:
    """argparse type: a seed torch's generators take, 0 to 2**64 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"must be from 0 to {2**64 - 1}, got {text}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="cuda, cuda:1, cpu, ... (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=list(DTYPES), help="compute dtype (default: fp32 on cpu, bf16 on cuda)")
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars (errors, warnings, the TeaCache report and the output path still print)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log what is loaded")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m easyanimate_core", description="EasyAnimate V5.1/V5 video generation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{generate,tiny,demo}")

    g = sub.add_parser("generate", help="generate a video from a prompt (and images or a video)")
    src = g.add_argument_group("models: --model FOLDER, or --transformer FILE --vae PATH --text-encoder FOLDER")
    src.add_argument("--model", help="EasyAnimate checkpoint folder (original or diffusers layout)")
    src.add_argument("--transformer", help="single transformer .safetensors file")
    src.add_argument("--vae", help="VAE .safetensors file or vae/ folder")
    src.add_argument("--text-encoder", help="text encoder folder (or a checkpoint folder holding text_encoder/)")
    g.add_argument("--prompt", default="", help="what to show")
    g.add_argument("--negative-prompt", default=NEGATIVE_PROMPT, help="what to avoid")
    g.add_argument("--width", type=int, default=DEFAULTS.width, help="multiple of 16 (default: %(default)s)")
    g.add_argument("--height", type=int, default=DEFAULTS.height, help="multiple of 16 (default: %(default)s)")
    g.add_argument("--frames", type=int, default=DEFAULTS.frames, help="4k+1 (default: %(default)s)")
    g.add_argument("--steps", type=int, default=DEFAULTS.steps, help="(default: %(default)s)")
    g.add_argument("--cfg", type=finite_float, default=DEFAULTS.cfg, help="guidance scale (default: %(default)s)")
    g.add_argument("--seed", type=seed_int, default=DEFAULTS.seed, help="(default: %(default)s)")
    g.add_argument("--scheduler", choices=SCHEDULER_NAMES, help="default: Flow for V5.1, DDIM for V5")
    g.add_argument("--shift", type=finite_float, help="Flow timestep shift (default: the checkpoint's)")
    g.add_argument(
        "--memory-mode",
        choices=list(MEMORY_MODES),
        default="none",
        help="none: all models stay on the device; model_offload: each model on it only while it works; fp8: "
        "fp8 transformer weights + offload; block_swap: stream the blocks past --resident-blocks (default: none)",
    )
    g.add_argument("--resident-blocks", type=int, default=0, help="block_swap: blocks kept on the device (default 0)")
    g.add_argument("--text-encoder-fp8", action="store_true", help="store the text encoder's linear weights in fp8")
    g.add_argument("--attention", choices=list(BACKENDS), default="sdpa", help="attention backend (default: sdpa)")
    g.add_argument("--compile", choices=COMPILE_BACKENDS, help="torch.compile the transformer blocks with this backend")
    g.add_argument(
        "--teacache",
        type=finite_float,
        default=DEFAULT_THRESHOLD,
        help="TeaCache threshold (default: the official 0.08; 0 = off, exact)",
    )
    g.add_argument(
        "--fp8-matmul",
        action="store_true",
        help="multiply the fp8 weights in fp8 (needs --memory-mode fp8 and an RTX 40xx/L4/L40/H100-class GPU)",
    )
    g.add_argument("--start-image", help="image file for the first frame (InP checkpoints)")
    g.add_argument("--end-image", help="image file for the last frame (InP checkpoints)")
    g.add_argument("--video", help="input video (file, folder of frames, or .npy [T,H,W,3] 0..1)")
    g.add_argument("--denoise", type=finite_float, help="with --video: how much to regenerate, in (0, 1] (default 0.7)")
    g.add_argument("--control-video", help="control video (Control checkpoints), like --video")
    g.add_argument(
        "--continue-from",
        help="a video to continue (InP checkpoints): the new clip begins with its last --overlap frames, and --out "
        "gets the two joined (a long video; like --video)",
    )
    g.add_argument("--overlap", type=int, help="with --continue-from: frames the clips share (default 4, as official)")
    g.add_argument("--out", default="output/easyanimate.mp4", help=".mp4, .webp, .gif or .npy (default: %(default)s)")
    _common(g)
    g.set_defaults(func=cmd_generate)

    t = sub.add_parser("tiny", help="write a tiny random-weight checkpoint (for trying things out and tests)")
    t.add_argument("--out", required=True, help="a new folder")
    t.add_argument("--version", choices=["V5.1", "V5"], default="V5.1")
    t.add_argument("--variant", choices=[v.value for v in Variant], default="InP")
    t.add_argument("--layout", choices=["original", "diffusers"], default="original")
    t.add_argument("--seed", type=seed_int, default=0)
    t.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    t.set_defaults(func=cmd_tiny)

    d = sub.add_parser("demo", help="text- and image-to-video clips from tiny checkpoints into --out")
    d.add_argument("--out", default="output", help="folder (default: %(default)s)")
    for name, value in DEMO_SIZE.items():
        d.add_argument(f"--{name}", type=int, default=value, help="(default: %(default)s)")
    d.add_argument("--seed", type=seed_int, default=DEFAULTS.seed)
    _common(d)
    d.set_defaults(func=cmd_demo)
    return parser


def _quiet_transformers(quiet: bool) -> Callable[[], None]:
    """Silence transformers' "Loading weights" bars and warnings (ours say the same); returns the undo."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    if quiet:
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()

    def undo() -> None:
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
        hf_logging.set_verbosity(verbosity)

    return undo


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status (0 ok, 1 engine error, 2 bad argument, 130 Ctrl-C)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a bad argument already reported in one line
        return e.code if isinstance(e.code, int) else 2
    restore_transformers = _quiet_transformers(not args.verbose)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except (ValueError, OSError, Interrupted) as e:  # OSError: files not found, unreadable, unwritable
        sys.stderr.write(f"error: {_one_line(e)}\n")
        return 1
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        advice = getattr(e, "advice", None)  # memory.raise_with_advice's, else the generic one
        detail = _one_line(e.__cause__ if advice else e)[:200]
        message = f"{advice} ({detail})" if advice else f"out of memory ({detail}); try a smaller size or fewer frames"
        sys.stderr.write(f"error: {message}\n")
        return 1
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        restore_transformers()


if __name__ == "__main__":
    sys.exit(main())
