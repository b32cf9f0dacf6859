"""Self-test of the fake ComfyUI host (tests/comfy_host) on a dummy pack, and of nodes/host.py with
and without ComfyUI."""

import importlib.util
import json
import math
import os
import sys
import uuid

import pytest
import torch
from comfy_host import (
    NodeExecutionError,
    PromptExecutor,
    PromptValidationError,
    execute_prompt,
    install_fake_comfy,
    load_pack,
    object_info,
    run_workflow,
    ui_to_prompt,
    validate_node_input,
    validate_prompt,
)
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
DUMMY_PACK = os.path.join(HERE, "comfy_host", "dummy_pack")
HOST_PY = os.path.join(os.path.dirname(HERE), "nodes", "host.py")
REPO_DIR = os.path.dirname(HERE)


@pytest.fixture
def comfy(tmp_path):
    with install_fake_comfy(str(tmp_path / "models"), str(tmp_path / "input"), str(tmp_path / "output")) as fake:
        yield fake


@pytest.fixture
def pack(comfy, tmp_path):
    return load_pack(DUMMY_PACK, str(tmp_path / "custom_nodes"), folder_name="ComfyUI-Dummy.test")


def _load_host():
    """nodes/host.py as a fresh module, seeing whatever ComfyUI modules are installed right now."""
    spec = importlib.util.spec_from_file_location(f"host_under_test_{uuid.uuid4().hex}", HOST_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _node(node_id, node_type, inputs=(), widgets=(), mode=0):
    entries = [{"name": n, "type": t, "link": link} for n, t, link in inputs]
    return {"id": node_id, "type": node_type, "mode": mode, "inputs": entries, "widgets_values": list(widgets)}


# --- loading and /object_info ----------------------------------------------------------------------


def test_pack_loads_like_comfyui_and_is_removed_afterwards(tmp_path):
    before = sys.modules.get("nodes")
    with install_fake_comfy(str(tmp_path / "m"), str(tmp_path / "i"), str(tmp_path / "o")) as fake:
        loaded = load_pack(DUMMY_PACK, str(tmp_path / "custom_nodes"), folder_name="ComfyUI-Dummy.test")
        assert loaded.module_name == str(tmp_path / "custom_nodes" / "ComfyUI-Dummy.test").replace(".", "_x_")
        assert sys.modules[loaded.module_name] is loaded.module
        assert sys.modules[loaded.module_name + ".dummy_nodes"]  # the relative import worked
        assert fake.nodes.NODE_CLASS_MAPPINGS["DummySource"] is loaded.node_class_mappings["DummySource"]
        assert fake.nodes.NODE_CLASS_MAPPINGS["SaveImage"].__name__ == "SaveImage"  # core names win
        assert fake.nodes.NODE_DISPLAY_NAME_MAPPINGS["SaveImage"] == "Save Image"  # and so do their display names
        assert loaded.web_directory.endswith("web")
    assert sys.modules.get("nodes") is before
    assert loaded.module_name not in sys.modules and "folder_paths" not in sys.modules


def test_object_info_fields(pack, comfy):
    with open(os.path.join(comfy.input_dir, "cat.png"), "wb") as f:
        Image.new("RGB", (4, 4)).save(f, format="PNG")
    info = object_info()
    source = info["DummySource"]
    assert source["name"] == "DummySource" and source["display_name"] == "Dummy Source"
    assert source["description"].startswith("Makes a DUMMY")
    assert source["category"] == "dummy/sources" and source["output_node"] is False
    assert source["python_module"] == "custom_nodes.ComfyUI-Dummy.test"
    assert source["input_order"] == {"required": ["seed", "mode", "strength"]}
    assert source["output_name"] == ("dummy", "seed") and source["output_tooltips"][1].startswith("The seed")
    assert source["output_is_list"] == [False, False]
    assert info["DummyCombine"]["display_name"] == "DummyCombine" and info["DummyCombine"]["description"] == ""
    assert info["DummyShow"]["output_node"] is True and info["DummyShow"]["is_input_list"] is True
    assert info["DummyList"]["output_is_list"] == (True,)
    assert info["DummyProgress"]["experimental"] is True and info["DummyTyped"]["deprecated"] is True
    assert "deprecated" not in source
    assert info["LoadImage"]["python_module"] == "nodes" and info["LoadImage"]["input"]["required"]["image"][0] == [
        "cat.png"
    ]
    assert info["SaveAnimatedWEBP"]["python_module"] == "comfy_extras.nodes_images"


# --- UI workflow -> prompt -------------------------------------------------------------------------


def test_ui_to_prompt(pack):
    info = object_info()
    links = [
        [1, 1, 0, 2, 0, "DUMMY"],
        [2, 1, 1, 2, 1, "INT"],
        [3, 5, 0, 2, 2, "DUMMY"],  # from a muted node
        [4, 2, 0, 6, 0, "STRING"],  # into a Reroute
        [5, 6, 0, 3, 0, "STRING"],
        [6, 8, 0, 9, 0, "INT"],  # into a bypassed node
        [7, 9, 0, 10, 0, "INT"],
        [8, 11, 0, 12, 0, "INT"],  # PrimitiveNode -> converted widget
        [9, 12, 0, 13, 0, "INT"],
        [10, 10, 0, 14, 0, "INT"],
        [11, 9, 0, 15, 0, "INT"],  # bypassed node -> a "*" input: no input of that type to re-route to
    ]
    nodes = [
        _node(1, "DummySource", widgets=[42, "randomize", "mul", 0.25]),
        _node(2, "DummyCombine", [("dummy", "DUMMY", 1), ("count", "INT", 2), ("extra", "DUMMY", 3)], ["total"]),
        _node(3, "DummyShow", [("value", "*", 5)]),
        _node(5, "DummySource", widgets=[1, "fixed", "add", 0.5], mode=2),
        {"id": 6, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 4}]},
        _node(7, "Note", widgets=["a note"]),
        _node(8, "DummyList", widgets=[3]),
        _node(9, "DummyDouble", [("value", "INT", 6)], mode=4),
        _node(10, "DummyDouble", [("value", "INT", 7)]),
        _node(11, "PrimitiveNode", widgets=[7, "fixed"]),
        _node(12, "DummyList", [("length", "INT", 8)], widgets=[3]),
        _node(13, "DummyShow", [("value", "*", 9)]),
        _node(14, "DummyShow", [("value", "*", 10)]),
        _node(15, "DummyShow", [("value", "*", 11)]),
    ]
    prompt = ui_to_prompt({"version": 0.4, "nodes": nodes, "links": links}, info)
    assert sorted(prompt, key=int) == ["1", "2", "3", "8", "10", "12", "13", "14", "15"]
    assert prompt["1"]["inputs"] == {"seed": 42, "mode": "mul", "strength": 0.25}  # "randomize" not sent
    assert prompt["1"]["class_type"] == "DummySource" and prompt["1"]["_meta"] == {"title": "Dummy Source"}
    assert prompt["2"]["inputs"] == {"dummy": ["1", 0], "count": ["1", 1], "label": "total"}  # muted link gone
    assert prompt["3"]["inputs"] == {"value": ["2", 0]}  # through the Reroute
    assert prompt["10"]["inputs"] == {"value": ["8", 0]}  # around the bypassed node
    assert prompt["15"]["inputs"] == {}
    assert prompt["12"]["inputs"] == {"length": 7}  # the primitive's value
    del prompt["15"]
    assert validate_prompt(prompt)[0] is True


