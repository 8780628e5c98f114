"""`maxcli serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) around the continuous-batching engine."""

from maxcli.serve.app import create_app, run_server
from maxcli.serve.state import ServerSettings

__all__ = ["ServerSettings", "create_app", "run_server"]
