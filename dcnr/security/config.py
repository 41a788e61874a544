"""The client configuration file: which orchestrator, the CA certificate to trust, and a token.

Like a kubeconfig, one small YAML file (mode 0600, it may hold a secret):

    orchestrator: host:50052
    ca_certificate: |
      -----BEGIN CERTIFICATE-----
      ...
    token: dcnr_...        # optional: without one, calls are anonymous

`dcnr orchestrator --state-dir D` writes `D/admin.yaml` (an operator token) on first start.
Clients use `--config FILE`, else `$DCNR_CONFIG`, else `~/.config/dcnr/config.yaml` (`find`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from dcnr.errors import InvalidArgument
from dcnr.security.pki import write_private

CONFIG_ENV = "DCNR_CONFIG"
KEYS = ("orchestrator", "ca_certificate", "token")


def default_path() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "dcnr" / "config.yaml"


def find(explicit: str | Path | None = None) -> Path | None:
    """The configuration file to use: `explicit`, else `$DCNR_CONFIG`, else the default one if it exists."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    path = default_path()
    return path if path.exists() else None


@dataclass(frozen=True)
class ClientConfig:
    orchestrator: str
    ca_certificate: str  # PEM
    token: str = ""

    @classmethod
    def load(cls, path: str | Path) -> ClientConfig:
        """Read and check a configuration file (InvalidArgument naming the file and key otherwise)."""
        path = Path(path)
        try:
            doc = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise InvalidArgument(f"{path}: cannot read the client configuration: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise InvalidArgument(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(doc, dict):
            raise InvalidArgument(f"{path}: expected a mapping with keys {', '.join(KEYS)}")
        unknown = sorted(set(doc) - set(KEYS))
        if unknown:
            raise InvalidArgument(f"{path}: unknown key {unknown[0]!r} (expected {', '.join(KEYS)})")
        for key in ("orchestrator", "ca_certificate"):
            if not isinstance(doc.get(key), str) or not doc[key].strip():
                raise InvalidArgument(f"{path}: {key}: expected a non-empty string")
        if "BEGIN CERTIFICATE" not in doc["ca_certificate"]:
            raise InvalidArgument(f"{path}: ca_certificate: expected a PEM certificate")
        token = doc.get("token") or ""
        if not isinstance(token, str):
            raise InvalidArgument(f"{path}: token: expected a string")
        return cls(doc["orchestrator"].strip(), doc["ca_certificate"], token.strip())

    def save(self, path: str | Path) -> None:
        doc = {"orchestrator": self.orchestrator, "ca_certificate": self.ca_certificate}
        if self.token:
            doc["token"] = self.token
        write_private(Path(path), yaml.dump(doc, Dumper=_Dumper, sort_keys=False).encode())


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the PEM) as literal blocks, as people write them."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s
                                                               else None))