def test_widget_layouts(pack, comfy):
    info = object_info()
    load = ui_to_prompt({"nodes": [_node(1, "LoadImage", widgets=["a.png", "image"])], "links": []}, info)
    assert load["1"]["inputs"] == {"image": "a.png"}  # the upload button's saved value is skipped
    legacy = _node(1, "DummyCombine", widgets=[0, "legacy"])  # pre-1.16: a dummy value for forceInput
    assert ui_to_prompt({"nodes": [legacy], "links": []}, info)["1"]["inputs"] == {"label": "legacy"}
    scale = _node(1, "ImageScale", widgets=["bilinear", 8, 6, "center"])
    assert ui_to_prompt({"nodes": [scale], "links": []}, info)["1"]["inputs"]["crop"] == "center"
    listed = _node(1, "DummyCombine", widgets=[["a", "b"]])  # arrays would read as links: wrapped
    assert ui_to_prompt({"nodes": [listed], "links": []}, info)["1"]["inputs"] == {"label": {"__value__": ["a", "b"]}}


def test_run_workflow_embeds_it_in_saved_images(comfy):
    workflow = {
        "nodes": [
            _node(1, "EmptyImage", widgets=[8, 4, 1, 0xFF0000]),
            _node(2, "SaveImage", [("images", "IMAGE", 1)], ["wf"]),
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    }
    result = run_workflow(workflow)
    with Image.open(os.path.join(comfy.output_dir, result.outputs["2"]["images"][0]["filename"])) as saved:
        assert json.loads(saved.text["workflow"]) == workflow
        assert json.loads(saved.text["prompt"])["1"]["inputs"]["color"] == 0xFF0000


# --- validation ------------------------------------------------------------------------------------


def _show(prompt, source):
    return {**prompt, "99": {"class_type": "DummyShow", "inputs": {"value": [source, 0]}}}


def _errors(prompt):
    valid, error, _, node_errors = validate_prompt(prompt)
    assert valid is False
    return error, {node: [e["type"] for e in entry["errors"]] for node, entry in node_errors.items()}


def test_validation_error_types(pack):
    def source(**inputs):
        return {"class_type": "DummySource", "inputs": {"seed": 1, "mode": "add", "strength": 0.5, **inputs}}

    assert _errors(_show({"1": source(mode="div")}, "1"))[1] == {"1": ["value_not_in_list"]}
    assert _errors(_show({"1": source(strength=2)}, "1"))[1] == {"1": ["value_bigger_than_max"]}
    assert _errors(_show({"1": source(seed=-1)}, "1"))[1] == {"1": ["value_smaller_than_min"]}
    assert _errors(_show({"1": source(seed="abc")}, "1"))[1] == {"1": ["invalid_input_type"]}
    combine = {"class_type": "DummyCombine", "inputs": {"dummy": ["1", 0]}}
    assert _errors(_show({"1": source(), "2": combine}, "2"))[1] == {"2": ["required_input_missing"]}
    wrong = {"class_type": "DummyCombine", "inputs": {"dummy": ["3", 0], "count": ["1", 1]}}
    lists = {"class_type": "DummyList", "inputs": {"length": 2}}
    error, node_errors = _errors(_show({"1": source(), "2": wrong, "3": lists}, "2"))
    assert node_errors == {"2": ["return_type_mismatch"]} and error["type"] == "prompt_outputs_failed_validation"
    typed = {"class_type": "DummyTyped", "inputs": {"value": ["1", 0]}}
    assert _errors(_show({"1": source(), "2": typed}, "2"))[1] == {"2": ["custom_validation_failed"]}
    assert validate_prompt(_show({"1": source(), "2": {**typed, "inputs": {"value": ["1", 1]}}}, "2"))[0]
    assert _errors({"1": source()})[0]["type"] == "prompt_no_outputs"
    error = _errors({"1": {"class_type": "Nope", "inputs": {}, "_meta": {"title": "My Nope"}}})[0]
    assert error["type"] == "missing_node_type" and error["message"].startswith("Node 'My Nope' not found")
    assert error["extra_info"] == {"node_id": "1", "class_type": "Nope", "node_title": "My Nope"}
    assert _errors({"1": {"inputs": {}}})[0]["type"] == "missing_node_type"
    prompt = _show({"1": source(seed="7", strength="0.25")}, "1")
    assert validate_prompt(prompt)[0] and prompt["1"]["inputs"]["seed"] == 7  # coerced in place


def test_validate_node_input_rules(pack):
    any_type = sys.modules[pack.module_name + ".dummy_nodes"].AnyType("*")
    assert validate_node_input("INT", "INT,FLOAT") and not validate_node_input("INT,FLOAT", "INT", strict=True)
    assert validate_node_input("IMAGE", any_type) and validate_node_input(any_type, "LATENT")
    # current ComfyUI: a plain "*" (also inside a union), the V3 match type and options into a COMBO match
    assert validate_node_input("IMAGE", "*") and validate_node_input("*", "LATENT") and validate_node_input("A", "B,*")
    assert validate_node_input("IMAGE", "COMFY_MATCHTYPE_V3") and validate_node_input(["a", "b"], "COMBO")
    assert not validate_node_input("IMAGE", "LATENT") and not validate_node_input(["a"], "STRING")


def test_validation_cycles_combos_and_argumentless_checks(pack):
    import nodes

    double = lambda source: {"class_type": "DummyDouble", "inputs": {"value": [source, 0]}}  # noqa: E731
    valid, _, _, node_errors = validate_prompt(_show({"1": double("2"), "2": double("1")}, "2"))
    assert not valid and sorted(node_errors) == ["1", "2"]  # not a RecursionError, and the output is not blamed
    for node in ("1", "2"):
        (cycle,) = node_errors[node]["errors"]
        assert cycle["type"] == "dependency_cycle" and cycle["extra_info"] == {
            "node_id": node,
            "cycle_nodes": ["2", "1"],
        }
        assert cycle["details"] == "2 (DummyDouble) -> 1 (DummyDouble) -> 2 (DummyDouble)"

    class Choose:
        RETURN_TYPES = ("STRING",)
        FUNCTION = "run"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {
                "required": {"pick": ("COMBO", {"options": ["a", "b"]})},
                "optional": {"remote": ("COMBO", {"remote_combo": {"route": "/x"}}), "many": ("COMBO", {"options": ["a", "b"], "multiselect": True})},
            }  # fmt: skip

        @classmethod
        def VALIDATE_INPUTS(cls):
            return "the server is busy"

    classes = {**nodes.NODE_CLASS_MAPPINGS, "Choose": Choose}
    inputs = {"pick": "c", "remote": "anything", "many": {"__value__": ["a", "z"]}}
    valid, _, _, node_errors = validate_prompt({"1": {"class_type": "Choose", "inputs": inputs}}, classes)
    errors = node_errors["1"]["errors"]
    assert not valid and [(e["type"], e["details"]) for e in errors] == [
        ("value_not_in_list", "many: 'z' not in ['a', 'b']"),
        ("value_not_in_list", "pick: 'c' not in ['a', 'b']"),
        ("custom_validation_failed", "the server is busy"),  # a check taking no input reports without a name
    ]


# --- execution -------------------------------------------------------------------------------------

GRAPH = {
    "1": {"class_type": "DummySource", "inputs": {"seed": 4, "mode": "mul", "strength": 0.5}},
    "2": {"class_type": "DummyCombine", "inputs": {"dummy": ["1", 0], "count": ["1", 1], "label": "t"}},
    "3": {"class_type": "DummyShow", "inputs": {"value": ["2", 0]}},
    "4": {"class_type": "DummyList", "inputs": {"length": 3}},
    "5": {"class_type": "DummyDouble", "inputs": {"value": ["4", 0]}},
    "6": {"class_type": "DummyShow", "inputs": {"value": ["5", 0]}},
}


def test_execution_order_outputs_and_lists(pack):
    result = execute_prompt(GRAPH)
    assert result.outputs["3"] == {"text": ["t=8 node=2 nodes=6"]}  # hidden UNIQUE_ID and PROMPT
    assert result.outputs["6"] == {"text": ["0", "2", "4"]}  # OUTPUT_IS_LIST, per-item calls, INPUT_IS_LIST
    order = result.executed
    assert sorted(order) == sorted(GRAPH) and order.index("1") < order.index("2") < order.index("3")
    assert order[order.index("2") + 1] == "3" and order[order.index("5") + 1] == "6"  # outputs as soon as ready
    events = [event for event, _ in result.messages]
    assert events[:2] == ["execution_start", "execution_cached"] and events[-1] == "execution_success"
    assert [d["node"] for d in result.events("executing")] == order
    assert result.results["5"] == [[0, 2, 4]]


def test_cache_between_prompts(pack):
    executor = PromptExecutor()
    executor.execute(GRAPH)
    again = executor.execute(GRAPH)
    assert again.executed == [] and sorted(again.cached) == sorted(GRAPH)
    assert again.outputs["6"] == {"text": ["0", "2", "4"]} and len(again.events("executed")) == 2
    changed = executor.execute({**GRAPH, "4": {"class_type": "DummyList", "inputs": {"length": 2}}})
    assert sorted(changed.executed) == ["4", "5", "6"]


def test_is_changed_nan_runs_the_node_and_its_descendants_again(pack, monkeypatch):
    """ComfyUI's idiom for "always run": IS_CHANGED returning NaN (never equal to itself); any other value caches."""
    import nodes

    source = nodes.NODE_CLASS_MAPPINGS["DummySource"]
    executor = PromptExecutor()
    monkeypatch.setattr(source, "IS_CHANGED", classmethod(lambda cls, **_: float("nan")), raising=False)
    executor.execute(GRAPH)
    assert sorted(executor.execute(GRAPH).executed) == ["1", "2", "3"]
    monkeypatch.setattr(source, "IS_CHANGED", classmethod(lambda cls, **_: "same"))
    executor.execute(GRAPH)
    assert executor.execute(GRAPH).executed == []


def test_is_changed_is_written_into_the_prompt(pack, monkeypatch):
    """execution.py's IsChangedCache stores IS_CHANGED's results in the prompt's node ("is_changed"), so the PROMPT
    a saver embeds holds them (NaN when IS_CHANGED raised), and takes a value the prompt already holds as is."""
    import nodes

    source, combine, seen = nodes.NODE_CLASS_MAPPINGS["DummySource"], nodes.NODE_CLASS_MAPPINGS["DummyCombine"], []
    original = combine.combine
    monkeypatch.setattr(combine, "combine", lambda self, **kw: (seen.append(kw["prompt"]), original(self, **kw))[1])
    monkeypatch.setattr(source, "IS_CHANGED", classmethod(lambda cls, **_: "v1"), raising=False)
    execute_prompt(GRAPH)
    assert seen[-1]["1"]["is_changed"] == ["v1"] and "is_changed" not in seen[-1]["2"]
    assert "is_changed" not in GRAPH["1"]  # the caller's prompt is not touched

    def broken(cls, **_):
        raise OSError("gone")

    monkeypatch.setattr(source, "IS_CHANGED", classmethod(broken))
    execute_prompt(GRAPH)
    assert math.isnan(seen[-1]["1"]["is_changed"])
    executor = PromptExecutor()
    given = {**GRAPH, "1": {**GRAPH["1"], "is_changed": ["given"]}}
    executor.execute(given)
    assert seen[-1]["1"]["is_changed"] == ["given"] and executor.execute(given).executed == []


def test_unvalidated_cycle_is_an_execution_error(pack):
    """Without validation (which reports cycles first) the executor finds nothing ready: graph.py's
    DependencyCycleError, sent as "execution_error", instead of hanging or crashing."""
    double = lambda source: {"class_type": "DummyDouble", "inputs": {"value": [source, 0]}}  # noqa: E731
    prompt = _show({"1": double("2"), "2": double("1")}, "2")
    result = execute_prompt(prompt, validate=False, raise_errors=False)
    assert result.executed == [] and result.error["exception_type"] == "graph.DependencyCycleError"
    sent = result.events("execution_error")[0]
    assert sent["exception_message"] == "Dependency cycle detected" and sent["node_id"] in ("1", "2", "99")
    with pytest.raises(NodeExecutionError):
        execute_prompt(prompt, validate=False)


def test_node_errors_carry_node_and_class(pack):
    prompt = _show({"1": {"class_type": "DummyFail", "inputs": {"message": "bad"}}}, "1")
    with pytest.raises(NodeExecutionError) as info:
        execute_prompt(prompt)
    assert info.value.node_id == "1" and info.value.class_type == "DummyFail"
    assert isinstance(info.value.__cause__, ValueError)
    result = execute_prompt(prompt, raise_errors=False)
    assert result.error["exception_type"] == "ValueError" and result.events("execution_error")[0]["node_id"] == "1"
    # execution.py sends "{exception}\n{tips}" (tips only for an OOM), as a real ComfyUI 0.3.64 server did
    assert result.error["exception_message"] == result.events("execution_error")[0]["exception_message"] == "bad\n"
    with pytest.raises(PromptValidationError):
        execute_prompt(_show({"1": {"class_type": "DummySource", "inputs": {}}}, "1"))


def test_out_of_memory_error_carries_comfyuis_tips(pack, comfy, monkeypatch):
    """execution.py answers an OOM_EXCEPTION with its tips in exception_message and unloads every model."""
    mm, unloads = comfy.model_management, []
    monkeypatch.setattr(mm, "unload_all_models", lambda: unloads.append(True))

    def run(self, message):
        raise mm.OOM_EXCEPTION(message)

    monkeypatch.setattr(comfy.nodes.NODE_CLASS_MAPPINGS["DummyFail"], "run", run)
    result = execute_prompt(
        _show({"1": {"class_type": "DummyFail", "inputs": {"message": "oom"}}}, "1"), raise_errors=False
    )
    assert result.error["exception_message"].startswith("oom\nThis error means you ran out of memory on your GPU.")
    assert unloads == [True]


def test_progress_previews_and_interrupt(pack, comfy):
    prompt = _show({"1": {"class_type": "DummyProgress", "inputs": {"steps": 3, "interrupt_at": 0}}}, "1")
    comfy.interrupt()  # a stale interrupt is cleared when a prompt starts
    result = execute_prompt(prompt)
    assert [(p["value"], p["max"], p["node"]) for p in result.events("progress")] == [
        (1, 3, "1"),
        (2, 3, "1"),
        (3, 3, "1"),
    ]
    node, (kind, image, size) = result.previews[0]
    assert (node, kind, image.size, size) == ("1", "JPEG", (8, 8), 512) and len(result.previews) == 3
    prompt["1"]["inputs"]["interrupt_at"] = 2
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        execute_prompt(prompt)
    assert comfy.messages[-1][0] == "execution_interrupted" and comfy.messages[-1][1]["node_id"] == "1"
    assert comfy.model_management.processing_interrupted() is False  # throwing cleared the flag


def test_core_image_nodes_work(comfy, tmp_path):
    frames = [Image.new("RGB", (16, 12), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(os.path.join(comfy.input_dir, "rgb.png"), save_all=True, append_images=frames[1:])
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "rgb.png"}},
        "2": {"class_type": "ImageFromBatch", "inputs": {"image": ["1", 0], "batch_index": 1, "length": 2}},
        "3": {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method": "lanczos", "width": 8, "height": 0, "crop": "disabled"}},
        "4": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["3", 0], "filename_prefix": "clips/a", "fps": 8.0, "lossless": True, "quality": 80, "method": "default"}},
        "5": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 6, "batch_size": 1, "color": 0x00FF00}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "still"}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        "8": {"class_type": "SaveAnimatedPNG", "inputs": {"images": ["3", 0], "filename_prefix": "apng", "fps": 4.0, "compress_level": 4}},
    }  # fmt: skip
    result = execute_prompt(prompt)
    webp = result.outputs["4"]
    assert webp["images"] == [{"filename": "a_00001_.webp", "subfolder": "clips", "type": "output"}]
    assert webp["animated"] == [True]
    with Image.open(os.path.join(comfy.output_dir, "clips", "a_00001_.webp")) as clip:
        assert clip.n_frames == 2 and clip.size == (8, 6) and clip.convert("RGB").getpixel((4, 3))[1] > 200
    with Image.open(os.path.join(comfy.output_dir, result.outputs["6"]["images"][0]["filename"])) as still:
        assert still.size == (8, 6) and still.getpixel((4, 3)) == (0, 255, 0)
    assert result.outputs["7"]["images"][0]["type"] == "temp"
    assert result.outputs["8"]["images"][0]["filename"] == "apng_00001_.png"
    assert execute_prompt(prompt).outputs["4"]["images"][0]["filename"] == "a_00002_.webp"  # the counter goes on
    prompt["1"]["inputs"]["image"] = "missing.png"
    valid, _, good_outputs, node_errors = validate_prompt(prompt)  # valid: one output is still good
    assert valid and good_outputs == ["6"] and node_errors["1"]["errors"][0]["type"] == "custom_validation_failed"
    assert sorted(node_errors["1"]["dependent_outputs"]) == ["4", "7", "8"]
    assert execute_prompt(prompt).executed == ["5", "6"]  # only the valid outputs run


