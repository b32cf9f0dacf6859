"""ComfyUI-EasyAnimate: nodes for the EasyAnimate V5.1/V5 video diffusion models.

ComfyUI imports this folder as a package under a name of its own choosing, so everything inside the
pack is imported relatively. Importing installs nothing, downloads nothing and needs no GPU.
"""

from .nodes import camera, conditioning, control, host, loaders, lora, sampling, speed, text, trajectory, vae

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _module in (loaders, lora, text, conditioning, control, trajectory, camera, sampling, speed, vae):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)

WEB_DIRECTORY = "./web"

host.register_model_folders()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
