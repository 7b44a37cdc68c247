"""The wrapper library's tests again under gymnasium 0.29.1 (MuJoCo v4 ids), in a venv of their own.

Runs when ``CI=true`` or ``GASIL_TEST_GYM029=1``; it builds ``.venv-gym029`` from
``requirements-gym029.txt`` on first use (about two minutes, torch comes from the local disk).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-gym029"
LIBRARY_TESTS = [
    "tests/test_delayed_reward.py",
    "tests/test_observation_noise.py",
    "tests/test_topk.py",
    "tests/test_discriminator.py",
    "tests/test_discriminator_reward.py",
    "tests/test_state.py",
    "tests/test_registration.py",
    "tests/test_point_mass.py",
    "tests/test_reward.py",
    "tests/test_ownership.py",
]

pytestmark = pytest.mark.skipif(
    os.environ.get("CI", "").lower() != "true" and os.environ.get("GASIL_TEST_GYM029") != "1",
    reason="builds a second venv with gymnasium 0.29.1 (minutes): runs in CI, or set GASIL_TEST_GYM029=1",
)


def venv_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", "requirements-gym029.txt"], cwd=ROOT, check=True
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", "."], cwd=ROOT, check=True
        )
    return python


def test_library_under_gymnasium_0_29_1():
    python = venv_python()
    version = subprocess.run(
        [str(python), "-c", "import gymnasium; print(gymnasium.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version == "0.29.1"
    result = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", *LIBRARY_TESTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
