"""Where a result came from: the source commit and the machine, as every study records them in its JSON."""

import os
import platform
import subprocess
from pathlib import Path

import numpy as np


def source_commit():
    """The short git commit of the package's source tree, or "unknown"."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_description():
    """Processor, CPU count, Python and NumPy versions."""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, numpy {np.__version__}")
