"""A volunteer's idle PNode is light: a `dcnr pnode` process that joined and hosts nothing has not loaded
torch and holds at most 300 MB resident; the first network placed on it loads torch, and from then on it
trains exactly as the LocalExecutor does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cluster_helpers import small_lm_yaml

import dcnr
from dcnr.client import Client
from dcnr.cluster import LocalCluster

IDLE_RSS = 300 * 2**20  # bytes an idle PNode may hold resident
TIMEOUT = 120.0  # seconds for any one call to the cluster


def resident(pid: int) -> int:
    """A process's resident memory (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"/proc/{pid}/status has no VmRSS")


def torch_loaded(pid: int) -> bool:
    """Whether torch's library is mapped into a process: it is from the moment the process imports torch."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc")
def test_an_idle_pnode_stays_light_until_its_first_vnode_arrives(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, ["p0"], start_timeout=TIMEOUT) as cluster:  # returns once p0 has joined
        pid = cluster.procs["p0"].pid
        assert not torch_loaded(pid), "an idle PNode loaded torch"
        assert resident(pid) <= IDLE_RSS, f"an idle PNode holds {resident(pid) / 2**20:.0f} MiB"

        text = small_lm_yaml(dropout=0.1)
        ex = dcnr.LocalExecutor(dcnr.parse_network(text))
        g = torch.Generator().manual_seed(3)
        with Client(cluster.address, config=cluster.admin_config, timeout=TIMEOUT) as c:
            c.create_network(text)
            for step in (1, 2):
                batch = {"tokens": torch.randint(0, 300, (4, 8), generator=g),
                         "targets": torch.randint(0, 300, (4, 8), generator=g)}
                got = c.train_step("small", batch, micro_batches=2)
                want = ex.train_step(batch, micro_batches=2)
                assert got.step == step and got.costs["ce_loss"] == want["ce_loss"]  # bit for bit
        assert torch_loaded(pid)
        assert "runtime ready: torch and the node catalog loaded" in cluster.log("p0")
