"""A whole cluster on this machine: an orchestrator and N `dcnr pnode` processes on loopback.

`LocalCluster` is what `dcnr demo`, the end-to-end, cluster and fault tests and the
benchmarks start: the orchestrator as a `dcnr orchestrator` process (or, `embedded=True`,
inside this process, for callers that drive it directly; `in_process=True` runs the PNodes
here too, for tests that look inside them), PNodes as child processes in a
session of their own (a Ctrl-C reaches only the caller, which stops them in order),
every process logging to `STATE_DIR/<name>.log` (with `http=True` the orchestrator serves its
dashboard, JSON API and metrics on `http_port`). The orchestrator keeps its state (its CA
and `admin.yaml`, whose operator token the cluster's client uses) in `STATE_DIR/state`;
each PNode its key in `STATE_DIR/pnodes/<name>` (its id derives from it: `ids`). Start-up waits a bounded time for
every PNode to join; `close` stops everything, also after a Ctrl-C, and leaves no
process behind. Single processes can be signalled, killed and started again, for
fault tests.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from dcnr.client import Client
from dcnr.errors import Conflict, DcnrError, Unavailable
from dcnr.security import pki

ORCHESTRATOR = "orchestrator"  # the orchestrator's process name (and log file stem)
_SERVING = re.compile(rb"orchestrator serving on [^\s:]+:(\d+), PNodes on port (\d+), relaying on port (\d+)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """An orchestrator and PNode processes on 127.0.0.1, with durable state and logs in `state_dir`.

    `pnodes` PNodes named p0, p1, ... (or the given names) join with `threads` torch threads
    each and heartbeat every `heartbeat_interval` seconds (dead after 3 missed beats; tests
    never go below the default, 1 s: shorter beats do not survive a starved CPU). The
    orchestrator fails a step after `step_timeout` s. `orchestrator_args` and `pnode_args` are
    added to the `dcnr orchestrator` / `dcnr pnode` command lines; `pnode_command(address,
    name)` may replace the latter, and `env` the PNodes' environment. `start` waits at most
    `start_timeout` s for the orchestrator to serve and for the PNodes to join. With `http` the
    orchestrator serves HTTP (the dashboard, its API, /metrics) on `http_port`, the same one after a
    restart; without, none (whatever `dcnr orchestrator` defaults to).
    """

    def __init__(self, state_dir: str | Path, pnodes: int | Sequence[str] = 2, *, heartbeat_interval: float = 1.0,
                 threads: int = 1, step_timeout: float = 600.0, embedded: bool = False,
                 orchestrator_args: Sequence[str] = (), pnode_args: Sequence[str] = (),
                 pnode_command: Callable[[str, str], list[str]] | None = None,
                 env: Mapping[str, str] | None = None, start_timeout: float = 90.0, in_process: bool = False,
                 memory_budget: int | None = None, orchestrator_options: Mapping[str, Any] | None = None,
                 http: bool = False) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.pnode_names = [f"p{i}" for i in range(pnodes)] if isinstance(pnodes, int) else list(pnodes)
        self.heartbeat_interval, self.threads, self.step_timeout = heartbeat_interval, threads, step_timeout
        self.in_process = in_process  # PNodes as `PNode` objects in this process (`self.pnodes`)
        self.embedded = embedded or in_process
        self.memory_budget = memory_budget  # in-process PNodes' budget (default: half the machine's memory)
        self.orchestrator_options = dict(orchestrator_options or {})  # more `Orchestrator` arguments (embedded)
        self.pnodes: list[Any] = []  # the in-process `PNode`s
        self.orchestrator_args, self.pnode_args = list(orchestrator_args), list(pnode_args)
        self.pnode_command, self.env, self.start_timeout = pnode_command, env, start_timeout
        self.port = self.peer_port = self.relay_port = self.http_port = 0
        self.http = http
        self.ids = {name: self.pnode_id(name) for name in self.pnode_names}  # PNode name -> id (from its key)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.orch: Any = None  # the embedded `Orchestrator`
        self._client: Client | None = None
        self._stopped: set[str] = set()  # processes we stopped on purpose: their exit is no failure

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        """Where the orchestrator serves HTTP (with `http=True`)."""
        if not self.http:
            raise Conflict("this cluster's orchestrator serves no HTTP: make it with http=True")
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def admin_config(self) -> Path:
        """The client configuration the orchestrator wrote: its address, CA and an operator token."""
        return self.state_dir / "state" / "admin.yaml"

    @property
    def ca_fingerprint(self) -> str:
        return pki.fingerprint((self.state_dir / "state" / "tls" / "ca.crt").read_bytes())

    def pnode_dir(self, name: str) -> Path:
        return self.state_dir / "pnodes" / name

    def pnode_id(self, name: str) -> str:
        """The id of PNode `name`: derived from its key (made here ahead of its first start)."""
        self.pnode_dir(name).mkdir(parents=True, exist_ok=True)
        return pki.pnode_id(pki.load_or_create_key(self.pnode_dir(name) / "key.pem").public_key())

    def name_of(self, pnode_id: str) -> str:
        """The name of a PNode of this cluster by id (the id itself for a stranger)."""
        return next((n for n, i in self.ids.items() if i == pnode_id), pnode_id)

    @property
    def client(self) -> Client:
        """An operator's client of this cluster's orchestrator (closed by `close`)."""
        if self._client is None:
            if not self.port:
                raise Conflict("the cluster's orchestrator has not started yet")
            self._client = Client(self.address, config=self.admin_config)
        return self._client

    # -- starting --------------------------------------------------------------------------------
    def start(self) -> Client:
        """Start the orchestrator and every PNode and wait until all have joined; returns the client.
        On any failure (or Ctrl-C) everything started so far is stopped again."""
        try:
            self.start_orchestrator()
            for name in self.pnode_names:
                self.start_pnode(name)
            self.wait_for_pnodes(self.pnode_names)
            return self.client
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start_orchestrator(self) -> None:
        """Start the orchestrator (again, after a kill: same port, same state directory)."""
        state = self.state_dir / "state"
        if self.embedded:
            from dcnr.orchestrator.app import Orchestrator

            self.orch = Orchestrator(state, heartbeat_interval=self.heartbeat_interval, step_timeout=self.step_timeout,
                                     **self.orchestrator_options)
            self.port = self.orch.start(f"127.0.0.1:{self.port}", f"127.0.0.1:{self.peer_port}",
                                        relay_address=f"127.0.0.1:{self.relay_port}",
                                        http_address=f"127.0.0.1:{self.http_port}" if self.http else None)
            self.peer_port, self.relay_port, self.http_port = (self.orch.peer_port, self.orch.relay_port,
                                                               self.orch.http_port)
            return
        if self.http and not self.http_port:
            self.http_port = free_port()
        log = self.log_path(ORCHESTRATOR)
        offset = log.stat().st_size if log.exists() else 0
        self._spawn(ORCHESTRATOR, [
            sys.executable, "-m", "dcnr.cli.main", "orchestrator", "--host", "127.0.0.1", "--port", str(self.port),
            "--peer-port", str(self.peer_port), "--relay-port", str(self.relay_port), "--state-dir", str(state),
            "--heartbeat-interval", str(self.heartbeat_interval), "--step-timeout", str(self.step_timeout),
            "--http-port", str(self.http_port), *self.orchestrator_args], None)
        deadline = time.monotonic() + self.start_timeout
        while True:  # it prints its port once it serves
            self.check()
            with log.open("rb") as f:
                f.seek(offset)
                found = _SERVING.search(f.read())
            if found:
                self.port, self.peer_port, self.relay_port = (int(found.group(i)) for i in (1, 2, 3))
                return
            if time.monotonic() > deadline:
                raise Unavailable(f"the orchestrator did not start within {self.start_timeout:g} s "
                                  f"(log: {log})")
            time.sleep(0.1)

    def start_pnode(self, name: str, *args: str) -> Any:
        """Start (or restart) the PNode `name`, with extra `dcnr pnode` arguments; in-process, returns the
        started `PNode` (also appended to `pnodes`)."""
        if self.in_process:
            from dcnr.pnode.agent import PNode

            self.ids[name] = self.pnode_id(name)
            pnode = PNode(self.address, state_dir=self.pnode_dir(name), ca_fingerprint=self.ca_fingerprint, name=name,
                          memory_budget=self.memory_budget, set_torch_threads=False,
                          heartbeat_interval=self.heartbeat_interval)
            pnode.start()
            self.pnodes.append(pnode)
            return pnode
        self.ids[name] = self.pnode_id(name)
        argv = (self.pnode_command(self.address, name) if self.pnode_command is not None else [
            sys.executable, "-m", "dcnr.cli.main", "pnode", "--orchestrator", self.address, "--name", name,
            "--state-dir", str(self.pnode_dir(name)), "--ca-fingerprint", self.ca_fingerprint,
            "--threads", str(self.threads), "--heartbeat-interval", str(self.heartbeat_interval)])
        self._spawn(name, [*argv, *self.pnode_args, *args], self.env)
        return None

    def start_relay(self, name: str, *args: str) -> None:
        """Start (or restart) a `dcnr relay` process `name` (the operator's configuration enrols it), keeping its
        key in `STATE_DIR/relays/<name>`; `wait_for_relays` waits until it serves."""
        self._spawn(name, [sys.executable, "-m", "dcnr.cli.main", "--config", str(self.admin_config), "relay",
                           "--host", "127.0.0.1", "--port", "0", "--state-dir", str(self.state_dir / "relays" / name),
                           "--heartbeat-interval", str(self.heartbeat_interval), *args], self.env)

    def relay_id(self, name: str) -> str:
        """The id of relay `name` (derived from its key, made here ahead of its first start)."""
        directory = self.state_dir / "relays" / name
        directory.mkdir(parents=True, exist_ok=True)
        return pki.pnode_id(pki.load_or_create_key(directory / "key.pem").public_key(), pki.RELAY)

    def wait_for_relays(self, names: Sequence[str], timeout: float | None = None) -> None:
        """Wait until every relay in `names` is registered and alive."""
        wanted = {self.relay_id(n) for n in names}

        def alive() -> bool:
            try:
                return wanted <= {r.id for r in self.client.list_relays() if r.state == "alive"}
            except DcnrError:
                return False
        self.wait_for(alive, f"relays {', '.join(names)} joining", self.start_timeout if timeout is None else timeout)

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None) -> None:
        running = self.procs.get(name)
        if running is not None and running.poll() is None:
            raise DcnrError(f"process {name} is already running (pid {running.pid})")
        with self.log_path(name).open("ab") as log:
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                env=None if env is None else dict(env), start_new_session=True)
        self._stopped.discard(name)

    # -- watching --------------------------------------------------------------------------------
    def alive(self) -> set[str]:
        """Names of the PNodes the orchestrator holds alive (empty while it cannot be reached)."""
        try:
            return {self.name_of(p.id) for p in self.client.list_pnodes(timeout=5) if p.state == "alive"}
        except DcnrError:
            return set()

    def check(self) -> None:
        """Raise if a process exited that nobody stopped on purpose, with the end of its log."""
        for name, proc in self.procs.items():
            if name not in self._stopped and proc.poll() is not None:
                raise DcnrError(f"{name} exited with code {proc.returncode}: {self.log(name, 600).strip()}")

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
        """Poll `predicate` until it holds; raise `Unavailable` after `timeout` s or when a process died."""
        deadline = time.monotonic() + timeout
        while not predicate():
            self.check()
            if time.monotonic() > deadline:
                raise Unavailable(f"{what} did not happen within {timeout:g} s (logs in {self.state_dir})")
            time.sleep(0.1)

    def wait_for_pnodes(self, names: Sequence[str], timeout: float | None = None) -> None:
        """Wait until every PNode in `names` has joined and is alive."""
        self.wait_for(lambda: set(names) <= self.alive(), f"PNodes {', '.join(names)} joining",
                      self.start_timeout if timeout is None else timeout)

    def log_path(self, name: str) -> Path:
        return self.state_dir / f"{name}.log"

    def log(self, name: str, chars: int = 2000) -> str:
        """The end of a process's log."""
        try:
            return self.log_path(name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- stopping --------------------------------------------------------------------------------
    def signal(self, name: str, sig: int) -> None:
        """Send `sig` to a process; after SIGKILL or SIGTERM it counts as stopped on purpose (a
        SIGKILLed process is also waited for)."""
        proc = self.procs[name]
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self._stopped.add(name)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait(10)

    def kill(self, name: str) -> None:
        """SIGKILL a process (the orchestrator too: it is restarted with `start_orchestrator`)."""
        self.signal(name, signal.SIGKILL)

    def stop_pnodes(self, grace: float = 15.0) -> None:
        """SIGTERM every PNode (they unregister), wait up to `grace` s, then SIGKILL what is left
        (in-process PNodes stop and unregister)."""
        while self.pnodes:
            self.pnodes.pop().stop()
        self._terminate([n for n in self.procs if n != ORCHESTRATOR], grace)

    def close(self) -> None:
        """Stop every PNode, then the orchestrator; idempotent. A Ctrl-C while stopping kills what is left."""
        try:
            if self._client is not None:
                self._client.close()
                self._client = None
            self.stop_pnodes()
            if self.orch is not None:
                orch, self.orch = self.orch, None
                orch.stop(grace=1.0)
            self._terminate([ORCHESTRATOR] if ORCHESTRATOR in self.procs else [], 15.0)
        except BaseException:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.kill()
            raise

    def _terminate(self, names: list[str], grace: float) -> None:
        for name in names:
            proc = self.procs[name]
            if proc.poll() is None:
                self._stopped.add(name)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)  # a frozen process cannot handle SIGTERM
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name in names:
            proc = self.procs[name]
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
