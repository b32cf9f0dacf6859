"""tests/comfy_host/real_server.py without a ComfyUI: its command line, and its prompts, comparisons and
summary exercised on a harness run (the check itself runs against a real server, see README)."""

import copy
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from comfy_host import real_server as rs
from comfy_host.run_workflows import REPO_DIR, write_tiny_models

T2V = "easyanimate_t2v"


def test_help_runs_as_documented():
    done = subprocess.run(
        [sys.executable, "-m", "tests.comfy_host.real_server", "--help"],
        cwd=REPO_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for option in ("--comfyui", "--python", "--port", "--out"):
        assert option in done.stdout


def test_a_folder_without_main_py_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        rs.main(["--comfyui", str(tmp_path)])
    assert exit_info.value.code == 2 and "no main.py" in capsys.readouterr().err


def test_add_image_dumps_taps_every_image_output_of_the_pack_only():
    info = {"Pack": {"output": ["IMAGE", "LATENT", "IMAGE"]}, "Core": {"output": ["IMAGE"]}}
    prompt = {"1": {"class_type": "Pack", "inputs": {}}, "2": {"class_type": "Core", "inputs": {"x": ["1", 0]}}}
    rs.add_image_dumps(prompt, info, {"Pack"}, "wf")
    dumps = {k: v["inputs"] for k, v in prompt.items() if v["class_type"] == rs.DUMP_NODE}
    assert dumps == {
        "dump_1_0": {"images": ["1", 0], "name": "wf__1_0"},
        "dump_1_2": {"images": ["1", 2], "name": "wf__1_2"},
    }


def test_history_outcome_reads_the_error_or_interruption():
    interrupted = {"node_id": "3", "node_type": rs.SAMPLER}
    entry = {"status": {"status_str": "error", "completed": False, "messages": [
        ["execution_start", {}], ["execution_interrupted", interrupted]]}}  # fmt: skip
    assert rs.history_outcome(entry) == ("execution_interrupted", interrupted)
    ok = {"status": {"status_str": "success", "completed": True, "messages": [["execution_success", {}]]}}
    assert rs.history_outcome(ok) == ("success", {})


def test_summary_table_and_exit_code():
    rows = [rs.row("object_info", [], "23 nodes equal"), rs.row("t2v", ["a.pt: values differ", "b.webp: bytes differ"])]
    text = rs.format_summary(rows)
    assert "object_info  ok      23 nodes equal" in text
    assert "t2v          FAIL    a.pt: values differ; b.webp: bytes differ" in text
    assert text.endswith("1/2 checks ok, 1 FAILED") and rs.exit_code(rows) == 1
    assert rs.exit_code(rows[:1]) == 0 and rs.exit_code([]) == 1


def test_a_server_that_exits_is_reported(tmp_path):
    (tmp_path / "main.py").write_text("import sys\nprint('cannot start: no torch')\nsys.exit(3)\n")
    server = rs.Server(str(tmp_path), sys.executable, rs.free_port(), str(tmp_path / "base"), str(tmp_path / "log"))
    assert server.cmd[2:5] == ["--cpu", "--listen", "127.0.0.1"]
    with pytest.raises(RuntimeError, match="exited with 3; its log ends:\ncannot start: no torch"):
        server.start(timeout=30)
    server.stop()


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """The check's harness side for the text-to-video workflow, the bad input and the out-of-memory error; its
    output folder copied
    as a stand-in for the server's."""
    work = tmp_path_factory.mktemp("real_server")
    models, out = str(work / "models"), str(work / "harness")
    write_tiny_models(models, {"EasyAnimateV5.1-tiny-T2V": "T2V"})
    run = rs.run_harness(
        models, str(work / "input"), out, str(work / "nodes"), only={T2V, rs.BAD_INPUT_CASE, rs.OOM_CASE}
    )
    shutil.copytree(out, work / "server")
    return run, out, str(work / "server")


def test_harness_side_dumps_images_and_records_files_and_errors(harness):
    run, out, _ = harness
    assert set(run["results"]) == {T2V, rs.BAD_INPUT_CASE, rs.OOM_CASE}
    prompt = run["cases"][T2V]["prompt"]
    images = [(i, s) for i, e in prompt.items() if e["class_type"] in run["pack_nodes"]
              for s, kind in enumerate(run["object_info"][e["class_type"]]["output"]) if kind == "IMAGE"]  # fmt: skip
    dumped = sorted(os.listdir(os.path.join(out, rs.DUMP_SUBFOLDER)))
    assert images and dumped == sorted(f"{T2V}__{i}_{s}.pt" for i, s in images)
    frames = torch.load(os.path.join(out, rs.DUMP_SUBFOLDER, dumped[0]), weights_only=True)
    assert tuple(frames.shape) == (9, 48, 64, 3)  # DEMO_OVERRIDES: 9 frames of 64x48
    files = run["results"][T2V]["files"]
    assert [f for f in files if f[0] != rs.DUMP_SUBFOLDER and f[1].endswith(".webp")] == files[-1:]
    error = run["results"][rs.BAD_INPUT_CASE]["error"]
    assert error["node_type"] == rs.SAMPLER and "divisible by 16" in error["exception_message"]
    assert rs.DUMP_NODE not in run["object_info"]  # only the pack's nodes are compared
    error = run["results"][rs.OOM_CASE]["error"]  # the check node's out-of-memory error, with the pack's advice
    assert error["node_type"] == rs.SAMPLER and error["exception_type"] == "torch.OutOfMemoryError"
    assert error["exception_message"].startswith("out of memory on cpu while sampling 64x48, 9 frames in memory mode")
    assert f"[{rs.OOM_MESSAGE}]\nThis error means you ran out of memory on your GPU." in error["exception_message"]
    runners = [m for n, m in sys.modules.items() if n.endswith("easyanimate_core.runner")]
    assert runners and all(r.sample.__name__ == "sample" for r in runners)  # the failure was for one run only


def test_comparisons_pass_on_equal_runs_and_catch_any_difference(harness):
    run, out, server = harness
    entry = {"status": {"status_str": "success", "completed": True, "messages": []}, "outputs": {}}
    files = run["results"][T2V]["files"]
    entry["outputs"]["9"] = {"images": [{"filename": f, "subfolder": s, "type": "output"} for s, f in files]}
    dumps = os.path.join(out, rs.DUMP_SUBFOLDER), os.path.join(server, rs.DUMP_SUBFOLDER)
    check, status, detail = rs.compare_run(T2V, entry, run["results"][T2V], out, server, *dumps)
    assert (check, status) == (T2V, "ok") and "IMAGE equal; 1 WEBP byte-identical" in detail

    victim = os.path.join(dumps[1], sorted(os.listdir(dumps[1]))[0])
    original = torch.load(victim, weights_only=True)
    changed = original.clone().contiguous()
    changed.view(-1)[0] += 1e-6
    torch.save(changed, victim)
    webp = os.path.join(server, *files[-1])
    data = bytearray(open(webp, "rb").read())
    data[-1] ^= 1
    open(webp, "wb").write(bytes(data))
    try:
        _, status, detail = rs.compare_run(T2V, entry, run["results"][T2V], out, server, *dumps)
        assert status == "FAIL" and "values differ" in detail and "bytes differ" in detail
        os.remove(victim)
        assert "not dumped by the server" in rs.compare_dumps(*dumps, T2V)[0]
        failed = copy.deepcopy(entry)
        failed["status"]["messages"] = [["execution_error", {"exception_message": "boom"}]]
        assert rs.compare_run(T2V, failed, run["results"][T2V], out, server, *dumps)[1] == "FAIL"
    finally:
        torch.save(original, victim)
        data[-1] ^= 1
        open(webp, "wb").write(bytes(data))


def test_object_info_comparison_on_the_harness_itself(harness):
    run, _, _ = harness
    mine, nodes = run["object_info"], run["pack_nodes"]
    server = json.loads(json.dumps(mine))  # as /object_info sends it: lists, not tuples
    for entry in server.values():
        entry.pop("is_input_list", None)  # a key this (older) server never emits: ignored
    server["Other"] = {"python_module": "nodes", "input": {}}
    assert rs.compare_object_info(mine, server, nodes) == ([], {"is_input_list"} & set(next(iter(mine.values()))))
    name = sorted(nodes)[0]
    server[name]["display_name"] = "renamed"
    server[sorted(nodes)[1]].pop("category")
    del server[sorted(nodes)[2]]
    server["Extra"] = {"python_module": f"custom_nodes.{rs.PACK_FOLDER}"}
    diffs, _ = rs.compare_object_info(mine, server, nodes)
    assert diffs == [
        f'{name}.display_name: harness "{mine[name]["display_name"]}" != server "renamed"',
        f'{sorted(nodes)[1]}.category: harness "{mine[sorted(nodes)[1]]["category"]}" != server "<absent>"',
        f"{sorted(nodes)[2]}: missing on the server",
        "Extra: only on the server",
    ]
