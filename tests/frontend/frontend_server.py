"""Serve the real ComfyUI frontend (the `comfyui-frontend-package` wheel) against this pack in the fake host.

    python tests/frontend/frontend_server.py ROOT [--port 0] [--pack-name ComfyUI-EasyAnimate]

ROOT receives tiny checkpoints (models/), example inputs (input/), output/, temp/ and the user folder
(user/default/), so the loaders' combos list real entries. The server prints one line,
``listening on http://127.0.0.1:PORT``, once it accepts connections.

The routes follow ComfyUI's `server.py` (`PromptServer.__init__` and `add_routes`, which serves every API
route both bare and under `/api`; the frontend calls the `/api/...` form), `app/user_manager.py` (users,
userdata), `app/app_settings.py` (settings) and `comfy_api/feature_flags.py`. Nothing here executes a
prompt: POST /prompt only records what the browser queued. Every request is recorded; those nobody
answers are logged as UNANSWERED and get a 404 JSON body, and `GET /__harness__/requests` returns the
record for the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import importlib.resources
import json
import logging
import mimetypes
import os
import sys
import tempfile
import time
import urllib.parse
import uuid

from aiohttp import WSMsgType, web

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.dirname(HERE)
REPO_DIR = os.path.dirname(TESTS_DIR)
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

log = logging.getLogger("EasyAnimate.frontend_server")

FRONTEND_VERSION = "1.58.1"  # requirements-dev.txt pins the same comfyui-frontend-package
COMFYUI_VERSION = "0.8.2"  # what /system_stats reports; any release that wants this frontend
# Settings a returning user would have; they keep first-run UI (template browser, tours) off the canvas.
DEFAULT_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.InstalledVersion": FRONTEND_VERSION,
}
HARNESS_PREFIX = "/__harness__"


def frontend_root() -> str:
    """The built frontend inside the installed `comfyui_frontend_package` (what FrontendManager serves)."""
    return str(importlib.resources.files("comfyui_frontend_package") / "static")


class State:
    """Everything the routes share: folders, /object_info, the request record and the queued prompts."""

    def __init__(self, root: str, object_info: dict, web_dirs: dict[str, str]):
        self.root = root
        self.object_info = object_info
        self.web_dirs = web_dirs  # pack folder name -> its WEB_DIRECTORY (nodes.EXTENSION_WEB_DIRS)
        self.user_dir = os.path.join(root, "user", "default")
        self.requests: list[dict] = []
        self.prompts: list[dict] = []
        os.makedirs(os.path.join(self.user_dir, "workflows"), exist_ok=True)
        settings = os.path.join(self.user_dir, "comfy.settings.json")
        if not os.path.exists(settings):
            self.write_settings(DEFAULT_SETTINGS)

    def folder(self, kind: str | None) -> str | None:
        kind = kind or "output"
        return os.path.join(self.root, kind) if kind in ("input", "output", "temp") else None

    def settings(self) -> dict:
        with open(os.path.join(self.user_dir, "comfy.settings.json"), encoding="utf-8") as f:
            return json.load(f)

    def write_settings(self, settings: dict) -> None:
        with open(os.path.join(self.user_dir, "comfy.settings.json"), "w", encoding="utf-8") as f:
            json.dump(settings, f, indent=4)

    def user_path(self, relative: str) -> str | None:
        """A path inside the user folder, or None if `relative` escapes it (user_manager's check)."""
        path = os.path.abspath(os.path.join(self.user_dir, relative))
        return path if os.path.commonpath((path, os.path.abspath(self.user_dir))) == self.user_dir else None


def _queue_info() -> dict:
    return {"exec_info": {"queue_remaining": 0}}


def api_routes(state: State) -> web.RouteTableDef:
    """ComfyUI's API routes the frontend uses, with the answers an idle ComfyUI on CPU gives."""
    routes = web.RouteTableDef()

    @routes.get("/ws")
    async def websocket(request):
        # server.py websocket_handler: reuse or make a sid, send "status" with it, then answer the
        # client's "feature_flags" message with the server's flags.
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "") or uuid.uuid4().hex
        await ws.send_json({"type": "status", "data": {"status": _queue_info(), "sid": sid}})
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            with contextlib.suppress(ValueError):
                if json.loads(message.data).get("type") == "feature_flags":
                    await ws.send_json({"type": "feature_flags", "data": feature_flags()})
        return ws

    @routes.get("/embeddings")
    async def embeddings(request):
        return web.json_response([])

    @routes.get("/models")
    async def model_types(request):
        return web.json_response(sorted(os.listdir(os.path.join(state.root, "models"))))

    @routes.get("/experiment/models")
    async def model_folders(request):
        folders = sorted(os.listdir(os.path.join(state.root, "models")))
        return web.json_response([{"name": n, "folders": [os.path.join(state.root, "models", n)]} for n in folders])

    @routes.get("/extensions")
    async def extensions(request):
        # The frontend's own extensions/ folder, then each pack's WEB_DIRECTORY under /extensions/<name>/.
        root = frontend_root()
        files = glob.glob(os.path.join(glob.escape(root), "extensions/**/*.js"), recursive=True)
        found = ["/" + os.path.relpath(f, root).replace("\\", "/") for f in files]
        for name, folder in state.web_dirs.items():
            files = glob.glob(os.path.join(glob.escape(folder), "**/*.js"), recursive=True)
            quoted = urllib.parse.quote(name)
            found += [f"/extensions/{quoted}/" + os.path.relpath(f, folder).replace("\\", "/") for f in files]
        return web.json_response(found)

    @routes.get("/view")
    async def view(request):
        query = request.rel_url.query
        filename = query.get("filename", "")
        folder = state.folder(query.get("type", "output"))
        if not filename or filename[0] == "/" or ".." in filename or folder is None:
            return web.Response(status=400)
        base = os.path.abspath(os.path.join(folder, query.get("subfolder", "")))
        if os.path.commonpath((base, os.path.abspath(folder))) != os.path.abspath(folder):
            return web.Response(status=403)
        path = os.path.join(base, os.path.basename(filename))
        return web.FileResponse(path) if os.path.isfile(path) else web.Response(status=404)

    @routes.get("/system_stats")
    async def system_stats(request):
        import platform

        import torch

        return web.json_response(
            {
                "system": {
                    "os": os.name,
                    "ram_total": 0,
                    "ram_free": 0,
                    "comfyui_version": COMFYUI_VERSION,
                    "required_frontend_version": FRONTEND_VERSION,
                    "python_version": sys.version,
                    "pytorch_version": torch.__version__,
                    "embedded_python": False,
                    # --disable-api-nodes: an offline ComfyUI; the frontend then skips api.comfy.org (releases)
                    "argv": ["main.py", "--cpu", "--disable-api-nodes"],
                },
                "devices": [
                    {
                        "name": "cpu",
                        "type": "cpu",
                        "index": None,
                        "vram_total": 0,
                        "vram_free": 0,
                        "torch_vram_total": 0,
                        "torch_vram_free": 0,
                    }
                ],
                "platform": platform.system(),
            }
        )

    @routes.get("/features")
    async def features(request):
        return web.json_response(feature_flags())

    @routes.get("/prompt")
    async def prompt_info(request):
        return web.json_response(_queue_info())

    @routes.post("/prompt")
    async def queue_prompt(request):
        body = await request.json()
        state.prompts.append(body)
        prompt_id = str(uuid.uuid4())
        return web.json_response({"prompt_id": prompt_id, "number": len(state.prompts), "node_errors": {}})

    @routes.get("/object_info")
    async def object_info(request):
        return web.json_response(state.object_info)

    @routes.get("/object_info/{node_class}")
    async def object_info_one(request):
        name = request.match_info["node_class"]
        return web.json_response({name: state.object_info[name]} if name in state.object_info else {})

    @routes.get("/jobs")
    async def jobs(request):  # comfy_execution/jobs.py: nothing queued, nothing run
        query = request.rel_url.query
        offset, limit = int(query.get("offset", 0)), int(query.get("limit", 200))
        return web.json_response(
            {"jobs": [], "pagination": {"offset": offset, "limit": limit, "total": 0, "has_more": False}}
        )

    @routes.get("/history")
    async def history(request):
        return web.json_response({})

    @routes.get("/queue")
    async def queue(request):
        return web.json_response({"queue_running": [], "queue_pending": []})

    for path in ("/queue", "/history", "/interrupt", "/free"):

        @routes.post(path)
        async def accept(request):
            return web.Response(status=200)

    @routes.get("/i18n")
    async def i18n(request):  # custom node translations (app/custom_node_manager.py): this pack ships none
        return web.json_response({})

    @routes.get("/workflow_templates")
    async def workflow_templates(request):  # custom nodes' example_workflows/ folders: none here
        return web.json_response({})

    @routes.get("/global_subgraphs")
    async def global_subgraphs(request):
        return web.json_response({})

    @routes.get("/node_replacements")
    async def node_replacements(request):
        return web.json_response({})

    # ---- app/user_manager.py (single user "default") and app/app_settings.py ---------------------------

    @routes.get("/users")
    async def users(request):
        return web.json_response({"storage": "server", "migrated": True})

    @routes.get("/settings")
    async def get_settings(request):
        return web.json_response(state.settings())

    @routes.get("/settings/{id}")
    async def get_setting(request):
        return web.json_response(state.settings().get(request.match_info["id"]))

    @routes.post("/settings")
    async def post_settings(request):
        settings = state.settings()
        settings.update(await request.json())
        state.write_settings(settings)
        return web.Response(status=200)

    @routes.post("/settings/{id}")
    async def post_setting(request):
        settings = state.settings()
        settings[request.match_info["id"]] = await request.json()
        state.write_settings(settings)
        return web.Response(status=200)

    @routes.get("/userdata")
    async def list_userdata(request):
        query = request.rel_url.query
        base = state.user_path(query.get("dir", ""))
        if not query.get("dir") or base is None:
            return web.Response(status=403)
        if not os.path.isdir(base):
            return web.Response(status=404)
        recurse = query.get("recurse") == "true"
        pattern = os.path.join(glob.escape(base), "**" if recurse else "", "*")
        files = sorted(os.path.relpath(f, base).replace("\\", "/") for f in glob.glob(pattern, recursive=recurse))
        files = [f for f in files if os.path.isfile(os.path.join(base, f))]
        if query.get("full_info") == "true":
            return web.json_response([_file_info(os.path.join(base, f), f) for f in files])
        if query.get("split") == "true":
            return web.json_response([[f, *f.split("/")] for f in files])
        return web.json_response(files)

    @routes.get("/v2/userdata")
    async def list_userdata_v2(request):
        relative = request.rel_url.query.get("path", "").strip("/")
        base = state.user_path(relative)
        if base is None or not os.path.isdir(base):
            return web.Response(status=404)
        entries = []
        for name in sorted(os.listdir(base)):
            path = os.path.join(base, name)
            rel = f"{relative}/{name}" if relative else name
            if os.path.isdir(path):
                entries.append({"name": name, "path": rel, "type": "directory"})
            else:
                entries.append({**_file_info(path, rel), "name": name, "type": "file"})
        return web.json_response(entries)

    @routes.get("/userdata/{file}")
    async def get_userdata(request):
        path = state.user_path(request.match_info["file"])
        if path is None:
            return web.Response(status=403)
        return web.FileResponse(path) if os.path.isfile(path) else web.Response(status=404)

    @routes.post("/userdata/{file}")
    async def post_userdata(request):
        relative = request.match_info["file"]
        path = state.user_path(relative)
        if path is None:
            return web.Response(status=403)
        if os.path.exists(path) and request.rel_url.query.get("overwrite") == "false":
            return web.Response(status=409, text="File already exists")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(await request.read())
        if request.rel_url.query.get("full_info") == "true":
            return web.json_response(_file_info(path, relative))
        return web.json_response(relative)

    @routes.delete("/userdata/{file}")
    async def delete_userdata(request):
        path = state.user_path(request.match_info["file"])
        if path is None or not os.path.isfile(path):
            return web.Response(status=404)
        os.remove(path)
        return web.Response(status=204)

    return routes