# --- nodes/host.py ---------------------------------------------------------------------------------


def test_host_without_comfyui(tmp_path, monkeypatch):
    assert "comfy" not in sys.modules and "folder_paths" not in sys.modules
    monkeypatch.setenv("EASYANIMATE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("EASYANIMATE_OUTPUT_DIR", str(tmp_path / "out"))
    host = _load_host()
    assert host.IN_COMFYUI is False and host.INTERRUPT_EXCEPTION is host.EasyAnimateInterrupted
    assert host.offload_device() == torch.device("cpu") and isinstance(host.torch_device(), torch.device)
    host.soft_empty_cache()
    assert host.should_stop() is False
    host.request_interrupt()
    assert host.should_stop() is True and host.should_stop() is True  # reading does not clear
    with pytest.raises(InterruptedError):
        host.make_progress_callback(2, lambda latents: torch.zeros(4, 4, 3))(1, 2, torch.zeros(1, 16, 1, 2, 2))
    assert host.should_stop() is False
    host.throw_if_interrupted()  # nothing pending
    host.register_model_folders()
    (tmp_path / "models" / "EasyAnimate" / "EasyAnimateV5.1-7b-zh-InP").mkdir(parents=True)
    (tmp_path / "models" / "loras" / "sub").mkdir(parents=True)
    (tmp_path / "models" / "loras" / "sub" / "style.safetensors").write_bytes(b"")
    (tmp_path / "models" / "loras" / "notes.txt").write_text("")
    assert host.list_checkpoint_folders() == ["EasyAnimateV5.1-7b-zh-InP"]
    assert host.list_models("loras") == ["sub/style.safetensors"]
    assert host.model_path("loras", "sub/style.safetensors").endswith("style.safetensors")
    assert os.path.isdir(host.model_path("EasyAnimate", "EasyAnimateV5.1-7b-zh-InP"))
    with pytest.raises(FileNotFoundError, match="looked in"):
        host.model_path("vae", "missing.safetensors")
    assert host.output_directory() == str(tmp_path / "out")
    assert host.annotated_input_path("a.png [output]") == str(tmp_path / "out" / "a.png")
    monkeypatch.setenv("EASYANIMATE_INPUT_DIR", str(tmp_path / "in"))
    assert host.annotated_input_path("sub/b.txt") == str(tmp_path / "in" / "sub" / "b.txt")
    for escaping in ("../secret.txt", "/etc/passwd", "../in2/x.png [output]"):
        with pytest.raises(ValueError, match="Invalid file path"):  # as current ComfyUI's get_annotated_filepath
            host.annotated_input_path(escaping)
    monkeypatch.setenv("EASYANIMATE_TEMP_DIR", str(tmp_path / "temp"))
    wide = torch.linspace(0, 1, 3000).view(1, 3000, 1).expand(600, 3000, 3)  # [H, W, 3]
    ref = host.save_temp_png(wide, "bg")
    assert ref["type"] == "temp" and ref["subfolder"] == "" and ref["filename"].startswith("bg_")
    with Image.open(tmp_path / "temp" / ref["filename"]) as png:
        assert png.size == (1024, 205)  # at most 1024 on the long side, the aspect kept
    assert host.save_temp_png(wide, "bg") == ref and len(os.listdir(tmp_path / "temp")) == 1  # named by content
    asked = []
    assert host.make_room(lambda device: asked.append(device) or 10**12) == host.torch_device()
    assert asked == []  # without ComfyUI there is nothing to unload: the estimate is not even computed


def _host_progress_node(host, decoder, stop_at=None):
    class HostProgress:
        RETURN_TYPES = ("STRING",)
        OUTPUT_NODE = True
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        def run(self):
            progress = host.make_progress_callback(2, decoder)
            for step in (1, 2):
                if step == stop_at:
                    host.request_interrupt()
                    assert host.should_stop() is True  # does not raise
                    host.throw_if_interrupted()
                progress(step, 2, torch.ones(1, 3, 2, 4, 6))  # [B, C, T, H, W]
            return {"ui": {"text": ["ok"]}, "result": ("ok",)}

    return HostProgress


def test_host_inside_comfyui(comfy, tmp_path):
    host = _load_host()
    assert host.IN_COMFYUI is True and host.INTERRUPT_EXCEPTION is comfy.model_management.InterruptProcessingException
    folder_paths = comfy.modules["folder_paths"]
    host.register_model_folders()
    host.register_model_folders()
    assert folder_paths.get_folder_paths("EasyAnimate") == [os.path.join(comfy.models_dir, "EasyAnimate")]
    os.makedirs(os.path.join(comfy.models_dir, "EasyAnimate", "ckpt", "transformer"))
    os.makedirs(os.path.join(comfy.models_dir, "loras"))
    open(os.path.join(comfy.models_dir, "loras", "a.safetensors"), "wb").close()
    assert host.list_checkpoint_folders() == ["ckpt"] and host.list_models("loras") == ["a.safetensors"]
    assert host.model_path("EasyAnimate", "ckpt").endswith("ckpt")
    assert host.model_path("loras", "a.safetensors") == folder_paths.get_full_path("loras", "a.safetensors")
    assert host.output_directory() == comfy.output_dir and host.input_directory() == comfy.input_dir
    assert host.annotated_input_path("x.png") == os.path.join(comfy.input_dir, "x.png")
    with pytest.raises(ValueError, match="Invalid file path"):  # current folder_paths refuses leaving the folder
        host.annotated_input_path("../models/x.png")
    classes = dict(comfy.nodes.NODE_CLASS_MAPPINGS)
    factors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    for decoder in (lambda latents: torch.full((4, 6, 3), 0.5), factors):
        classes["HostProgress"] = _host_progress_node(host, decoder)
        result = execute_prompt({"1": {"class_type": "HostProgress", "inputs": {}}}, classes)
        assert [p["value"] for p in result.events("progress")] == [1, 2]
        assert [(n, p[0], p[1].size, p[2]) for n, p in result.previews] == [("1", "JPEG", (6, 4), 512)] * 2
    # ComfyUI sets each prompt's preview method (the browser's setting, else --preview-method) when it starts:
    # the host reads it per run, not once at import
    quiet = execute_prompt(
        {"1": {"class_type": "HostProgress", "inputs": {}}}, classes, extra_data={"preview_method": "none"}
    )
    assert quiet.previews == [] and [p["value"] for p in quiet.events("progress")] == [1, 2]
    again = execute_prompt(
        {"1": {"class_type": "HostProgress", "inputs": {}}}, classes, extra_data={"preview_method": "default"}
    )
    assert len(again.previews) == 2
    classes["HostProgress"] = _host_progress_node(host, factors, stop_at=2)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        execute_prompt({"1": {"class_type": "HostProgress", "inputs": {}}}, classes)


def test_cancel_lands_on_a_throttled_progress_update(comfy, monkeypatch):
    """ComfyUI throttles its ProgressBar hook (the only place it checks for Cancel): without previews a fast loop
    sends only its first and last update. The pack's progress callback checks for Cancel itself on every update."""
    monkeypatch.setattr(comfy.modules["comfy.utils"], "PROGRESS_THROTTLE_MIN_INTERVAL", 1e9)  # all throttled
    comfy.modules["comfy.cli_args"].args.preview_method = comfy.modules["comfy.cli_args"].LatentPreviewMethod.NoPreviews
    host = _load_host()
    seen = []

    class Loop:
        RETURN_TYPES, OUTPUT_NODE, FUNCTION = ("STRING",), True, "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"stop_at": ("INT", {"default": 0})}}

        def run(self, stop_at):
            progress = host.make_progress_callback(20)
            for step in range(1, 21):
                if step == stop_at:
                    host.request_interrupt()
                progress(step, 20)
                seen.append(step)
            return {"ui": {"text": ["ok"]}, "result": ("ok",)}

    classes = {**comfy.nodes.NODE_CLASS_MAPPINGS, "Loop": Loop}
    result = execute_prompt({"1": {"class_type": "Loop", "inputs": {"stop_at": 0}}}, classes)
    assert [p["value"] for p in result.events("progress")] == [1, 20]  # what ComfyUI sends
    seen.clear()
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        execute_prompt({"1": {"class_type": "Loop", "inputs": {"stop_at": 7}}}, classes)
    assert seen == list(range(1, 7))  # stopped at the update after the Cancel, not at the last one


def test_repository_pack_loads(comfy, tmp_path):
    loaded = load_pack(REPO_DIR, str(tmp_path / "custom_nodes"))
    info = object_info(loaded.node_class_mappings, loaded.display_name_mappings)
    assert all(entry["python_module"] == "custom_nodes.ComfyUI-EasyAnimate-test" for entry in info.values())
