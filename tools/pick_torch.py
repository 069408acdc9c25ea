"""Print the pip requirements for torch and torchvision that this machine should install.

Used by the Makefile before ``pip install -e .``, so that a machine's own torch wins over a
download (on a CPU machine the registry's newest torch is a CUDA build that pulls several GB of
CUDA packages):

1. torch already installed in this interpreter: keep it, and add the torchvision built for it;
2. else a torch wheel that pip can install without an index (a local wheel in pip's configured
   ``find-links``): that version, and the torchvision built for it;
3. else ``torch torchvision``: pip chooses, as a plain ``pip install`` of the package would.

torchvision X.Y pairs with torch 2.(Y - 15): 0.28 with 2.13, 0.29 with 2.14 (PyTorch's release
table). Standard library only: it runs in a fresh venv before anything is installed.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys


def torchvision_for(torch_version: str) -> str:
    """``"2.13.0+cpu"`` -> ``"torchvision>=0.28,<0.29"``; an unknown scheme -> ``"torchvision"``.
    (No ``*``: the Makefile splices the output into a shell command unquoted.)"""
    m = re.match(r"^2\.(\d+)\.", torch_version)
    if not m:
        return "torchvision"
    minor = int(m[1]) + 15
    return f"torchvision>=0.{minor},<0.{minor + 1}"


def installed_torch() -> str | None:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def local_torch() -> str | None:
    """The torch version pip would install from local wheels alone (no index), or None."""
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-deps",
           "--ignore-installed", "--quiet", "--report", "-", "torch"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
        return json.loads(out)["install"][0]["metadata"]["version"]
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError, OSError):
        return None


def requirements() -> list[str]:
    version = installed_torch() or local_torch()
    if version is None:
        return ["torch", "torchvision"]
    return [f"torch=={version}", torchvision_for(version)]


if __name__ == "__main__":
    print(" ".join(requirements()))