def _file_info(path: str, relative: str) -> dict:
    return {"path": relative, "size": os.path.getsize(path), "modified": os.path.getmtime(path)}


def feature_flags() -> dict:
    """comfy_api/feature_flags.py SERVER_FEATURE_FLAGS."""
    return {"supports_preview_metadata": True, "max_upload_size": 100 * 1024 * 1024, "extension": {"manager": {}}}


def harness_routes(state: State) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get(HARNESS_PREFIX + "/requests")
    async def requests(request):
        return web.json_response(state.requests)

    @routes.get(HARNESS_PREFIX + "/prompts")
    async def prompts(request):
        return web.json_response(state.prompts)

    return routes


def make_app(state: State) -> web.Application:
    @web.middleware
    async def record(request: web.Request, handler):
        entry = {"method": request.method, "path": request.path, "query": request.query_string}
        if not request.path.startswith(HARNESS_PREFIX):
            state.requests.append(entry)
        try:
            response = await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):  # no route, or no such static file
            response = None
        if response is None:
            log.warning("UNANSWERED %s %s?%s", request.method, request.path, request.query_string)
            entry["unanswered"] = True
            response = web.json_response({"error": "not found", "path": request.path}, status=404)
        entry["status"] = response.status
        if request.path.endswith((".js", ".css")):
            response.headers.setdefault("Cache-Control", "no-cache")  # server.py cache_control
        return response

    app = web.Application(middlewares=[record], client_max_size=100 * 1024 * 1024)
    api = api_routes(state)
    app.add_routes(harness_routes(state))
    app.add_routes(api)
    # add_routes(): every API route is served again under /api, which is what the frontend calls.
    prefixed = web.RouteTableDef()
    for route in api:
        if isinstance(route, web.RouteDef):
            prefixed.route(route.method, "/api" + route.path)(route.handler)
    app.add_routes(prefixed)

    root = frontend_root()

    async def index(request):
        return web.FileResponse(os.path.join(root, "index.html"), headers={"Cache-Control": "no-cache"})

    app.router.add_get("/", index)
    # Static files, as server.py's web.static routes: each pack's web folder, then the frontend.
    for name, folder in state.web_dirs.items():
        app.router.add_get(f"/extensions/{urllib.parse.quote(name)}/{{path:.*}}", static_handler(folder))
    app.router.add_get("/{path:.*}", static_handler(root))
    return app


