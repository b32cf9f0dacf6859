"""Stand-in for `comfy/cli_args.py`: the parsed command line the other modules read."""

import enum
import types


class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"

    @classmethod
    def from_string(cls, value: str):
        """The member whose value is `value`, or None."""
        return next((member for member in cls if member.value == value), None)


# ComfyUI's default is `--preview-method none`; the harness turns previews on so they can be tested.
args = types.SimpleNamespace(
    preview_method=LatentPreviewMethod.Auto,
    preview_size=512,
    disable_metadata=False,
)
