"""Leaderboard: submission entries, validation, and the generated tables and page."""

from __future__ import annotations

from .build import build_leaderboard, differences, render_leaderboard
from .markdown import render_markdown_table
from .problems import Problem
from .submit import submit, submit_run
from .validate import validate_submissions

__all__ = [
    "Problem",
    "build_leaderboard",
    "differences",
    "render_leaderboard",
    "render_markdown_table",
    "submit",
    "submit_run",
    "validate_submissions",
]