def static_handler(folder: str):
    """GET handler for files under `folder`; a missing file is left unanswered (None)."""
    folder = os.path.abspath(folder)

    async def handler(request):
        path = os.path.abspath(os.path.join(folder, request.match_info["path"]))
        if os.path.commonpath((path, folder)) != folder or not os.path.isfile(path):
            return None
        return web.FileResponse(path)

    return handler


def prepare(root: str, pack_name: str) -> tuple[dict, dict[str, str], contextlib.ExitStack]:
    """Tiny models and inputs under `root`, the fake ComfyUI with the pack loaded -> (object_info, web dirs,
    the stack that keeps the fake installed)."""
    from comfy_host import install_fake_comfy, load_pack, object_info
    from comfy_host.run_workflows import DEMO_CHECKPOINTS, write_inputs, write_tiny_models

    models, inputs = os.path.join(root, "models"), os.path.join(root, "input")
    write_tiny_models(models, DEMO_CHECKPOINTS)
    if not os.path.isdir(inputs) or not os.listdir(inputs):
        write_inputs(inputs)
    stack = contextlib.ExitStack()
    fake = stack.enter_context(
        install_fake_comfy(models, inputs, os.path.join(root, "output"), os.path.join(root, "temp"))
    )
    custom_nodes = stack.enter_context(tempfile.TemporaryDirectory())
    load_pack(REPO_DIR, custom_nodes, folder_name=pack_name)
    web_dirs = dict(fake.nodes.EXTENSION_WEB_DIRS)
    return object_info(), web_dirs, stack


async def serve(root: str, port: int, pack_name: str) -> None:
    started = time.monotonic()
    info, web_dirs, stack = prepare(root, pack_name)
    with stack:
        state = State(root, info, web_dirs)
        runner = web.AppRunner(make_app(state), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        actual = site._server.sockets[0].getsockname()[1]
        log.info("ready in %.1fs: %d node types, extensions %s", time.monotonic() - started, len(info), web_dirs)
        print(f"listening on http://127.0.0.1:{actual}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="folder for models, inputs, outputs and the user folder")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--pack-name", default="ComfyUI-EasyAnimate", help="the pack's folder under custom_nodes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[server] %(levelname)s %(message)s", stream=sys.stderr)
    mimetypes.add_type("application/javascript", ".js")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(os.path.abspath(args.root), args.port, args.pack_name))


if __name__ == "__main__":
    main()
