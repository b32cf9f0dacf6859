"""The shipped workflows (workflows/*.json): saved in the frontend's format, valid as shipped, and run end
to end on tiny checkpoints by the demo runner (tests/comfy_host/run_workflows.py)."""

import json
import os

import imageio.v2 as imageio
import numpy as np
import pytest
from comfy_host import install_fake_comfy, load_pack, object_info, ui_to_prompt, validate_prompt
from comfy_host.run_workflows import DEMO_CHECKPOINTS, REPO_DIR, load_workflow, main, workflow_paths
from comfy_host.workflow import _widget_slots
from PIL import Image

WORKFLOWS = {os.path.basename(p): p for p in workflow_paths()}
NODE_KEYS = {"id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties", "widgets_values"}


def test_the_workflows_ship():
    assert set(WORKFLOWS) == {
        "easyanimate_t2v.json", "easyanimate_i2v_start_end.json", "easyanimate_v2v.json",
        "easyanimate_control_canny.json", "easyanimate_trajectory.json", "easyanimate_camera_presets.json",
        "easyanimate_camera_pose_file.json", "easyanimate_t2v_lora.json", "easyanimate_extend.json",
    }  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`main(out_dir)` as `make demo` calls it: {workflow: saved files}, and the folder it used."""
    out = tmp_path_factory.mktemp("demo")
    return main(str(out)), out


@pytest.fixture(scope="module")
def info(demo):
    """/object_info of a ComfyUI with the pack and the demo's models and inputs."""
    _, out = demo
    with install_fake_comfy(str(out / ".models"), str(out / ".input"), str(out / "check")):
        load_pack(REPO_DIR, str(out / "custom_nodes"), folder_name="EasyAnimate nodes")
        yield object_info()


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_workflow_is_in_the_frontend_format(info, name):
    workflow = load_workflow(WORKFLOWS[name])
    assert workflow["version"] == 0.4 and {"groups", "config", "extra"} <= set(workflow)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert workflow["last_node_id"] == max(nodes) and workflow["last_link_id"] == max(
        link[0] for link in workflow["links"]
    )
    for link_id, source, source_slot, target, target_slot, link_type in workflow["links"]:
        output, entry = nodes[source]["outputs"][source_slot], nodes[target]["inputs"][target_slot]
        assert link_id in output["links"] and entry["link"] == link_id
        assert output["type"] == entry["type"] == link_type
    for node in workflow["nodes"]:
        assert NODE_KEYS <= set(node), node["type"]
        if node["type"] == "Note":
            continue
        assert node["type"] in info and node["properties"]["Node name for S&R"] == node["type"]
        slots = [kind for kind, _ in _widget_slots(info[node["type"]]) if kind in ("value", "control", "upload")]
        assert len(node["widgets_values"]) == len(slots), node["type"]  # every widget, in widget order
        controls = [v for kind, v in zip(slots, node["widgets_values"]) if kind == "control"]
        assert all(v in ("fixed", "randomize", "increment", "decrement") for v in controls)
    notes = " ".join(n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "Note")
    for setting in ("memory_mode", "fp8", "block_swap", "steps", "cfg", "Flow"):
        assert setting in notes


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_workflow_validates_as_shipped(info, name):
    prompt = ui_to_prompt(load_workflow(WORKFLOWS[name]), info)
    valid, error, outputs, node_errors = validate_prompt(prompt)
    assert valid is True and error is None and node_errors == {} and len(outputs) == 1
    by_type = {entry["class_type"]: entry["inputs"] for entry in prompt.values()}
    assert by_type["EasyAnimateModelLoader"]["checkpoint"] in DEMO_CHECKPOINTS
    sampler = by_type["EasyAnimateVideoSampler"]
    assert {k: sampler[k] for k in ("width", "height", "frames", "steps", "cfg", "scheduler")} == {
        "width": 672, "height": 384, "frames": 49, "steps": 50, "cfg": 6.0, "scheduler": "Flow",
    }  # fmt: skip
    assert "EasyAnimateVAEDecode" in by_type


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_workflow_runs_end_to_end(demo, name):
    saved, _ = demo
    (path,) = saved[name]
    assert os.path.isfile(path) and os.path.getsize(path) > 0
    if path.endswith(".webp"):
        with Image.open(path) as video:  # the long-video workflow joins two 9-frame clips sharing 4 frames
            assert video.n_frames == (14 if name == "easyanimate_extend.json" else 9) and video.size == (64, 48)
            exif = video.getexif()
        # SaveAnimatedWEBP embeds the prompt and the workflow as EXIF text, as ComfyUI does: dropping the
        # file on the canvas brings the graph back.
        assert json.loads(exif[0x010F].removeprefix("workflow:")) == load_workflow(WORKFLOWS[name])
        prompt = json.loads(exif[0x0110].removeprefix("prompt:"))
        assert {entry["class_type"] for entry in prompt.values()} >= {"EasyAnimateVideoSampler", "SaveAnimatedWEBP"}
    else:
        reader = imageio.get_reader(path, format="FFMPEG")
        try:
            assert reader.get_meta_data()["fps"] == 8 and sum(1 for _ in reader) == 9  # the input's frame rate
        finally:
            reader.close()


def test_lora_workflow_changes_the_video(demo):
    """The LoRA workflow is the text-to-video one plus a LoRA: same seed and prompt, another video."""
    saved, _ = demo
    with (
        Image.open(saved["easyanimate_t2v.json"][0]) as plain,
        Image.open(saved["easyanimate_t2v_lora.json"][0]) as lora,
    ):
        a, b = np.asarray(plain.convert("RGB"), dtype=int), np.asarray(lora.convert("RGB"), dtype=int)
    assert a.shape == b.shape and np.abs(a - b).mean() > 1
