"""The Typer app: one plain function per command over the library."""

from .app import app, main

__all__ = ["app", "main"]
