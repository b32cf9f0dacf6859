"""LoRA files (EasyAnimate/kohya, diffusers/PEFT, ComfyUI-style), stacked with strengths, applied as side branches.

A LoRA is never merged into the stored weights. While sampling, each targeted ``ops.Linear``/``ops.Conv2d``
carries ``(down, up, scale)`` branches and computes ``y = base(x) + sum(scale * up(down(x)))`` in the compute
dtype (so fp8-stored weights work), and :func:`applied` detaches them in ``finally``: the model's weights are
bit-identical after any run, error or interrupt. ``scale = strength * alpha / rank`` (alpha defaults to rank).

Key formats (``<m>`` is a module name such as ``transformer_blocks.0.attn1.to_q``):
- kohya, as EasyAnimate's ``train_lora.py`` writes it: ``lora_unet__<m with dots as _>.lora_down.weight`` /
  ``.lora_up.weight`` / ``.alpha`` (its prefix is ``lora_unet`` + ``.`` + the root's empty name, hence ``__``);
  the usual single ``_`` works too, and ``lora_te*`` (text encoder) keys are reported and ignored.
- diffusers/PEFT: ``transformer.<m>.lora_A.weight`` / ``.lora_B.weight`` (optional ``.alpha``); without alpha
  tensors the scale is PEFT's (``lora_alpha`` / r, rsLoRA, ``alpha_pattern``) from the file's
  ``lora_adapter_metadata`` or an ``adapter_config.json`` beside it, else 1.
- ComfyUI-style: ``diffusion_model.<m>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``.
Module names may be ours (original EasyAnimate) or diffusers' (``attn1.add_q_proj`` is our ``attn2.to_q``,
see ``keys.py``), dotted or flattened. Only plain LoRA is read (on linear layers, and the patch-embedding conv as
LoCon writes it); a file with DoRA, LoHa, LoKr, Tucker (``lora_mid``), OFT, GLoRA, bias or full-difference weights
is refused by name, since leaving those out would change the result.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from . import keys, ops
from .loading import read_state_dict

if TYPE_CHECKING:
    from .handles import TransformerHandle

log = logging.getLogger("EasyAnimate")

# The tail of a key after the module name -> which tensor of the pair it is.
_PARTS = {
    "lora_down.weight": "down",  # kohya, ComfyUI
    "lora_up.weight": "up",
    "lora_A.weight": "down",  # PEFT, diffusers
    "lora_B.weight": "up",
    "lora_A.default.weight": "down",  # PEFT state dicts that kept the adapter name
    "lora_B.default.weight": "up",
    "lora.down.weight": "down",  # older diffusers attention-processor LoRAs
    "lora.up.weight": "up",
    "alpha": "alpha",
}
_KEY = re.compile(r"^(?P<module>.+?)\.(?P<part>" + "|".join(map(re.escape, _PARTS)) + r")$")
# What trainers and hosts put in front of the transformer's module names (kohya's flattened names included).
_TRANSFORMER_PREFIX = re.compile(
    r"^(?:lora_unet_+|lora_transformer_+|base_model\.model\.|model\.diffusion_model\.|diffusion_model\.|"
    r"transformer\.|unet\.)"
)
_BLOCK = re.compile(r"^transformer_blocks[._](\d+)(?:[._]|$)")  # dotted or kohya-flattened
# Within a block (our names and diffusers', dotted or flattened): the text stream of a multi-modal block.
_TEXT_STREAM = re.compile(r"^(?:attn2|txt_ff|attn1[._](?:add_[qkv]_proj|to_add_out))(?:[._]|$)")
# The text projections: V5's plain ``text_proj`` / ``text_proj_t5``, V5.1's ``text_proj.1`` (after an RMSNorm).
_TEXT_PROJ = re.compile(r"^text_proj(?:_t5)?(?:[._]1)?$")
_TEXT_ENCODER_PREFIX = re.compile(r"^(?:lora_te\d*_|text_encoders?(?:_\d)?\.|te\d?\.)")
# Keys of adapters that are not plain LoRA (LyCORIS, PEFT, ComfyUI's key set). Applying only their lora_down/up
# pairs, or nothing, would give another result than the trainer's, so such files are refused by name.
_OTHER_ADAPTERS = (
    (re.compile(r"\.(?:dora_scale|lora_magnitude_vector)(?:\.|$)"), "DoRA"),
    (re.compile(r"\.hada_"), "LoHa"),
    (re.compile(r"\.lokr_"), "LoKr"),
    (re.compile(r"\.lora_mid\.weight$"), "LoCon with a Tucker middle (lora_mid)"),
    (re.compile(r"\.b?oft_"), "OFT"),
    (re.compile(r"\.[ab][12]\.weight$"), "GLoRA"),
    (re.compile(r"\.(?:diff|diff_b|set_weight|w_norm|b_norm)$"), "full weight or bias difference"),
    (re.compile(r"\.(?:lora_B|lora_up)(?:\.default)?\.bias$"), "LoRA with biases"),
)

LoraStack = tuple[tuple["LoadedLora", float], ...]  # TransformerHandle.loras: (lora, strength) pairs


@dataclass(frozen=True, eq=False)
class LoraPatch:
    """The low-rank update of one layer: ``delta W = alpha / rank * up @ down``.

    Linear: ``down`` [r, in], ``up`` [out, r]. Conv2d: ``down`` [r, in, kh, kw], ``up`` [out, r, 1, 1].
    """

    module: str
    down: torch.Tensor
    up: torch.Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        """The branch's factor at strength 1."""
        return self.alpha / self.rank


