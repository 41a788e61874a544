"""Training-step benchmark: SPEC §13 topology 1 on `LocalExecutor`, fused and unfused, vs. monolithic PyTorch.

Topology 1 (examples/networks/topology1.yml: 6 blocks x 8 heads, dim 512, context 128,
vocab 10,000) is trained in float32 on CPU three ways, taking turns step by step in one
process so that all see the same machine state:

  fused       `dcnr.LocalExecutor` on the network file (precision overridden to float32,
              dropout as in the file) with the SPEC §6 passes on, as by default: each
              block's 8 heads run as one `attention` VNode and the tied LM head with its
              cross-entropy as one `tied_lm_head_ce` VNode (85 VNodes);
  unfused     the same with `fuse: false`: the 139 VNodes as written;
  monolithic  the same model written as one `torch.nn.Module` the usual way (fused QKV
              projection, `scaled_dot_product_attention(is_causal=True)`, rotate-half
              RoPE, pre-norm, GELU MLP, dropout, SwiGLU head, tied LM head,
              cross-entropy) trained with one `torch.optim.Adam`.

All three start from the same parameters (the executors' initial ones, equal fused or not,
are copied into the module); an inference forward of each is compared first as an
equivalence check. The process is a plain Python process: no allocator setting is changed
unless `--keep-freed-memory` asks for `dcnr.runtime.allocator.keep_freed_memory`. Peak
memory is the peak RSS (VmHWM) of a fresh child process per variant that builds only that
variant and trains it for `--mem-steps` steps.

Run from the repository root:

    .venv/bin/python benchmarks/bench_topology1.py                      # 3 warmup + 5 measured steps
    .venv/bin/python benchmarks/bench_topology1.py --steps 10 --threads 1

It prints the setup, the equivalence check, each step's losses and times, then a table
with, per variant, the median/min/max step time, tokens per second, minor page faults
per step, peak RSS and RSS once the model is built, followed by the ratios of the median
step times (fused / monolithic: target <= 1.05) and of the peak RSS. Timings on a machine
busy with other work are noisy; the load average is printed at both ends.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from dcnr.runtime.allocator import keep_freed_memory

ROOT = Path(__file__).resolve().parent.parent
NETWORK = ROOT / "examples" / "networks" / "topology1.yml"
TARGET_RATIO = 1.05  # fused executor / monolithic, median step time
VARIANTS = ("fused", "unfused", "monolithic")


# -- the two variants ---------------------------------------------------------------------
def load_doc() -> dict[str, Any]:
    doc = yaml.safe_load(NETWORK.read_text(encoding="utf-8"))
    doc["precision"] = "float32"
    return doc


def model_sizes(doc: dict[str, Any]) -> dict[str, Any]:
    """Sizes and rates of the transformer, read from the network document."""
    cfg = {n["id"]: n["config"] for n in doc["nodes"]}
    blocks = sum(1 for nid in cfg if nid.endswith("_ln1"))
    heads = sum(1 for nid in cfg if nid.startswith("b0_head") and nid != "b0_heads")
    return {
        "blocks": blocks,
        "heads": heads,
        "head_dim": int(cfg["b0_head0"]["head_dim"]),
        "dim": int(cfg["embedder"]["dim"]),
        "seq_len": int(cfg["embedder"]["seq_len"]),
        "vocab": int(cfg["embedder"]["vocab_size"]),
        "ffn": int(cfg["b0_fc1"]["out_dim"]),
        "hidden": int(cfg["head_up"]["out_dim"]),
        "dropout": float(cfg["b0_drop1"]["rate"]),
        "rope_theta": float(cfg["b0_head0"]["rope_theta"]),
        "lr": float(cfg["embedder"]["lr"]),
    }


def make_executor(doc: dict[str, Any], fuse: bool = True) -> Any:
    """`LocalExecutor` on the document, with the SPEC §6 passes on (the default) or off."""
    import dcnr

    return dcnr.LocalExecutor(dcnr.parse_network(yaml.safe_dump({**doc, "fuse": fuse})))


def rope_tables(seq: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    half = head_dim // 2
    inv = theta ** (-torch.arange(0, half, dtype=torch.float32) / half)
    angle = torch.arange(seq, dtype=torch.float32)[:, None] * inv  # (S, hd/2)
    angle = torch.cat([angle, angle], -1)  # (S, hd)
    return angle.cos(), angle.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.proj = nn.Linear(heads * head_dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = rotate(qkv[0], cos, sin), rotate(qkv[1], cos, sin), qkv[2]  # (B, H, S, hd)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, s, -1)))
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.ln2(x)))))


class TransformerLM(nn.Module):
    def __init__(self, sz: dict[str, Any]) -> None:
        super().__init__()
        self.embed = nn.Embedding(sz["vocab"], sz["dim"])
        self.blocks = nn.ModuleList(
            Block(sz["dim"], sz["heads"], sz["head_dim"], sz["ffn"], sz["dropout"]) for _ in range(sz["blocks"])
        )
        self.ln_f = nn.LayerNorm(sz["dim"])
        self.head_up = nn.Linear(sz["dim"], sz["hidden"])
        self.head_down = nn.Linear(sz["hidden"] // 2, sz["dim"])
        cos, sin = rope_tables(sz["seq_len"], sz["head_dim"], sz["rope_theta"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        s = ids.shape[1]
        cos, sin = self.get_buffer("cos")[:s], self.get_buffer("sin")[:s]
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, cos, sin)
        a, g = self.head_up(self.ln_f(x)).chunk(2, dim=-1)
        x = self.head_down(a * F.silu(g))
        return F.linear(x, self.embed.weight)  # tied LM head


def copy_params(model: TransformerLM, params: dict[str, torch.Tensor], sz: dict[str, Any]) -> None:
    """Load the executor's `<node>.<param>` tensors into the module's layout."""
    hd, heads = sz["head_dim"], sz["heads"]
    with torch.no_grad():
        model.embed.weight.copy_(params["embedder.weight"])
        for i, blk in enumerate(model.blocks):
            p = f"b{i}_"
            qkv = cast(nn.Linear, blk.qkv).weight.view(3, heads, hd, -1)
            for j, name in enumerate("qkv"):
                for h in range(heads):
                    qkv[j, h].copy_(params[f"{p}head{h}.{name}.weight"])
            for nid in ("ln1", "proj", "ln2", "fc1", "fc2"):
                mod = getattr(blk, nid)
                mod.weight.copy_(params[f"{p}{nid}.weight"])
                mod.bias.copy_(params[f"{p}{nid}.bias"])
        for mod, nid in ((model.ln_f, "ln_f"), (model.head_up, "head_up"), (model.head_down, "head_down")):
            mod.weight.copy_(params[f"{nid}.weight"])
            mod.bias.copy_(params[f"{nid}.bias"])


class Monolithic:
    def __init__(self, sz: dict[str, Any]) -> None:
        self.model = TransformerLM(sz)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=sz["lr"])

    def train_step(self, tokens: torch.Tensor, targets: torch.Tensor) -> float:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        logits = self.model(tokens)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        self.opt.step()
        return loss.item()


# -- helpers ------------------------------------------------------------------------------------
def make_batch(sz: dict[str, Any], batch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    ids = torch.randint(0, sz["vocab"], (batch, sz["seq_len"] + 1), generator=gen)
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """Peak RSS of this process. VmHWM starts afresh at exec; ru_maxrss would carry over the
    parent's RSS at fork time, so it is only the fallback where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def memory_child(variant: str, args: argparse.Namespace) -> None:
    """Build one variant alone, train it, print its memory figures as JSON (child process)."""
    torch.manual_seed(0)
    doc = load_doc()
    sz = model_sizes(doc)
    base = rss_mib()
    if variant != "monolithic":  # "executor" is the executor as it runs by default: fused
        ex = make_executor(doc, fuse=variant != "unfused")
        step = lambda t, y: ex.train_step({"tokens": t, "targets": y})  # noqa: E731
    else:
        mono = Monolithic(sz)
        step = mono.train_step
    built = rss_mib()
    for i in range(args.mem_steps):
        step(*make_batch(sz, args.batch, i))
    print(json.dumps({"base_mib": base, "built_mib": built, "peak_mib": peak_rss_mib()}))


