"""Run the app on a loopback port in a background thread for the duration of a test."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import uvicorn

from entrodec.serve import Limits, create_app


@contextmanager
def running_server(model, tokenizer, api_key: str | None = None, name: str = "test-model", **limits):
    """Yield the base URL (``http://127.0.0.1:PORT``) of a server for ``model``; stop it afterwards."""
    app = create_app(model, tokenizer, name=name, api_key=api_key, limits=Limits(**limits))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)
