"""How `dcnr join` fits a PNode to its machine, and the settings it keeps to join again.

Owns the sizing rules (`size`): the device (CUDA if torch sees one, then MPS, then the
CPU), a memory budget for hosted VNodes (a share of the memory available when it starts,
of the GPU's free memory on CUDA), torch threads (half the CPUs this process may use, so
the machine stays usable), each capped by the volunteer's limits; and `JoinSettings`, the
volunteer's choices (orchestrator, CA fingerprint, caps, name, addresses, outbound-only), kept as JSON
in the PNode's state directory beside its key, so that `dcnr join` with no arguments
joins again. Caps are kept, not the sizes: every join sizes afresh to the machine as it is.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dcnr.errors import InvalidArgument
from dcnr.pnode.hardware import torch_facts
from dcnr.storage.files import write_atomic

SETTINGS_FILE = "join.json"
SETTINGS_FORMAT = "dcnr-join/1"
MEMORY_SHARE = 0.5  # of the memory available when the PNode starts (CPU and MPS: shared with the desktop)
GPU_SHARE = 0.75  # of a CUDA device's free memory
DEVICES = ("auto", "cuda", "mps", "cpu")


@dataclass(frozen=True, kw_only=True)
class JoinSettings:
    """What a volunteer chose for `dcnr join` (None: decided when joining)."""

    orchestrator: str = ""  # HOST:PORT of the orchestrator's public port
    ca_fingerprint: str = ""  # SHA256:<hex> of its CA as first given (the CA itself is kept in ca.crt)
    max_memory: int | None = None  # cap on the memory budget, bytes
    max_threads: int | None = None  # cap on torch threads
    device: str = "auto"  # auto | cuda | mps | cpu
    name: str | None = None  # a label for people (default: the host name)
    host: str | None = None  # address to bind (default: see `listen_address`)
    port: int | None = None  # port to serve on (default: any free one)
    advertise: str | None = None  # host other PNodes dial (default: see `listen_address`)
    outbound_only: bool | None = None  # listen on no port: take part through a relay

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise InvalidArgument(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.max_memory is not None and self.max_memory < 1:
            raise InvalidArgument(f"--max-memory must be positive, got {self.max_memory}")
        if self.max_threads is not None and self.max_threads < 1:
            raise InvalidArgument(f"--max-threads must be at least 1, got {self.max_threads}")
        if self.port is not None and not 0 <= self.port < 65536:
            raise InvalidArgument(f"--port must be 0 to 65535, got {self.port}")
        if self.orchestrator and (":" not in self.orchestrator or not self.orchestrator.rpartition(":")[2].isdigit()):
            raise InvalidArgument(f"the orchestrator's address must be HOST:PORT, got {self.orchestrator!r}")

    def updated(self, **given: Any) -> JoinSettings:
        """These settings with the values given (those not None) in place of theirs."""
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})

    def without(self, *names: str) -> JoinSettings:
        """These settings with `names` back to their defaults (a cap removed)."""
        defaults = JoinSettings()
        return dataclasses.replace(self, **{n: getattr(defaults, n) for n in names})

    def save(self, state_dir: Path) -> Path:
        path = state_dir / SETTINGS_FILE
        write_atomic(path, (json.dumps({"format": SETTINGS_FORMAT, **dataclasses.asdict(self)}, indent=1) + "\n")
                     .encode())
        return path

    @classmethod
    def load(cls, state_dir: Path) -> JoinSettings | None:
        """The settings kept in `state_dir` (None when there are none); InvalidArgument for a damaged file."""
        path = state_dir / SETTINGS_FILE
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"{path}: not readable settings ({exc}); remove it and join with arguments") from None
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(doc, dict) or doc.get("format") != SETTINGS_FORMAT:
            raise InvalidArgument(f"{path}: not a {SETTINGS_FORMAT} settings file; remove it and join with arguments")
        try:
            return cls(**{k: v for k, v in doc.items() if k in known})
        except (TypeError, InvalidArgument) as exc:
            raise InvalidArgument(f"{path}: damaged settings ({exc}); remove it and join with arguments") from None


@dataclass(frozen=True)
class Sizing:
    """What a PNode gets of this machine, and why (one line for people)."""

    device: str
    memory_budget: int  # bytes for hosted VNodes
    threads: int
    reason: str


def detect_device(state_dir: Path | None = None) -> str:
    """cuda when torch sees a CUDA device, else mps when it sees an Apple GPU, else cpu (torch is asked in a
    child process: a joining PNode loads it only when its first VNode arrives)."""
    facts = torch_facts("cpu", state_dir)
    return "cuda" if facts["cuda"] else "mps" if facts["mps"] else "cpu"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity: a container's or a taskset's share), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def available_memory() -> int:
    """Bytes of memory available to new work now: MemAvailable on Linux, else free pages, else physical memory
    (0 when nothing tells)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf(pages)
        except (ValueError, OSError, AttributeError):
            continue
    return 0


def size(settings: JoinSettings, state_dir: Path | None = None) -> Sizing:
    """Device, memory budget and threads for this machine now, within the settings' caps."""
    device = detect_device(state_dir) if settings.device == "auto" else settings.device
    if device == "cuda":
        import torch  # a GPU's free memory: only torch knows (a CUDA PNode loads it for its first VNode anyway)

        free, _ = torch.cuda.mem_get_info()
        budget, share = int(free * GPU_SHARE), f"{GPU_SHARE:.0%} of the GPU's {_gib(free)} free"
    else:
        available = available_memory() or 8 * 2**30
        budget, share = int(available * MEMORY_SHARE), f"{MEMORY_SHARE:.0%} of {_gib(available)} available"
    cpus = usable_cpus()
    threads = max(1, cpus // 2)
    capped = []
    if settings.max_memory is not None and settings.max_memory < budget:
        budget = settings.max_memory
        capped.append("memory")
    if settings.max_threads is not None and settings.max_threads < threads:
        threads = settings.max_threads
        capped.append("threads")
    reason = (f"{device}{' (found)' if settings.device == 'auto' else ''}, {threads} of {cpus} CPUs, "
              f"{_gib(budget)} for VNodes ({share})" + (f"; capped: {', '.join(capped)}" if capped else ""))
    return Sizing(device, budget, threads, reason)


def listen_address(settings: JoinSettings) -> tuple[str, str | None]:
    """(address to bind, host to advertise) unless the settings say: loopback for an orchestrator on this
    machine; otherwise every interface, advertising this machine's address on the route to the orchestrator
    (where other PNodes reach it on the same network; behind NAT, set --advertise or use a relay)."""
    host = settings.orchestrator.rpartition(":")[0].strip("[]")
    bind, advertise = settings.host, settings.advertise
    if bind is None:
        bind = "127.0.0.1" if _loopback(host) else "0.0.0.0"
    if advertise is None and bind in ("0.0.0.0", "::"):
        advertise = _route_to(host) or socket.getfqdn()
    return bind, advertise


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _route_to(host: str) -> str:
    """This machine's address on the way to `host` ("" when it cannot tell; no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return str(s.getsockname()[0])
    except OSError:
        return ""


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
