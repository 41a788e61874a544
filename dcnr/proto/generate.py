"""Regenerate the committed protobuf code from the `.proto` files.

    python -m dcnr.proto.generate           # rewrite dcnr/proto/v2/*_pb2*.py and *.pyi
    python -m dcnr.proto.generate --check   # exit 1 if the committed code is stale

Uses grpcio-tools' bundled protoc, so the output depends only on its version
(pinned in the dev dependencies).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository root: proto imports are relative to it
PROTO_DIR = Path(__file__).resolve().parent / "v2"


def generate(out: Path) -> list[Path]:
    """Run protoc into `out` (mirroring the repo layout); returns the generated files."""
    from grpc_tools import protoc  # a dev dependency: only needed to regenerate

    protos = sorted(PROTO_DIR.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}",
            f"--pyi_out={out}", *[str(p.relative_to(ROOT)) for p in protos]]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    rel = PROTO_DIR.relative_to(ROOT)
    return sorted(p for p in (out / rel).iterdir() if p.suffix in (".py", ".pyi"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    ns = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p.read_text() for p in generate(Path(tmp))}
    committed = {p.name: p.read_text() for p in PROTO_DIR.iterdir()
                 if p.name.endswith(("_pb2.py", "_pb2_grpc.py", "_pb2.pyi"))}
    if ns.check:
        stale = sorted(n for n in fresh.keys() | committed.keys() if fresh.get(n) != committed.get(n))
        if stale:
            print("stale generated protobuf code: " + ", ".join(stale)
                  + " (run: python -m dcnr.proto.generate)", file=sys.stderr)
            return 1
        print("generated protobuf code is up to date")
        return 0
    for name in committed.keys() - fresh.keys():
        (PROTO_DIR / name).unlink()
    for name, text in fresh.items():
        (PROTO_DIR / name).write_text(text)
    print(f"wrote {len(fresh)} files to {PROTO_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
