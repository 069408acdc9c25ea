"""Helpers shared by test modules: plain functions and constants, never tests or fixtures (fixtures
live in the conftest.py of the folder whose tests use them). A test imports from here, never from
another test module (docs/testing.md)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the checkout: tests/helpers/__init__.py -> the repository root
