"""What this machine offers a PNode: CPU cores, memory, the torch device, the compute class.

Only torch knows the device and the compute class, and importing torch costs a process
~280 MB and seconds, which a PNode that hosts nothing should not pay. So a PNode asks torch
in a short child process (`python -m dcnr.pnode.hardware DEVICE`), and `torch_facts` keeps
a CPU's answer in the PNode's state directory under a fingerprint of everything it depends
on: torch's installation (the path, size and modification time of its version file), the
interpreter, the CPU model and flags, the CPUs this process may use and the environment
variables torch reads for its thread count and CPU dispatch. A GPU comes and goes without
any of these changing (drivers, CUDA_VISIBLE_DEVICES), so for cuda and mps the child runs
on every start. A process that has loaded torch already asks it directly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from dcnr.errors import DcnrError
from dcnr.storage.files import write_atomic

DEVICES = ("cpu", "cuda", "mps")
CACHE = "hardware.json"  # in the PNode's state directory: {"key": fingerprint, "facts": what torch said}
PROBE_TIMEOUT = 300.0  # seconds for the child to import torch and answer (a cold disk is slow)
_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY")  # what torch's answers for a CPU depend on
_CPU_FIELDS = ("model name", "flags", "Features", "CPU implementer", "CPU part")  # /proc/cpuinfo, x86 and ARM


def detect_hardware(device: str, memory_budget: int | None, threads: int | None,
                    state_dir: Path | None = None) -> dict[str, Any]:
    """CPU cores, physical memory and the torch device (refusing one this machine lacks); `threads` None
    is torch's default. `state_dir` keeps torch's answers about a CPU from one start to the next."""
    if device not in DEVICES:
        raise ValueError(f"--device must be cpu, cuda or mps, got {device!r}")
    facts = ask_torch(device) if "torch" in sys.modules else torch_facts(device, state_dir)
    if device == "cuda" and not facts["cuda"]:
        raise ValueError("--device cuda: no CUDA device is available to torch on this machine")
    if device == "mps" and not facts["mps"]:
        raise ValueError("--device mps: no MPS device is available to torch on this machine")
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 0
    budget = memory_budget if memory_budget is not None else (memory // 2 if memory else 4 * 2**30)
    return {"cpu_cores": os.cpu_count() or 1, "memory_bytes": memory, "device": device,
            "memory_budget_bytes": budget, "threads": threads or max(1, int(facts["threads"])),
            "compute_class": facts["compute_class"]}


def compute_class(device: str) -> str:
    """What decides whether two PNodes compute bit-identical results: torch's version, the device (the GPU's
    model), the CPU instruction set torch dispatches to and its BLAS. Verifiers re-execute work of their own
    class bit for bit (SPEC §12). Imports torch."""
    import torch

    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    isa = torch.backends.cpu.get_cpu_capability()
    where = torch.cuda.get_device_name() if device == "cuda" else device
    return f"torch {torch.__version__} / {where} / {isa} / {blas.group(1) if blas else 'unknown BLAS'}"


def ask_torch(device: str) -> dict[str, Any]:
    """torch's answers: whether CUDA and MPS are available, its default thread count, and the compute
    class of `device` (empty when the device is not available). Imports torch."""
    import torch

    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    return {"cuda": available["cuda"], "mps": available["mps"], "threads": torch.get_num_threads(),
            "compute_class": compute_class(device) if available.get(device) else ""}


def torch_facts(device: str, state_dir: Path | None = None) -> dict[str, Any]:
    """`ask_torch(device)` without importing torch here: asked in a child process, or kept in `state_dir`."""
    key = fingerprint() if device == "cpu" and state_dir is not None else None
    cache = state_dir / CACHE if state_dir is not None else None
    if key is not None and cache is not None:
        try:
            kept = json.loads(cache.read_text())
            if kept["key"] == key:
                return dict(kept["facts"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none kept yet, or unreadable: ask again
    facts = _probe(device)
    if key is not None and cache is not None:
        write_atomic(cache, json.dumps({"key": key, "facts": facts}).encode())
    return facts


def fingerprint() -> str | None:
    """A digest of everything torch's answers about this CPU depend on; None when torch is not installed."""
    spec = importlib.util.find_spec("torch")  # finds the package without importing it
    if spec is None or not spec.origin:
        return None
    version = Path(spec.origin).with_name("version.py")
    try:
        st = version.stat()
    except OSError:
        return None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    inputs = {"python": sys.executable, "torch": str(version), "mtime": st.st_mtime_ns, "size": st.st_size,
              "cpu": _cpu_model(), "cpus": cpus, "env": {k: os.environ.get(k) for k in _ENV}}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _cpu_model() -> list[str]:
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return [platform.machine(), platform.processor()]
    seen: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() in _CPU_FIELDS:
            seen.setdefault(name.strip(), value.strip())
    return [platform.machine(), *(f"{k}: {v}" for k, v in sorted(seen.items()))]


def _probe(device: str) -> dict[str, Any]:
    """`ask_torch(device)` in a child process running this module."""
    package_root = str(Path(__file__).resolve().parents[2])  # the child imports this very dcnr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH"))))}
    argv = [sys.executable, "-m", "dcnr.pnode.hardware", device]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DcnrError(f"could not ask torch about this machine: {exc}") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise DcnrError(f"could not ask torch about this machine: {why}")
    facts: dict[str, Any] = json.loads(lines[-1])
    return facts


if __name__ == "__main__":
    print(json.dumps(ask_torch(sys.argv[1])))
