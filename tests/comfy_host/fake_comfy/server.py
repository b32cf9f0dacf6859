"""Stand-in for ComfyUI's `server.py`: a PromptServer whose `send_sync` records every message."""


class BinaryEventTypes:
    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


class _Routes:
    """Accepts `@PromptServer.instance.routes.get(...)` decorators the way aiohttp's RouteTableDef does."""

    def __init__(self):
        self.registered: list[tuple[str, str, object]] = []

    def _add(self, method):
        def decorator_for(path, **kwargs):
            def decorator(handler):
                self.registered.append((method, path, handler))
                return handler

            return decorator

        return decorator_for

    def __getattr__(self, method):
        if method in ("get", "post", "put", "patch", "delete"):
            return self._add(method.upper())
        raise AttributeError(method)


class PromptServer:
    instance: "PromptServer"

    def __init__(self):
        PromptServer.instance = self
        self.client_id = "harness"
        self.last_node_id = None
        self.last_prompt_id = None
        self.messages: list[tuple[object, object, object]] = []
        self.routes = _Routes()

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data, sid))

    def queue_updated(self):
        pass