class LoadedLora:
    """A LoRA file resolved against a transformer: one :class:`LoraPatch` per targeted layer.

    ``unmatched`` lists the file's keys that target nothing here. Tensors converted for a (device, dtype)
    are kept (the ``max_prepared`` most recent pairs), so consecutive runs convert nothing;
    ``conversions`` counts the conversions made.
    """

    def __init__(
        self, name: str, patches: dict[str, LoraPatch], unmatched: Iterable[str] = (), max_prepared: int = 2
    ) -> None:
        self.name = name
        self.patches = dict(patches)
        self.unmatched = tuple(unmatched)
        self.max_prepared = max_prepared
        self.conversions = 0
        self._prepared: OrderedDict[tuple[torch.device, torch.dtype], dict] = OrderedDict()

    def __repr__(self) -> str:
        return f"LoadedLora({self.name!r}, {len(self.patches)} layers, {len(self.unmatched)} unmatched keys)"

    def prepared(self, device: torch.device | str, dtype: torch.dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{module: (down, up)}`` on ``device`` in ``dtype``, converted once per (device, dtype)."""
        key = (torch.device(device), dtype)
        if key in self._prepared:
            self._prepared.move_to_end(key)
            return self._prepared[key]
        tensors = {n: (p.down.to(key[0], dtype), p.up.to(key[0], dtype)) for n, p in self.patches.items()}
        self.conversions += 1
        self._prepared[key] = tensors
        while len(self._prepared) > self.max_prepared:
            self._prepared.popitem(last=False)
        return tensors


def lora_targets(model: nn.Module) -> dict[str, nn.Module]:
    """The layers a LoRA may patch, by module name: those that declare ``lora_branches`` (``ops.Linear``, ``ops.Conv2d``).

    Checked by the attribute rather than the class, so a model built by another import of this package
    (tests load the pack twice) works the same.
    """
    return {n: m for n, m in model.named_modules() if isinstance(getattr(type(m), "lora_branches", None), tuple)}


def module_aliases(model: nn.Module) -> dict[str, str]:
    """Every accepted spelling of a target layer's name -> our name: ours and diffusers', dotted and flattened.

    Kohya flattens dots into underscores, which cannot be undone by rule, so flattened names are looked up
    in this table built from the model's actual modules.
    """
    names = list(lora_targets(model))
    diffusers = keys.transformer_to_diffusers({f"{n}.weight": n for n in names})  # diffusers key -> our name
    spellings = [(n, n) for n in names] + [(k.removesuffix(".weight"), n) for k, n in diffusers.items()]
    aliases: dict[str, str] = {}
    ambiguous = set()
    for spelling, name in spellings:
        for alias in (spelling, spelling.replace(".", "_")):
            if aliases.setdefault(alias, name) != name:
                ambiguous.add(alias)
    return {a: n for a, n in aliases.items() if a not in ambiguous}


def _fit(lora_name: str, target: str, module: nn.Module, down: torch.Tensor, up: torch.Tensor):
    """``(down, up)`` in the layer's layout, or ValueError naming the layer and both shapes."""
    weight = tuple(module.weight.shape)  # Linear [out, in]; Conv2d [out, in, kh, kw]
    conv = len(weight) == 4
    if not conv and down.ndim == 4 and down.shape[2:] == (1, 1):  # a linear layer's LoRA saved as 1x1 convs
        down, up = down.flatten(1), up.flatten(1)
    if conv and up.ndim == 2:
        up = up[:, :, None, None]
    rank = down.shape[0]
    want_down, want_up = (rank, *weight[1:]), (weight[0], rank) + ((1, 1) if conv else ())
    if tuple(down.shape) != want_down or tuple(up.shape) != want_up:
        raise ValueError(
            f"LoRA {lora_name!r} does not fit this transformer: layer {target!r} has weight {list(weight)}, so a "
            f"rank-{rank} LoRA needs down {list(want_down)} and up {list(want_up)}, but the file has down "
            f"{list(down.shape)} and up {list(up.shape)}; it was made for a model of another size or variant"
        )
    if conv and (module.groups != 1 or module.padding_mode != "zeros"):
        raise ValueError(f"LoRA {lora_name!r}: layer {target!r} is a grouped or padded conv, which LoRA can't patch")
    return down, up


def _check_model(name: str, unmatched: list[str], patched: Iterable[str], targets: Iterable[str]) -> None:
    """ValueError when the LoRA names layers that show it was made for another EasyAnimate model.

    Blocks past this model's last (a deeper model), the text stream of a block that is single-stream here or the
    reverse (the V5.1 7B's blocks from 18 on are single-stream, the 12B's are not), or the other version's text
    projections (V5's ``text_proj`` and T5 ``text_proj_t5``, V5.1's ``text_proj.1`` after an RMSNorm). Other
    unmatched keys (layers this code does not patch) stay a warning in :func:`parse_lora`.
    """
    have = 1 + max((int(m[1]) for t in targets if (m := _BLOCK.match(t))), default=-1)
    modules = [_TRANSFORMER_PREFIX.sub("", m["module"], count=1) for k in unmatched if (m := _KEY.match(k))]
    wanted = 1 + max((int(m[1]) for mod in modules if (m := _BLOCK.match(mod))), default=-1)
    if wanted > have:
        raise ValueError(
            f"LoRA {name!r}: the LoRA targets {wanted} transformer blocks but this model has {have}: it was made "
            "for another model size"
        )
    for mod in modules:
        if (m := _BLOCK.match(mod)) and _TEXT_STREAM.match(mod[m.end() :]):
            raise ValueError(
                f"LoRA {name!r} patches the text stream of transformer block {m[1]} ({mod!r}), which is single-stream "
                "in this model: it was made for another model size (the V5.1 7B's blocks from 18 on are "
                "single-stream, the 12B's are not)"
            )
        if _TEXT_PROJ.match(mod):  # unmatched, so this model has no projection of that name
            raise ValueError(
                f"LoRA {name!r} patches the text projection {mod!r}, which this transformer does not have: it was "
                "made for another EasyAnimate version (V5 has text_proj and the T5 text_proj_t5, V5.1 text_proj.1)"
            )
    blocks: dict[int, bool] = {}  # patched block -> whether its text stream is patched
    for t in patched:
        if m := _BLOCK.match(t):
            blocks[int(m[1])] = blocks.get(int(m[1]), False) or bool(_TEXT_STREAM.match(t[m.end() :]))
    last_text = max((i for i, text in blocks.items() if text), default=None)
    later = [i for i in blocks if last_text is not None and i > last_text]
    if later and all(blocks[i] for i in blocks if i <= last_text):
        if f"transformer_blocks.{max(later)}.attn2.to_q" in targets:
            raise ValueError(
                f"LoRA {name!r} patches the text stream (attn2, txt_ff) of every block it patches up to block "
                f"{last_text} and of none of blocks {min(later)}-{max(later)}, which are multi-modal in this model: "
                "it was made for a model whose later blocks are single-stream (the V5.1 7B), not for this one"
            )


@dataclass(frozen=True)
class PeftScaling:
    """PEFT's ``LoraConfig`` numbers that set each layer's scale where the file has no ``.alpha`` tensor: diffusers
    writes them into the safetensors metadata (``lora_adapter_metadata``), PEFT into ``adapter_config.json`` beside
    ``adapter_model.safetensors``. Scale = alpha / r, or alpha / sqrt(r) with rsLoRA; ``alpha_pattern`` entries
    override alpha for the modules they name (PEFT's rule: the pattern matches the end of the module's name)."""

    lora_alpha: float
    alpha_pattern: tuple[tuple[str, float], ...] = ()
    use_rslora: bool = False

    @classmethod
    def from_config(cls, config: dict) -> PeftScaling | None:
        config = {k.removeprefix("transformer."): v for k, v in config.items()}
        if config.get("lora_alpha") is None:
            return None
        patterns = tuple((str(k), float(v)) for k, v in (config.get("alpha_pattern") or {}).items())
        return cls(float(config["lora_alpha"]), patterns, bool(config.get("use_rslora")))

    def alpha(self, module: str, rank: int) -> float:
        """The alpha that gives PEFT's scale for ``module`` (a file's module name) as ``alpha / rank``."""
        alpha = self.lora_alpha
        for pattern, value in self.alpha_pattern:
            if re.match(rf"(.*\.)?(?:{pattern})$", module):
                alpha = value
                break
        return alpha * rank**0.5 if self.use_rslora else alpha


def parse_lora(
    sd: dict[str, torch.Tensor], model: nn.Module, name: str = "lora", peft: PeftScaling | None = None
) -> LoadedLora:
    """Resolve a LoRA state dict (any supported format) against ``model``; unmatched keys are logged. ``peft``
    scales the layers that have no ``.alpha`` tensor (else their alpha is their rank: scale 1)."""
    aliases, targets = module_aliases(model), lora_targets(model)
    parts: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}  # our module -> down/up/alpha -> (key, tensor)
    unmatched, text_encoder = [], []
    for key, tensor in sd.items():
        m = _KEY.match(key)
        if _TEXT_ENCODER_PREFIX.match(key):
            text_encoder.append(key)
            continue
        for pattern, kind in _OTHER_ADAPTERS:
            if pattern.search(key):
                raise ValueError(
                    f"LoRA {name!r} has {kind} weights ({key!r}), which this loader does not apply: it reads plain "
                    "LoRA (down and up matrices with an optional alpha), and leaving them out would change the result"
                )
        target = aliases.get(_TRANSFORMER_PREFIX.sub("", m["module"], count=1)) if m else None
        if target is None:
            unmatched.append(key)
            continue
        part = _PARTS[m["part"]]
        if part in parts.setdefault(target, {}):
            raise ValueError(f"LoRA {name!r}: {key!r} and {parts[target][part][0]!r} both patch layer {target!r}")
        parts[target][part] = (key, tensor)
    _check_model(name, unmatched, parts, targets)
    if not parts:
        sample = ", ".join(repr(k) for k in list(sd)[:3])
        raise ValueError(
            f"LoRA {name!r} matches no layer of this EasyAnimate transformer (keys like {sample}); "
            "it is a LoRA for another model, or for the text encoder only"
        )
    patches = {}
    for target, found in parts.items():
        if "down" not in found or "up" not in found:
            have = ", ".join(repr(k) for k, _ in found.values())
            raise ValueError(f"LoRA {name!r}: layer {target!r} has {have} but not both the down and up weights")
        down, up = _fit(name, target, targets[target], found["down"][1], found["up"][1])
        if "alpha" in found:
            alpha = float(found["alpha"][1]) or float(down.shape[0])  # alpha 0 means rank, as kohya reads it
        elif peft is not None:
            module = _TRANSFORMER_PREFIX.sub("", _KEY.match(found["down"][0])["module"], count=1)
            alpha = peft.alpha(module, down.shape[0])
        else:
            alpha = float(down.shape[0])
        patches[target] = LoraPatch(target, down, up, alpha)
    if text_encoder:
        log.warning("LoRA %r: %d text-encoder keys ignored (only the transformer is patched)", name, len(text_encoder))
    if unmatched:
        log.warning("LoRA %r: %d keys match no layer and are ignored: %s", name, len(unmatched), ", ".join(unmatched))
    return LoadedLora(name, patches, unmatched + text_encoder)


