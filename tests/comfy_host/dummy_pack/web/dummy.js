// Served by ComfyUI from WEB_DIRECTORY; the harness only checks that the folder is found.
