"""Jinja prompt templates for the LLM stages, shipped inside the package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["render"]

_DIR = Path(__file__).resolve().parent


def render(name: str, **context: Any) -> str:
    """Render the template ``name`` from this folder with ``context``."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    environment = Environment(
        loader=FileSystemLoader(_DIR),
        undefined=StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )
    return environment.get_template(name).render(**context).strip()