def read_lora_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A LoRA file's tensors on the CPU (safetensors, or a pickle read with ``weights_only=True``).

    Read like any weights file (:func:`loading.read_state_dict`): a truncated or corrupt file is a ValueError
    naming it.
    """
    return read_state_dict(path)


def peft_scaling(path: str | os.PathLike) -> PeftScaling | None:
    """The PEFT scaling a LoRA file carries: its safetensors metadata's ``lora_adapter_metadata`` (diffusers'
    ``save_lora_weights``), else, for PEFT's ``adapter_model.*`` only, the ``adapter_config.json`` beside it (the
    ``save_pretrained`` folder; a config in a folder of other LoRAs says nothing about them)."""
    path = os.fspath(path)
    config = None
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as f:
                config = (f.metadata() or {}).get("lora_adapter_metadata")
        except Exception:  # an unreadable file is reported by read_lora_file
            config = None
    beside = os.path.join(os.path.dirname(path), "adapter_config.json")
    try:
        if config is not None:
            return PeftScaling.from_config(json.loads(config))
        if os.path.basename(path).startswith("adapter_model.") and os.path.isfile(beside):
            with open(beside, encoding="utf-8") as f:
                return PeftScaling.from_config(json.load(f))
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"LoRA {os.path.basename(path)!r}: its PEFT adapter config cannot be read ({e})") from e
    return None


def load_lora(path: str | os.PathLike, model: nn.Module, name: str | None = None) -> LoadedLora:
    """Read a LoRA file and resolve it against ``model`` (with the PEFT scaling it carries, if any)."""
    sd = read_lora_file(path)
    return parse_lora(sd, model, name or os.path.basename(os.fspath(path)), peft_scaling(path))


def with_lora(handle: TransformerHandle, lora: LoadedLora, strength: float) -> TransformerHandle:
    """A new handle with ``lora`` stacked on top of the handle's LoRAs (strength 0: the handle unchanged)."""
    if not -float("inf") < strength < float("inf"):  # NaN or inf (from a linked number) would make a video of NaN
        raise ValueError(f"LoRA {lora.name!r}: the strength must be a finite number, got {strength}")
    if strength == 0:
        return handle
    return handle.replace(loras=tuple(handle.loras) + ((lora, float(strength)),))


