"""What the benchmark reports say about the machine they ran on."""

import os
import platform
from pathlib import Path


def describe():
    """`N cores, CPU MODEL`."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor())
    return f"{os.cpu_count()} cores, {cpu}"