def measure_memory(variant: str, args: argparse.Namespace) -> dict[str, float]:
    """Memory figures of `variant` (fused or "executor", unfused, monolithic) from a fresh child process."""
    cmd = [sys.executable, __file__, "--memory-child", variant, "--batch", str(args.batch),
           "--threads", str(args.threads), "--mem-steps", str(args.mem_steps)]
    if getattr(args, "keep_freed_memory", False):
        cmd.append("--keep-freed-memory")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"memory measurement of {variant} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def equivalence_check(ex: Any, mono: Monolithic, sz: dict[str, Any]) -> float:
    """Max |logit difference| of an inference forward (no dropout) on one sequence."""
    tokens, _ = make_batch(sz, 1, -1)
    mono.model.eval()
    with torch.no_grad():
        ref = mono.model(tokens)
    got = ex.forward({"tokens": tokens}, outputs=["logits"])["logits"]
    return float((got - ref).abs().max())


# -- main -----------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="measured steps per variant (default 5)")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured warmup steps per variant (default 3)")
    ap.add_argument("--batch", type=int, default=8, help="sequences per step (default 8; 128 tokens each)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    ap.add_argument("--mem-steps", type=int, default=2, help="training steps in each memory child (default 2)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="tell glibc's malloc to keep freed memory (dcnr.runtime.allocator.keep_freed_memory) "
                         "instead of measuring a plain process")
    ap.add_argument("--memory-child", choices=("executor", *VARIANTS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    pinned = args.keep_freed_memory and keep_freed_memory()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args)
        return

    doc = load_doc()
    sz = model_sizes(doc)
    print(f"topology 1: {sz['blocks']} blocks x {sz['heads']} heads, dim {sz['dim']}, context {sz['seq_len']}, "
          f"vocab {sz['vocab']}, dropout {sz['dropout']}; float32, batch {args.batch} x {sz['seq_len']} tokens")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads on {os.cpu_count()} CPUs "
          f"(load average {os.getloadavg()[0]:.2f}); {args.warmup} warmup + {args.steps} measured steps each, "
          "taking turns")
    executors = {}
    for name in ("fused", "unfused"):
        t0 = time.perf_counter()
        executors[name] = make_executor(doc, fuse=name == "fused")
        print(f"{name} executor: {len(executors[name].vnodes)} VNodes, "
              f"{sum(p.numel() for p in executors[name].parameters().values()) / 1e6:.1f} M parameters "
              f"(built in {time.perf_counter() - t0:.1f} s)")
    start = executors["fused"].parameters()
    if any(not torch.equal(t, executors["unfused"].parameters()[k]) for k, t in start.items()):
        raise SystemExit("fused and unfused executors start from different parameters")
    torch.manual_seed(0)
    mono = Monolithic(sz)
    copy_params(mono.model, start, sz)
    print(f"monolithic: {sum(p.numel() for p in mono.model.parameters()) / 1e6:.1f} M parameters")
    for name, ex in executors.items():
        print(f"equivalence check, {name} (inference logits, same weights): "
              f"max |diff| = {equivalence_check(ex, mono, sz):.2e}")

    def executor_step(ex: Any) -> Any:
        return lambda t, y: ex.train_step({"tokens": t, "targets": y})["ce_loss"]

    runners = {"fused": executor_step(executors["fused"]), "unfused": executor_step(executors["unfused"]),
               "monolithic": mono.train_step}
    times: dict[str, list[float]] = {k: [] for k in runners}
    faults: dict[str, list[int]] = {k: [] for k in runners}
    losses: dict[str, float] = {}
    for i in range(args.warmup + args.steps):
        tokens, targets = make_batch(sz, args.batch, i)
        order = list(runners)[i % 3:] + list(runners)[:i % 3]  # each variant goes first, second and third in turn
        for name in order:
            f0, start_t = minor_faults(), time.perf_counter()
            losses[name] = runners[name](tokens, targets)
            elapsed, nfaults = time.perf_counter() - start_t, minor_faults() - f0
            if i >= args.warmup:
                times[name].append(elapsed)
                faults[name].append(nfaults)
        tag = "warmup" if i < args.warmup else "step  "
        line = f"  {tag} {i:2d}: loss " + ", ".join(f"{n} {losses[n]:.4f}" for n in runners)
        if i >= args.warmup:
            line += "; time " + ", ".join(f"{n} {times[n][-1]:.3f} s" for n in runners)
        print(line, flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    mem: dict[str, dict[str, float]] = {}
    if not args.no_memory:
        del executors, mono
        for name in runners:
            mem[name] = measure_memory(name, args)

    print()
    print(f"{'variant':<12} {'median step':>12} {'min':>9} {'max':>9} {'tokens/s':>9} {'faults/step':>12} "
          f"{'peak RSS':>10} {'after build':>12}")
    for name in runners:
        v = times[name]
        tok_s = args.batch * sz["seq_len"] / med[name]
        m = mem.get(name)
        peak = f"{m['peak_mib']:6.0f} MiB" if m else f"{'-':>10}"
        built = f"{m['built_mib']:8.0f} MiB" if m else f"{'-':>12}"
        flt = statistics.median(faults[name])
        print(f"{name:<12} {med[name]:10.3f} s {min(v):7.3f} s {max(v):7.3f} s {tok_s:9.0f} {flt:12.0f} {peak} {built}")
    ratio = med["fused"] / med["monolithic"]
    verdict = "ok" if ratio <= TARGET_RATIO else "above target"
    print(f"ratio fused / monolithic (median step time):   {ratio:.3f}  (target <= {TARGET_RATIO}: {verdict})")
    print(f"ratio unfused / monolithic (median step time): {med['unfused'] / med['monolithic']:.3f}")
    print(f"ratio fused / unfused (median step time):      {med['fused'] / med['unfused']:.3f}")
    if mem:
        print("ratio of peak RSS to monolithic: " + ", ".join(
            f"{n} {mem[n]['peak_mib'] / mem['monolithic']['peak_mib']:.3f}" for n in ("fused", "unfused"))
            + f"  (a fresh child process per variant, {args.mem_steps} training steps)")
    print(f"{args.threads} threads; malloc {'told to keep freed memory' if pinned else 'as default (plain process)'}")
    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.2f}"
          + (" (busy machine: with more runnable threads than CPUs every parallel op waits for a time slice, "
             "which costs the executor's many small ops most; compare with --threads 1)"
             if load > (os.cpu_count() or 1) and args.threads > 1 else ""))
    if not math.isfinite(ratio):
        sys.exit(1)


if __name__ == "__main__":
    main()