@contextmanager
def applied(
    model: nn.Module,
    loras: LoraStack,
    device: torch.device,
    dtype: torch.dtype,
    store: torch.device | None = None,
    streamed: Callable[[str], bool] | None = None,
) -> Iterator[None]:
    """Attach ``loras`` ((lora, strength) pairs) as side branches of their layers for the ``with`` block.

    The converted tensors are cached on each :class:`LoadedLora` on ``store`` (default ``device``); with
    another ``store`` (offloading policies) they are copied to ``device`` for the run and dropped after it,
    except for layers where ``streamed(name)`` is true (block swap's streamed blocks): their branches stay on
    ``store`` (page-locked when ``device`` is CUDA) and reach the device with the layer's call, like its weights.
    Everything is detached in ``finally``; the stored weights are never touched.
    """
    device = torch.device(device)
    store = device if store is None else torch.device(store)
    targets = lora_targets(model)
    branches: dict[str, list[ops.LoraBranch]] = {}
    for lora, strength in loras:
        if strength == 0:
            continue
        tensors = lora.prepared(store, dtype)
        for target, patch in lora.patches.items():
            if target not in targets:
                raise ValueError(f"LoRA {lora.name!r} patches layer {target!r}, which this transformer doesn't have")
            down, up = _fit(lora.name, target, targets[target], *tensors[target])
            # the strength goes into a scaled copy of ``up``, never into the layer's code: torch.compile guards on
            # Python numbers it meets, so a strength passed as a number would recompile every block per value
            up = up * (strength * patch.scale)
            if store != device and streamed is not None and streamed(target):
                if device.type == "cuda" and store.type == "cpu":
                    down, up = down.pin_memory(), up.pin_memory()
            elif store != device:
                down, up = down.to(device, non_blocking=True), up.to(device, non_blocking=True)
            branches.setdefault(target, []).append((down, up, 1.0))
    previous = {}
    try:
        for target, extra in branches.items():
            module = targets[target]
            previous[target] = module.__dict__.get("lora_branches")
            module.lora_branches = module.lora_branches + tuple(extra)
        yield
    finally:
        for target, before in previous.items():
            if before is None:
                del targets[target].lora_branches
            else:
                targets[target].lora_branches = before


def attached(model: nn.Module) -> dict[str, int]:
    """``{layer: number of LoRA branches}`` for every layer that has some attached (empty between runs)."""
    return {n: len(m.lora_branches) for n, m in lora_targets(model).items() if m.lora_branches}
