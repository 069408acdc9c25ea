"""Fixtures of the server's tests: the page's server settings (the shared res-2 index, the tiny
random CLIP) and its app. A module that needs other limits defines its own ``settings``
(test_serve.py, test_serve_hardening.py), which the ``app`` here then uses."""

import pytest

from geoindex.serve.app import create_app
from geoindex.serve.settings import ServeSettings


@pytest.fixture(scope="module")
def settings(built_r2):
    return ServeSettings(index=str(built_r2), clip_model="tiny-test")


@pytest.fixture(scope="module")
def app(settings):
    return create_app(settings)
