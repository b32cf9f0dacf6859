import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@pytest.fixture
def every_progress_event(monkeypatch):
    """ComfyUI's ProgressBar sends an update only 0.1 s and 0.5 % after the last one it sent (the first, the last
    and those with a preview at once), and so does the harness's; tests that check every update the pack reports
    turn that throttle off (test_comfy_host checks the throttled messages and Cancel under the throttle)."""
    import comfy.utils

    monkeypatch.setattr(comfy.utils, "PROGRESS_THROTTLE_MIN_INTERVAL", 0.0)
    monkeypatch.setattr(comfy.utils, "PROGRESS_THROTTLE_MIN_PERCENT", 0.0)
