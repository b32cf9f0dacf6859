"""Check the pack on a real ComfyUI server against this harness: same prompts, same results.

    python -m tests.comfy_host.real_server --comfyui ~/ComfyUI [--python ~/ComfyUI/venv/bin/python]
                                           [--port 8199] [--out DIR]

Run it with the pack's test Python (torch and aiohttp, see requirements-dev.txt); `--python` is the one that
runs ComfyUI's main.py (default: the same). Nothing is written into the ComfyUI checkout: the server gets
`--base-directory WORK/comfyui` (models, input, output, temp, user and custom_nodes all live there), where
the pack is linked into custom_nodes next to two small check nodes written for the run (a tensor dump, and one
that makes the next sampling run fail with torch's out-of-memory error); all are removed at the end. The tiny checkpoints, LoRA and example inputs come from run_workflows' helpers.

Checks: /object_info of the pack's nodes equals the harness's (keys the server never emits are ignored);
every shipped workflow with DEMO_OVERRIDES runs on the server (POST /prompt, /history polling) and each
IMAGE output of a pack node (dumped by the dump node) is torch.equal to the harness run of the same prompt,
and every saved WEBP file is byte-identical (MP4 files are not compared: the harness's SaveVideo encodes
with imageio-ffmpeg, ComfyUI with PyAV); an interrupted run is reported as interrupted and its rerun equals
the harness; a bad input and an out-of-memory error at the first sampling step give the pack's error messages
as the harness gives them (after an out-of-memory error ComfyUI adds its tips and unloads its models) and the
server goes on serving. Prints a table and exits 1 on any mismatch. Without --out the work folder is temporary.

It needs a ComfyUI whose main.py has --base-directory (0.3.64 has). Packs installed in the checkout's own
custom_nodes are not loaded; an extra_model_paths.yaml there still applies, and a second copy of the pack it
brings in shows up as object_info differences (python_module).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

from .run_workflows import DEMO_CHECKPOINTS, REPO_DIR, demo_prompt, load_workflow, workflow_paths

PACK_FOLDER = "comfyui-easyanimate"  # the pack's folder name in custom_nodes (python_module "custom_nodes.<this>")
DUMP_NODE = "EasyAnimateCheckTensorDump"
DUMP_FILE = "easyanimate_check_tensor_dump.py"
DUMP_SUBFOLDER = "tensor_dump"
SAMPLER = "EasyAnimateVideoSampler"
OOM_NODE = "EasyAnimateCheckOutOfMemory"
INTERRUPT_CASE, BAD_INPUT_CASE, OOM_CASE = "interrupt", "bad_input", "out_of_memory"
OOM_MESSAGE = "CUDA out of memory. Tried to allocate 9.00 GiB (raised by the check)"
TERMINAL = ("execution_success", "execution_error", "execution_interrupted")
# The dump node, written into the server's (and the harness's) custom_nodes for the run only.
DUMP_SOURCE = f'''"""Saves an IMAGE as output/{DUMP_SUBFOLDER}/<name>.pt (written by tests/comfy_host/real_server.py)."""
import os

import folder_paths
import torch


class {DUMP_NODE}:
    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"images": ("IMAGE",), "name": ("STRING", {{"default": "image"}})}}}}

    RETURN_TYPES = ()
    FUNCTION = "dump"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def dump(self, images, name):
        folder = os.path.join(folder_paths.get_output_directory(), "{DUMP_SUBFOLDER}")
        os.makedirs(folder, exist_ok=True)
        torch.save(images.detach().cpu().clone(), os.path.join(folder, name + ".pt"))
        return {{}}


class {OOM_NODE}:
    """Passes the model on; the next sampling run (only that one) fails with torch's out-of-memory error at its
    first step, as a GPU that runs out would."""

    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"model": ("EASYANIMATE_MODEL",)}}}}

    RETURN_TYPES = ("EASYANIMATE_MODEL",)
    FUNCTION = "arm"
    CATEGORY = "testing"

    def arm(self, model):
        import sys

        runner = sys.modules[type(model).__module__.rsplit(".", 1)[0] + ".runner"]  # the pack's own engine
        sample = runner.sample

        def out_of_memory(*args, **kwargs):
            runner.sample = sample
            raise torch.OutOfMemoryError("{OOM_MESSAGE}")

        runner.sample = out_of_memory
        return (model,)


NODE_CLASS_MAPPINGS = {{"{DUMP_NODE}": {DUMP_NODE}, "{OOM_NODE}": {OOM_NODE}}}
'''


# ---- prompts -------------------------------------------------------------------------------------------------


def add_image_dumps(prompt: dict, info: dict, pack_nodes, tag: str) -> dict:
    """Adds a dump node on every IMAGE output of the pack's nodes in `prompt` (in place, returned); the
    tensor lands in output/tensor_dump/<tag>__<node>_<slot>.pt."""
    for node_id, entry in list(prompt.items()):
        if entry["class_type"] not in pack_nodes:
            continue
        for slot, kind in enumerate(info[entry["class_type"]]["output"]):
            if kind == "IMAGE":
                name = f"{tag}__{node_id}_{slot}"
                prompt[f"dump_{node_id}_{slot}"] = {
                    "class_type": DUMP_NODE,
                    "inputs": {"images": [node_id, slot], "name": name},
                }
    return prompt


def _with_sampler(prompt: dict, tag: str, **inputs) -> dict:
    """A copy of `prompt` with these sampler inputs, its dumps and saved files named after `tag` (so that its
    files' numbers do not depend on how often the server ran the original)."""
    prompt = copy.deepcopy(prompt)
    for entry in prompt.values():
        if entry["class_type"] == SAMPLER:
            entry["inputs"].update(inputs)
        elif "filename_prefix" in entry["inputs"]:
            entry["inputs"]["filename_prefix"] = f"EasyAnimate/{tag}"
        elif entry["class_type"] == DUMP_NODE:
            entry["inputs"]["name"] = tag + "__" + entry["inputs"]["name"].split("__", 1)[1]
    return prompt


def build_cases(info: dict, pack_nodes) -> dict[str, dict]:
    """{case: {"prompt", "extra_data"}}: every shipped workflow with DEMO_OVERRIDES and IMAGE dumps, then a
    long text-to-video run to interrupt (and rerun) and one with a width the pack rejects."""
    cases = {}
    for path in workflow_paths():
        name = os.path.basename(path)[: -len(".json")]
        workflow = load_workflow(path)
        prompt = add_image_dumps(demo_prompt(workflow, info), info, pack_nodes, name)
        cases[name] = {"prompt": prompt, "extra_data": {"extra_pnginfo": {"workflow": workflow}}}
    t2v = cases["easyanimate_t2v"]["prompt"]
    cases[INTERRUPT_CASE] = {"prompt": _with_sampler(t2v, INTERRUPT_CASE, steps=60, seed=7), "extra_data": {}}
    cases[BAD_INPUT_CASE] = {"prompt": _with_sampler(t2v, BAD_INPUT_CASE, width=65, seed=8), "extra_data": {}}
    oom = _with_sampler(t2v, OOM_CASE, seed=9)
    sampler = oom[node_of_type(oom, SAMPLER)]["inputs"]
    oom["oom"] = {"class_type": OOM_NODE, "inputs": {"model": sampler["model"]}}
    sampler["model"] = ["oom", 0]
    cases[OOM_CASE] = {"prompt": oom, "extra_data": {}}
    return cases


def node_of_type(prompt: dict, class_type: str) -> str:
    return next(node_id for node_id, entry in prompt.items() if entry["class_type"] == class_type)


# ---- comparisons ---------------------------------------------------------------------------------------------


def compare_object_info(harness: dict, server: dict, pack_nodes) -> tuple[list[str], set[str]]:
    """Differences between the harness's and the server's /object_info for the pack's nodes -> (differences,
    keys ignored because the server emits them for no node at all)."""
    harness = json.loads(json.dumps({name: harness[name] for name in pack_nodes if name in harness}))  # as served
    emitted = {key for entry in server.values() for key in entry}
    ignored, diffs = set(), []
    for name in sorted(pack_nodes):
        if name not in server:
            diffs.append(f"{name}: missing on the server")
            continue
        if name not in harness:
            diffs.append(f"{name}: missing in the harness")
            continue
        for key in sorted(set(harness[name]) | set(server[name])):
            if key not in emitted:
                ignored.add(key)
                continue
            mine, theirs = harness[name].get(key, "<absent>"), server[name].get(key, "<absent>")
            if mine != theirs:
                diffs.append(f"{name}.{key}: harness {json.dumps(mine)[:200]} != server {json.dumps(theirs)[:200]}")
    module = f"custom_nodes.{PACK_FOLDER}"
    for name, entry in sorted(server.items()):
        if entry.get("python_module") == module and name not in pack_nodes:
            diffs.append(f"{name}: only on the server")
    return diffs, ignored


def compare_dumps(harness_dir: str, server_dir: str, tag: str) -> list[str]:
    """torch.equal of every dumped tensor of case `tag` -> problems (empty when all are equal)."""
    import torch

    def names(folder):
        return {f for f in os.listdir(folder) if f.startswith(tag + "__")} if os.path.isdir(folder) else set()

    mine, theirs = names(harness_dir), names(server_dir)
    problems = [f"{f}: not dumped by the server" for f in sorted(mine - theirs)]
    problems += [f"{f}: not dumped by the harness" for f in sorted(theirs - mine)]
    if not mine:
        problems.append(f"{tag}: nothing dumped by the harness")
    for f in sorted(mine & theirs):
        a = torch.load(os.path.join(harness_dir, f), weights_only=True)
        b = torch.load(os.path.join(server_dir, f), weights_only=True)
        if a.shape != b.shape or a.dtype != b.dtype:
            problems.append(f"{f}: {tuple(a.shape)} {a.dtype} != {tuple(b.shape)} {b.dtype}")
        elif not torch.equal(a, b):
            problems.append(f"{f}: values differ, max abs {(a.double() - b.double()).abs().max().item():.3g}")
    return problems


def saved_files(outputs: dict) -> list[tuple[str, str]]:
    """(subfolder, filename) of every file the output nodes saved to the output folder (UI outputs or a
    /history entry's "outputs")."""
    files = []
    for ui in outputs.values():
        for items in ui.values():
            for item in items if isinstance(items, list) else ():
                if isinstance(item, dict) and "filename" in item and item.get("type", "output") == "output":
                    files.append((item.get("subfolder", ""), item["filename"]))
    return sorted(files)


def compare_saved(harness_out: str, harness_files, server_out: str, server_files) -> tuple[list[str], int]:
    """WEBP files byte for byte (others are listed, not compared) -> (problems, number of files compared)."""
    if list(harness_files) != list(server_files):
        return [f"saved files differ: harness {list(harness_files)} != server {list(server_files)}"], 0
    problems, compared = [], 0
    for subfolder, filename in harness_files:
        if not filename.lower().endswith(".webp"):
            continue
        with open(os.path.join(harness_out, subfolder, filename), "rb") as f:
            mine = f.read()
        with open(os.path.join(server_out, subfolder, filename), "rb") as f:
            theirs = f.read()
        compared += 1
        if mine != theirs:
            problems.append(f"{filename}: bytes differ ({len(mine)} vs {len(theirs)} bytes)")
    return problems, compared


# ---- summary -------------------------------------------------------------------------------------------------


def row(check: str, problems: list[str], ok_detail: str = "", most: int = 8) -> tuple[str, str, str]:
    """A summary row: ("ok", ok_detail) without problems, else ("FAIL", the first `most` problems)."""
    more = [f"... {len(problems) - most} more"] if len(problems) > most else []
    return (check, "FAIL", "; ".join(problems[:most] + more)) if problems else (check, "ok", ok_detail)


def format_summary(rows) -> str:
    width = max([len("check")] + [len(r[0]) for r in rows])
    lines = [f"{'check':<{width}}  result  detail", f"{'-' * width}  ------  ------"]
    lines += [f"{check:<{width}}  {status:<6}  {detail}" for check, status, detail in rows]
    failed = sum(status == "FAIL" for _, status, _ in rows)
    lines.append(f"{len(rows) - failed}/{len(rows)} checks ok" + (f", {failed} FAILED" if failed else ""))
    return "\n".join(lines)


def exit_code(rows) -> int:
    return 1 if not rows or any(status == "FAIL" for _, status, _ in rows) else 0


# ---- the harness side ----------------------------------------------------------------------------------------


def write_dump_node(custom_nodes: str) -> str:
    os.makedirs(custom_nodes, exist_ok=True)
    path = os.path.join(custom_nodes, DUMP_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(DUMP_SOURCE)
    return path


def link_pack(custom_nodes: str) -> str:
    os.makedirs(custom_nodes, exist_ok=True)
    path = os.path.join(custom_nodes, PACK_FOLDER)
    if not os.path.lexists(path):
        os.symlink(REPO_DIR, path, target_is_directory=True)
    return path


def run_harness(models: str, inputs: str, output: str, custom_nodes: str, only=None) -> dict:
    """Loads the pack (as custom_nodes/comfyui-easyanimate) and the dump node into the fake ComfyUI, builds
    the cases and runs them (those named in `only`, if given) -> {"object_info", "pack_nodes", "cases",
    "results"}; results[case] is {"files": [(subfolder, filename)]} or {"error": execution_error details}."""
    from . import NodeExecutionError, PromptExecutor, install_fake_comfy, load_pack, object_info

    with install_fake_comfy(models, inputs, output, os.path.join(os.path.dirname(output), "harness_temp")):
        pack = load_pack(REPO_DIR, custom_nodes, folder_name=PACK_FOLDER)
        nodes = sys.modules["nodes"]
        nodes.load_custom_node(write_dump_node(custom_nodes), set(nodes.NODE_CLASS_MAPPINGS), raise_errors=True)
        info = object_info()
        pack_nodes = set(pack.node_class_mappings)
        cases = {k: v for k, v in build_cases(info, pack_nodes).items() if only is None or k in only}
        executor, results = PromptExecutor(), {}
        for name, case in cases.items():
            try:
                result = executor.execute(copy.deepcopy(case["prompt"]), extra_data=copy.deepcopy(case["extra_data"]))
                results[name] = {"files": saved_files(result.outputs)}
            except NodeExecutionError as error:
                keys = ("node_id", "exception_type", "exception_message")
                results[name] = {"error": {"node_type": error.class_type, **{k: error.details[k] for k in keys}}}
    return {
        "object_info": {k: v for k, v in info.items() if k in pack_nodes},
        "pack_nodes": pack_nodes,
        "cases": cases,
        "results": results,
    }


# ---- the server side -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ComfyUI main.py on 127.0.0.1 with --base-directory `base`; its log goes to `log_path`."""

    def __init__(self, comfyui: str, python: str, port: int, base: str, log_path: str):
        self.url = f"http://127.0.0.1:{port}"
        self.cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", base]
        self.comfyui, self.log_path, self.process = comfyui, log_path, None

    def start(self, timeout: float = 600) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.cmd, cwd=self.comfyui, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}; its log ends:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                self.get("/system_stats", timeout=2)
                return
            time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s; its log ends:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        """The log's last lines (the work folder, log included, is gone after a run without --out)."""
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def request(self, path: str, body=None, timeout: float = 30):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def get(self, path: str, timeout: float = 30):
        status, body = self.request(path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}")
        return body

    def queue(self, case: dict, client_id: str | None = None) -> str:
        body = {"prompt": case["prompt"], "client_id": client_id or uuid.uuid4().hex, "extra_data": case["extra_data"]}
        status, answer = self.request("/prompt", body)
        if status != 200:
            raise RuntimeError(f"POST /prompt: HTTP {status} {json.dumps(answer)[:500]}")
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 1800) -> dict:
        """The prompt's /history entry once it is there."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                return entry
            time.sleep(0.2)
        raise RuntimeError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def run(self, case: dict) -> dict:
        return self.wait(self.queue(case))

    def run_interrupted(self, case: dict, at_step: int = 2) -> dict:
        """Queues `case`, POSTs /interrupt once the sampler reports step `at_step` (or a later one: progress
        messages are throttled) on /ws -> /history entry."""
        import asyncio

        import aiohttp

        sampler = node_of_type(case["prompt"], SAMPLER)

        async def go():
            client_id = uuid.uuid4().hex
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(f"{self.url}/ws?clientId={client_id}") as ws,
            ):
                prompt_id = await asyncio.to_thread(self.queue, case, client_id)
                while True:
                    message = await ws.receive(timeout=600)
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(message.data)
                    data = event.get("data", {})
                    if event["type"] == "progress" and data.get("node") == sampler and data.get("value", 0) >= at_step:
                        await session.post(f"{self.url}/interrupt")
                        return prompt_id
                    if event["type"] in TERMINAL and data.get("prompt_id") == prompt_id:
                        return prompt_id  # finished before the step: history_outcome tells

        return self.wait(asyncio.run(go()))


def history_outcome(entry: dict) -> tuple[str, dict]:
    """(status_str, data of the execution_error / execution_interrupted message, if any) of a /history entry."""
    status = entry.get("status", {})
    for kind, data in status.get("messages", []):
        if kind in ("execution_error", "execution_interrupted"):
            return kind, data
    return status.get("status_str", "?"), {}


# ---- the check -----------------------------------------------------------------------------------------------


def check(comfyui: str, python: str, port: int, work: str, rows: list) -> list[tuple[str, str, str]]:
    """Runs the harness, then the server, appending summary rows to `rows` as the checks go (returned)."""
    from .run_workflows import write_inputs, write_tiny_models

    base = os.path.join(work, "comfyui")  # the server's --base-directory
    models, inputs, custom_nodes = (os.path.join(base, d) for d in ("models", "input", "custom_nodes"))
    harness_out, server_out = os.path.join(work, "harness_output"), os.path.join(base, "output")
    for folder in (harness_out, server_out, custom_nodes):
        shutil.rmtree(folder, ignore_errors=True)  # fresh counters for the saved files' names
    write_tiny_models(models, DEMO_CHECKPOINTS)
    write_inputs(inputs)
    try:
        with tempfile.TemporaryDirectory() as harness_nodes:
            print("running the harness ...", flush=True)
            harness = run_harness(models, inputs, harness_out, harness_nodes)
        link_pack(custom_nodes)
        write_dump_node(custom_nodes)
        server = Server(comfyui, python, port, base, os.path.join(work, "server.log"))
        print(f"starting {' '.join(server.cmd)} (log: {server.log_path}) ...", flush=True)
        try:
            server.start()
            server_checks(server, harness, harness_out, server_out, rows)
        finally:
            server.stop()
    finally:
        shutil.rmtree(custom_nodes, ignore_errors=True)  # the pack's link and the dump node
    return rows


def server_checks(server: Server, harness: dict, harness_out: str, server_out: str, rows: list) -> None:
    diffs, ignored = compare_object_info(harness["object_info"], server.get("/object_info"), harness["pack_nodes"])
    note = f"{len(harness['pack_nodes'])} nodes equal" + (
        f"; ignored (not emitted): {', '.join(sorted(ignored))}" if ignored else ""
    )
    rows.append(row("object_info", diffs, note))
    cases, results = harness["cases"], harness["results"]
    dumps_h, dumps_s = os.path.join(harness_out, DUMP_SUBFOLDER), os.path.join(server_out, DUMP_SUBFOLDER)
    for name, case in cases.items():
        if name in (INTERRUPT_CASE, BAD_INPUT_CASE, OOM_CASE):
            continue
        print(f"  {name} ...", flush=True)
        rows.append(compare_run(name, server.run(case), results[name], harness_out, server_out, dumps_h, dumps_s))
    for case, label in ((BAD_INPUT_CASE, "bad input"), (OOM_CASE, "out of memory")):
        print(f"  {case} ...", flush=True)
        rows.append(error_check(server, cases, results, case, label))
    print(f"  {INTERRUPT_CASE} ...", flush=True)
    kind, data = history_outcome(server.run_interrupted(cases[INTERRUPT_CASE]))
    interrupted = [] if kind == "execution_interrupted" else [f"expected execution_interrupted, got {kind} {data}"]
    rows.append(row("interrupt", interrupted, f"interrupted at node {data.get('node_id')} ({data.get('node_type')})"))
    rerun = server.run(cases[INTERRUPT_CASE])
    rows.append(
        compare_run(
            "interrupt: rerun",
            rerun,
            results[INTERRUPT_CASE],
            harness_out,
            server_out,
            dumps_h,
            dumps_s,
            INTERRUPT_CASE,
        )
    )


def compare_run(check_name, entry, expected, harness_out, server_out, dumps_h, dumps_s, tag=None):
    kind, data = history_outcome(entry)
    if kind != "success" or "error" in expected:
        return row(
            check_name,
            [f"server {kind} {data.get('exception_message', '')!r}; harness {expected.get('error', 'success')}"],
        )
    tag = tag or check_name
    problems = compare_dumps(dumps_h, dumps_s, tag)
    dumped = len([f for f in os.listdir(dumps_h) if f.startswith(tag + "__")]) if os.path.isdir(dumps_h) else 0
    files = [f for f in saved_files(entry.get("outputs", {})) if f[0] != DUMP_SUBFOLDER]
    file_problems, compared = compare_saved(harness_out, expected["files"], server_out, files)
    others = [f for _, f in files if not f.lower().endswith(".webp")]  # MP4: encoders differ (see the top)
    detail = f"{dumped} IMAGE equal; {compared} WEBP byte-identical"
    detail += f"; not compared: {', '.join(others)}" if others else ""
    return row(check_name, problems + file_problems, detail)


def error_check(server: Server, cases: dict, results: dict, case: str, label: str) -> tuple[str, str, str]:
    """`case` fails on the server as in the harness (same node, exception type and message, ComfyUI's own tips
    included), and the server runs the next prompt."""
    expected = results[case].get("error")
    kind, data = history_outcome(server.run(cases[case]))
    problems = []
    if expected is None:
        problems.append(f"the harness ran the {label} case without an error")
    elif kind != "execution_error":
        problems.append(f"expected execution_error, got {kind}")
    else:
        for key in ("node_type", "exception_type", "exception_message"):
            if data.get(key) != expected.get(key):
                problems.append(f"{key}: server {data.get(key)!r} != harness {expected.get(key)!r}")
    again = history_outcome(server.run(cases["easyanimate_t2v"]))[0]  # the server keeps serving
    if again != "success":
        problems.append(f"the next prompt: {again}")
    message = (data.get("exception_message") or "").strip().splitlines()
    return row(label, problems, f"{data.get('exception_type')}: {message[0][:100] if message else ''}; next prompt ok")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.comfy_host.real_server",
        description="Run the shipped workflows on a real ComfyUI server and compare with the harness.",
    )
    parser.add_argument("--comfyui", required=True, help="the ComfyUI checkout (the folder with main.py)")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs main.py (default: this one)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--out", help="work folder to keep (models, inputs, outputs, server.log); default: temporary")
    args = parser.parse_args(argv)
    comfyui = os.path.abspath(args.comfyui)
    if not os.path.isfile(os.path.join(comfyui, "main.py")):
        parser.error(f"no main.py in {comfyui}")
    with contextlib.ExitStack() as stack:
        work = os.path.abspath(args.out) if args.out else stack.enter_context(tempfile.TemporaryDirectory())
        os.makedirs(work, exist_ok=True)
        python = shutil.which(args.python) or os.path.abspath(args.python)  # main.py runs in the ComfyUI folder
        rows = []
        try:
            check(comfyui, python, args.port or free_port(), work, rows)
        except Exception as error:  # noqa: BLE001 - reported in the table, and the exit code says it
            rows.append(("run", "FAIL", f"{type(error).__name__}: {error}"))
        print(format_summary(rows))
        return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
