"""entrodec.serve: an OpenAI-compatible HTTP server with continuous batching.

``entrodec serve`` runs it; :func:`create_app` builds the FastAPI app for a loaded model (tests, or an
ASGI server of your own). Needs the ``serve`` extra: ``pip install 'entrodec[serve]'``.
"""

from .app import Limits, create_app
from .engine import Engine, Job, JobEnd, QueueFull, TokenEvent

__all__ = ["create_app", "Limits", "Engine", "Job", "JobEnd", "TokenEvent", "QueueFull"]
