"""The long-running HTTP host: launch pages, the /build stream and the session proxy."""

from .app import create_app

__all__ = ["create_app"]
