"""Generation for the server: the client interface (client.py), one request's reply (rows.py), the
batch's cache slots (slots.py), the prefix cache (prefix_cache.py), continuous batching
(scheduler.py) and the engine in a process of its own (process.py)."""

from fcmistral.serving.engine.client import EngineClient, GenerationRequest, Update
from fcmistral.serving.engine.scheduler import BatchingEngine

__all__ = ["BatchingEngine", "EngineClient", "GenerationRequest", "Update"]
