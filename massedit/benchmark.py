"""Per-phase measurements of the pipeline on one model: time, throughput, peak memory and distance from the floor.

Speed is measured here, never in tests. Each phase runs the library code the workflow runs, on a small
sample, and records (one CSV row per phase):

* wall and CPU seconds and a throughput (statistics tokens/s, residual optimisation s/edit, solve s/layer,
  evaluation s/record, generation tokens/s);
* the peak memory of the phase (``PeakMemory``): on CUDA the allocator's peak above the phase start, on the
  CPU the peak resident set above the phase start (``peak_mb``) and in all (``peak_rss_mb``);
* the phase's floor: the matrix-multiply FLOPs the phase cannot avoid, counted from the model config
  (``ModelShape`` and the ``*_flops`` counters below), divided by the machine's matmul rate measured in the
  same run (``matmul_rate``: the best of a measurement before and one after the phases, fp32, and fp64 for
  the fp64 solve); ``ratio`` = measured wall / floor. The counters are approximations, stated in their
  docstrings; all of them count only the products with weight matrices (the LM head included) and leave
  out attention scores, norms, activations, the softmax and the optimiser, which are small at these
  lengths. A ratio far above 1 means time spent on something else than the unavoidable products:
  recomputation, small inefficient products, Python overhead;
* for residual optimisation, evaluation and generation, the speed-up of the default path over the
  straightforward one and whether both give the same results.

``run`` writes every row as soon as its phase ends (``Recorder``: one CSV per run plus ``latest.csv``, both
rewritten atomically), so an interrupted run keeps what it measured; ``markdown_table`` renders a CSV
for the README.
"""
from __future__ import annotations

import contextlib
import csv
import io as _stdio
import math
import os
import platform
import re
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from massedit import io

PHASES = ("corpus", "stats", "residuals", "solve", "eval", "generation")
# A phase needs what the phases before it produced (solve: the statistics; statistics: the corpus sample).
PHASE_NEEDS = {"stats": ("corpus",), "solve": ("stats",)}
# Column order of the CSV; rows may carry more (appended in order of appearance).
COLUMNS = (
    "run_id", "phase", "method", "mode", "wall_s", "cpu_s", "amount", "throughput", "unit", "gflop", "gflop_fp64",
    "floor_s", "ratio", "peak_mb", "peak_rss_mb", "peak_method", "speedup", "check", "load_avg", "n_edits",
    "device", "dtype", "matmul_gflops_fp32", "matmul_gflops_fp64", "machine", "cpu", "cpu_count", "threads", "gpu",
    "torch", "host",
)
MARKDOWN_HEADER = ("phase", "wall s", "throughput", "unit", "floor s", "ratio", "peak MB",
                   "speed-up vs straightforward")


# --------------------------------------------------------------------------------------------------
# FLOP counts (matrix products only; a product of (m×k) by (k×n) is 2·m·k·n FLOPs)

_PLAIN_MLP = ("gpt2", "gptj", "gpt_neox", "falcon")  # up and down projections; every other type is gated


@dataclass(frozen=True)
class ModelShape:
    """The sizes the FLOP counters need, read from a Hugging Face config."""

    hidden: int
    intermediate: int
    n_layers: int
    vocab: int
    q_dim: int  # n_heads · head_dim: width of the query and attention-output projections
    kv_dim: int  # n_kv_heads · head_dim: width of the key and value projections
    mlp_matrices: int  # 3 for a gated MLP (gate, up, down), 2 otherwise

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        if hasattr(config, "get_text_config"):
            config = config.get_text_config()

        def first(*names, default=None):
            for name in names:
                value = getattr(config, name, None)
                if value is not None:
                    return int(value)
            return default

        hidden = first("hidden_size", "n_embd")
        heads = first("num_attention_heads", "n_head")
        head_dim = first("head_dim", default=hidden // heads)
        kv_heads = first("num_key_value_heads", "num_kv_heads",
                         default=1 if getattr(config, "multi_query", False) else heads)
        intermediate = first("intermediate_size", "n_inner", "ffn_hidden_size", default=4 * hidden)
        return cls(hidden=hidden, intermediate=intermediate, n_layers=first("num_hidden_layers", "n_layer"),
                   vocab=first("vocab_size"), q_dim=heads * head_dim, kv_dim=kv_heads * head_dim,
                   mlp_matrices=2 if config.model_type in _PLAIN_MLP else 3)

    @property
    def layer_params(self) -> int:
        """Weights one token meets in one block: Q and O (d×q_dim each), K and V (d×kv_dim each), the MLP."""
        d = self.hidden
        return 2 * d * self.q_dim + 2 * d * self.kv_dim + self.mlp_matrices * d * self.intermediate

    def layers_flops(self, n_layers: int, positions: int) -> int:
        """Forward FLOPs of ``n_layers`` blocks at ``positions`` token positions: 2·layer_params each."""
        return 2 * self.layer_params * n_layers * positions

    def head_flops(self, positions: int) -> int:
        """Forward FLOPs of the LM head (d × vocab) at ``positions`` positions."""
        return 2 * self.hidden * self.vocab * positions


def statistics_flops(shape: ModelShape, layers: Iterable[int], n_tokens: int) -> tuple[int, int]:
    """(forward, moments) FLOPs of the statistics pass over ``n_tokens`` non-padding tokens.

    forward = 2·layer_params·(deepest + 1)·n_tokens: every block up to and including the deepest requested
    layer (the pass stops there), no LM head. moments = 2·d_ff²·n_tokens per requested layer: the kᵀk
    accumulation, counted as the full product torch computes (the symmetric half would do). Padding
    positions are not counted."""
    layers = [int(x) for x in layers]
    return (shape.layers_flops(max(layers) + 1, n_tokens),
            2 * shape.intermediate ** 2 * n_tokens * len(layers))


def suffix_positions(prompts) -> tuple[int, int]:
    """(positions δ changes that the loss needs, scored positions) of one edit's ``EditPrompts``.

    Each rewriting row needs its subject's last position s_r through its last scored position; the essence
    row needs only s_r (it is scored there). Scored: every target position of every rewriting row, plus
    the essence row's one."""
    subject = prompts.subject_cols.tolist()
    cols = prompts.target_cols.tolist()
    suffix = sum(max(row) - subject[r] + 1 for r, row in enumerate(cols)) + 1
    scored = sum(len(row) for row in cols) + 1
    return suffix, scored


def residual_flops(shape: ModelShape, z_layer: int, edits: Iterable[tuple[int, int, int, int]]) -> int:
    """FLOPs of residual optimisation for edits given as (real prompt tokens, suffix positions, scored
    positions, iterations) — ``suffix_positions`` gives the middle two, the step's result the last.

    Per edit: once, the clean pass of every block over every real prompt token (what δ cannot change; this
    counts the suffix positions once more than needed). Per iteration, the forward of blocks z+1…N−1 at
    the suffix positions plus the LM head at the scored positions; per iteration but the last (the steps
    stop after a forward), the backward, counted equal to the forward because only activation gradients
    are needed (the weights are frozen: no weight gradients). Applies to δ at the block output (EAMET,
    MEMIT, AlphaEdit); for δ inside block z (PMET, ROME) block z's remainder is left out."""
    after = shape.n_layers - 1 - int(z_layer)
    total = 0
    for tokens, suffix, scored, iterations in edits:
        step = shape.layers_flops(after, suffix) + shape.head_flops(scored)
        total += shape.layers_flops(shape.n_layers, tokens) + step * (iterations + max(iterations - 1, 0))
    return total


def solve_flops(hidden: int, intermediate: int, n_edits: int) -> int:
    """FLOPs of one layer's closed-form update (eq. 5) with d_ff = ``intermediate``, n = ``n_edits``:
    the Cholesky factorisation of the d_ff×d_ff matrix (d_ff³/3), the two triangular solves with n
    right-hand sides (2·d_ff²·n), plus forming K Kᵀ (2·d_ff²·n) and R (A⁻¹K)ᵀ (2·d·d_ff·n). Runs in
    fp64, so its floor uses the fp64 matmul rate (a Cholesky rarely reaches the matmul rate: a floor)."""
    f, n = intermediate, n_edits
    return f ** 3 // 3 + 2 * f * f * n + 2 * f * f * n + 2 * hidden * f * n


def distinct_positions(sequences: Iterable[tuple[list[int], list[int]]]) -> tuple[int, int]:
    """(distinct input positions, distinct scored positions) of teacher-forced (prompt ids, target ids) items.

    A position is its token prefix: items that share leading tokens (a prefix, a prompt scored against two
    targets) need those positions once. Inputs are prompt ⊕ target[:-1]; a scored position is a prefix
    whose next token is a target token, so the prompt's last position scored for two targets counts once."""
    root: dict = {}
    n_inputs = 0
    scored: set[int] = set()
    for prompt, target in sequences:
        node = root
        seq = list(prompt) + list(target[:-1])
        for k, token in enumerate(seq):
            if token not in node:
                node[token] = {}
                n_inputs += 1
            node = node[token]
            if k >= len(prompt) - 1:
                scored.add(id(node))
    return n_inputs, len(scored)


def evaluation_flops(shape: ModelShape, n_inputs: int, n_scored: int) -> int:
    """Scoring FLOPs: every block over the distinct input positions plus the LM head at the distinct
    scored positions (``distinct_positions``)."""
    return shape.layers_flops(shape.n_layers, n_inputs) + shape.head_flops(n_scored)


def generation_flops(shape: ModelShape, prompt_tokens: int, rows: int, new_tokens: int) -> int:
    """FLOPs of decoding ``new_tokens`` positions in each of ``rows`` sequences with a key-value cache:
    every block over the real prompt tokens and each new token but the last (fed back), and the LM head
    once per new token. Without a cache the work grows with the square of the length; this is the floor."""
    fed = prompt_tokens + rows * max(new_tokens - 1, 0)
    return shape.layers_flops(shape.n_layers, fed) + shape.head_flops(rows * new_tokens)


# --------------------------------------------------------------------------------------------------
# the machine: matmul rate, peak memory, description


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(shapes: Iterable[tuple[int, int, int]] = ((2048, 2048, 2048),), dtype=torch.float32,
                device="cpu", repeats: int = 5) -> float:
    """The best rate in FLOP/s of (m×k)·(k×n) products, each shape warmed up once then timed ``repeats``
    times with the torch threads the phases use."""
    best = 0.0
    gen = torch.Generator(device="cpu").manual_seed(0)
    for m, k, n in shapes:
        a = torch.randn(m, k, generator=gen, dtype=dtype).to(device)
        b = torch.randn(k, n, generator=gen, dtype=dtype).to(device)
        a @ b
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            a @ b
            _sync(device)
            best = max(best, 2 * m * k * n / max(time.perf_counter() - t0, 1e-9))
    return best


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_bytes() -> int | None:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return _status_kb("VmHWM") is not None
    except OSError:
        return False


def _trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``), so that a block's RSS growth
    is not hidden by memory an earlier block freed but the allocator kept; a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of a block, in bytes above its start (``growth``) and in all (``peak``).

    On a CUDA device: the caching allocator's peak (``torch.cuda.max_memory_allocated``, reset on entry).
    On the CPU, the process's resident set, after handing freed heap memory back (``_trim_heap``; memory
    still cached elsewhere, e.g. by a library's own pool, is reused without showing as growth, so the
    growth is what the block needed beyond what the process held): the kernel's high-water mark VmHWM,
    reset on entry through
    /proc/self/clear_refs (exact, Linux); where that is not allowed, RSS sampled every few milliseconds
    by a thread (psutil or /proc; may miss short spikes); failing both, ``ru_maxrss``, which only ever
    grows, so the block's own peak shows only if it beats every earlier one. ``method`` says which.
    Blocks must not be nested: resetting the mark inside one would hide the outer block's earlier peak."""

    def __init__(self, device="cpu", interval: float = 0.005):
        self.device = torch.device(device)
        self.interval = interval
        self.method = ""
        self.start = self.peak = self.growth = 0
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            self.method = "cuda max_memory_allocated"
            return self
        _trim_heap()
        self.start = _rss_bytes() or 0
        if _reset_hwm():
            self.method = "VmHWM"
        elif self.start:
            self.method = "RSS sampling"
            self._sampled = self.start
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:
            import resource

            self.method = "ru_maxrss"
            self.start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._sampled = max(self._sampled, _rss_bytes() or 0)

    def __exit__(self, *exc) -> None:
        if self.method.startswith("cuda"):
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method == "VmHWM":
            self.peak = (_status_kb("VmHWM") or 0) * 1024
        elif self.method == "RSS sampling":
            self._stop.set()
            self._thread.join()
            self.peak = max(self._sampled, _rss_bytes() or 0)
        else:
            import resource

            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.growth = max(0, self.peak - self.start)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device="cpu") -> dict[str, Any]:
    """What the figures depend on: CPU model, logical CPUs, torch threads, GPU (when used), torch version."""
    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    info = {"cpu": _cpu_model(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "host": socket.gethostname(), "device": device.type}
    info["machine"] = (f"{info['cpu']}, {info['cpu_count']} CPUs, {info['threads']} torch threads"
                       + (f", {gpu}" if gpu else "") + f", torch {info['torch']}")
    return info


# --------------------------------------------------------------------------------------------------
# rows, CSV and markdown


def _round(x: float | None, digits: int = 4) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def phase_row(phase: str, wall_s: float, amount: float, unit: str, *, cpu_s: float | None = None,
              flops: float | None = None, rates: dict[str, float] | None = None, flops_fp64: float = 0.0,
              memory: PeakMemory | None = None, **extra) -> dict[str, Any]:
    """One CSV row. ``unit`` ending in "/s" is a rate (amount / wall); otherwise a cost (wall / amount).
    ``flops`` run at the fp32 matmul rate, ``flops_fp64`` at the fp64 rate (``set_floor``)."""
    throughput = amount / wall_s if unit.endswith("/s") else wall_s / amount if amount else None
    row: dict[str, Any] = {"phase": phase, "wall_s": _round(wall_s), "cpu_s": _round(cpu_s),
                           "amount": amount, "throughput": _round(throughput), "unit": unit}
    if flops is not None:
        row["gflop"] = _round(flops / 1e9, 6)
        if flops_fp64:
            row["gflop_fp64"] = _round(flops_fp64 / 1e9, 6)
        if rates:
            set_floor(row, rates)
    if memory is not None:
        row.update(peak_mb=_round(memory.growth / 2**20, 4), peak_rss_mb=_round(memory.peak / 2**20, 5),
                   peak_method=memory.method)
    row.update({k: v for k, v in extra.items() if v is not None})
    return row


def set_floor(row: dict, rates: dict[str, float]) -> None:
    """``floor_s`` = gflop / fp32 rate + gflop_fp64 / fp64 rate, and ``ratio`` = wall / floor, for a row
    with FLOP counts (others are left alone)."""
    if _num(row.get("gflop")) is None:
        return
    floor = (_num(row["gflop"]) * 1e9 / rates["float32"]
             + (_num(row.get("gflop_fp64")) or 0.0) * 1e9 / rates["float64"])
    row.update(floor_s=_round(floor), ratio=_round(_num(row["wall_s"]) / floor if floor else None, 3))


def rows_to_csv(rows: list[dict]) -> str:
    columns = [c for c in COLUMNS if any(c in r for r in rows)]
    for r in rows:
        columns += [c for c in r if c not in columns]
    buf = _stdio.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if v is None else v for k, v in r.items()})
    return buf.getvalue()


def write_csv(rows: list[dict], path: str | os.PathLike) -> None:
    io.write_text(path, rows_to_csv(rows))


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


class Recorder:
    """Rows of one run, rewritten atomically to ``<out_dir>/<run_id>_<host>-<device>.csv`` and
    ``<out_dir>/latest.csv`` after every ``add``; each row carries the run id and the machine description."""

    def __init__(self, out_dir: str | os.PathLike | None, machine: dict[str, Any], run_id: str | None = None,
                 **common):
        self.run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
        self.common = {"run_id": self.run_id, **common, **machine}
        self.rows: list[dict] = []
        self.paths: list[Path] = []
        if out_dir is not None:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{machine.get('host', 'host')}-{machine.get('device', 'cpu')}")
            self.paths = [Path(out_dir) / f"{self.run_id}_{slug}.csv", Path(out_dir) / "latest.csv"]

    def set_rates(self, rates: dict[str, float]) -> None:
        """Recompute every row's floor with ``rates`` (FLOP/s per dtype) and rewrite the files."""
        self.common.update(matmul_gflops_fp32=_round(rates["float32"] / 1e9),
                           matmul_gflops_fp64=_round(rates["float64"] / 1e9))
        for row in self.rows:
            row.update(matmul_gflops_fp32=self.common["matmul_gflops_fp32"],
                       matmul_gflops_fp64=self.common["matmul_gflops_fp64"])
            set_floor(row, rates)
        self.add()

    def add(self, *rows: dict) -> None:
        for row in rows:
            self.rows.append({**row, "load_avg": _load_average(), **self.common})
            print(format_row(self.rows[-1]), flush=True)
        text = rows_to_csv(self.rows)
        for path in self.paths:
            io.write_text(path, text)


def _load_average() -> float | None:
    """The 1-minute load average (None where unknown): other jobs' share of the cores when the row was made."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def busy_warning(threads: int | None = None) -> str | None:
    """A warning when other work occupies the cores torch's threads need. Each parallel region then waits
    for its slowest thread to get a time slice, which slows small matmuls (decoding, the residual step)
    by an order of magnitude; fewer threads (``--threads``) or a quiet machine give stable figures."""
    load, cpus = _load_average(), os.cpu_count() or 1
    threads = threads or torch.get_num_threads()
    if load is None or load < 1 or load + threads <= cpus + 0.5:
        return None
    return (f"warning: load average {load} on {cpus} CPUs with {threads} torch threads: the machine is busy "
            f"and the timings will be slow and noisy (--threads 1 suffers least)")


def _num(value) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _fmt(value, digits: int = 3) -> str:
    x = _num(value)
    if x is None:
        return ""
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:#.{digits}g}" if abs(x) < 1 else f"{x:.{max(digits - 1 - int(math.log10(abs(x))), 0)}f}"


def _speedup_cell(row: dict) -> str:
    s = _num(row.get("speedup"))
    if s is None:
        return problem(row) or ""
    check = row.get("check") or ""
    return f"{s:.2f}×" + (f" ({check})" if check else "")


def problem(row: dict) -> str | None:
    """The row's check when it reports a failure, a skipped phase or a mismatch, else None."""
    check = str(row.get("check") or "")
    return check if check.startswith(("FAILED", "SKIPPED", "MISMATCH")) else None


def markdown_table(rows: list[dict]) -> str:
    """The README table of benchmark rows (as written or as read back from the CSV): phase, wall s,
    throughput, unit, floor s, ratio = wall / floor, peak MB above the phase start, and on the fast path's
    rows the speed-up over the straightforward path with the agreement check."""
    lines = ["| " + " | ".join(MARKDOWN_HEADER) + " |", "|---|" + "---:|" * 2 + "---|" + "---:|" * 3 + "---|"]
    for r in rows:
        ratio = _num(r.get("ratio"))
        cells = [str(r.get("phase", "")), _fmt(r.get("wall_s")), _fmt(r.get("throughput")), str(r.get("unit", "")),
                 _fmt(r.get("floor_s")), "" if ratio is None else f"{_fmt(ratio)}×", _fmt(r.get("peak_mb")),
                 _speedup_cell(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_row(r: dict) -> str:
    line = (f"{r['phase']:36s} {_fmt(r.get('wall_s')):>8s} s {_fmt(r.get('throughput')):>9s} {r.get('unit', ''):9s}"
            f" floor {_fmt(r.get('floor_s')) or '-':>8s} s  ratio {_fmt(r.get('ratio')) or '-':>6s}"
            f"  peak {_fmt(r.get('peak_mb')) or '-':>6s} MB")
    if r.get("speedup") not in (None, ""):
        line += f"  {_fmt(r['speedup'])}× vs straightforward"
    if r.get("check"):
        line += f"  [{r['check']}]"
    return line


def format_rows(rows: list[dict]) -> str:
    return "\n".join(format_row(r) for r in rows)


# --------------------------------------------------------------------------------------------------
# comparisons of the fast paths with the straightforward ones


def compare_residuals(reference, fast, tol: float = 1e-4) -> tuple[bool, str]:
    """Whether two residual runs agree: max over edits of ‖r_fast − r_ref‖ / ‖r_ref‖ within ``tol`` and the
    same iteration counts. Returns (agree, description)."""
    ref, new = reference.residuals.double(), fast.residuals.double()
    if ref.shape != new.shape:
        return False, f"MISMATCH: residual shapes {tuple(ref.shape)} vs {tuple(new.shape)}"
    rel = ((new - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-30)).max().item() if len(ref) else 0.0
    same = list(reference.iterations) == list(fast.iterations)
    ok = rel <= tol and same
    text = f"max rel diff {rel:.2g}, " + ("same iterations" if same else
                                          f"iterations {list(reference.iterations)} vs {list(fast.iterations)}")
    return ok, text if ok else "MISMATCH: " + text


ACCURACY_KEYS = ("rewrite_acc", "paraphrase_acc", "neighborhood_acc")


def compare_evaluations(reference: tuple[list[dict], dict], fast: tuple[list[dict], dict]) -> list[str]:
    """Differences between two ``evaluate_records`` results: every per-record ``*_prompts_correct`` list and
    the summary accuracies must be identical. Returns one line per difference (empty: identical)."""
    (ref_rows, ref_summary), (new_rows, new_summary) = reference, fast
    problems: list[str] = []
    if len(ref_rows) != len(new_rows):
        problems.append(f"{len(ref_rows)} vs {len(new_rows)} records")
    for i, (a, b) in enumerate(zip(ref_rows, new_rows)):
        for key in sorted({k for k in (*a, *b) if k.endswith("_prompts_correct")}):
            if a.get(key) != b.get(key):
                problems.append(f"record {a.get('case_id', i)}: {key} {a.get(key)} vs {b.get(key)}")
    for key in ACCURACY_KEYS:
        if ref_summary.get(key) != new_summary.get(key):
            problems.append(f"summary {key}: {ref_summary.get(key)} vs {new_summary.get(key)}")
    return problems


def max_nll_difference(reference_rows: list[dict], fast_rows: list[dict]) -> float:
    """Largest absolute difference between the two runs' NLLs (``*_prompts_probs``), for the record."""
    worst = 0.0
    for a, b in zip(reference_rows, fast_rows):
        for key in (k for k in a if k.endswith("_prompts_probs")):
            for pa, pb in zip(a[key], b.get(key, [])):
                worst = max(worst, *(abs(pa[t] - pb[t]) for t in pa))
    return worst


def compare_texts(reference: list[str], fast: list[str]) -> list[str]:
    """Generated texts that differ (empty: identical)."""
    if len(reference) != len(fast):
        return [f"{len(reference)} vs {len(fast)} texts"]
    return [f"text {i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(reference, fast)) if a != b]


def _check(problems: list[str]) -> str:
    return "identical" if not problems else f"MISMATCH ({len(problems)}): " + "; ".join(problems[:3])


# --------------------------------------------------------------------------------------------------
# instrumentation of library calls


@contextlib.contextmanager
def counting_generate(model) -> Iterator[dict]:
    """Count what ``model.generate`` decodes while the block runs: rows, new positions per row summed
    (``decoded``: a finished row keeps decoding padding until its batch ends) and real prompt tokens."""
    counts = {"rows": 0, "decoded": 0, "prompt_tokens": 0, "calls": 0}
    original = model.generate

    def generate(*args, **kwargs):
        out = original(*args, **kwargs)
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        sequences = getattr(out, "sequences", out)
        counts["calls"] += 1
        counts["rows"] += ids.shape[0]
        counts["decoded"] += ids.shape[0] * (sequences.shape[1] - ids.shape[1])
        counts["prompt_tokens"] += int(mask.sum()) if mask is not None else ids.numel()
        return out

    model.generate = generate
    try:
        yield counts
    finally:
        del model.generate


@contextlib.contextmanager
def instrumented(module, name: str, device, log: list[dict]) -> Iterator[None]:
    """Replace ``module.name`` by a wrapper that records, per call, its wall and CPU seconds, peak memory,
    arguments and result into ``log`` (skipped where the module has no such attribute)."""
    original = getattr(module, name, None)
    if original is None:
        yield
        return

    def wrapper(*args, **kwargs):
        t0, c0 = time.perf_counter(), time.process_time()
        with PeakMemory(device) as mem:
            result = original(*args, **kwargs)
        log.append({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "memory": mem,
                    "args": args, "kwargs": kwargs, "result": result})
        return result

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


# --------------------------------------------------------------------------------------------------
# the phases


@dataclass
class Context:
    model: Any
    tokenizer: Any
    shape: ModelShape
    rates: dict[str, float]
    device: str
    add_bos: bool
    seed: int
    records: list[dict]


def _edit_prompt_sizes(ctx: Context, records: list[dict], groups, hp: dict) -> list[tuple[int, int, int]]:
    from massedit.editing.residual import build_edit_prompts

    sizes = []
    for record in records:
        prompts = build_edit_prompts(ctx.tokenizer, groups, record, ctx.add_bos, hp.get("essence_prompt", "{} is a"),
                                     hp.get("prompt_build", "ids"))
        sizes.append((int(prompts.attention_mask.sum()), *suffix_positions(prompts)))
    return sizes


def residual_rows(ctx: Context, method: str, hp: dict, fast=None, fast_memory=None,
                  tol: float = 1e-4) -> list[dict]:
    """Residual optimisation the straightforward way (``forward: straightforward``: the whole model and the
    LM head at every position, every iteration, one edit at a time) and the fast
    way (``hp`` as resolved with ``forward: fast``: for the independent methods ``batch_edits`` blocks);
    s/edit, floor, peak memory, the speed-up and whether the residuals agree. ``fast`` reuses a fast run
    (``Residuals``) already made, with its peak memory."""
    from massedit.editing.run import compute_residuals

    z_layer = max(int(x) for x in hp["layers"])
    runs: dict[str, tuple] = {}
    if fast is not None:
        runs["fast"] = (fast, fast_memory)
    modes = {"straightforward": {**hp, "forward": "straightforward", "batch_edits": 1},
             "fast": {**hp, "forward": "fast"}}
    for mode, mode_hp in modes.items():
        if mode in runs:
            continue
        with PeakMemory(ctx.device) as mem:
            res = compute_residuals(ctx.model, ctx.tokenizer, ctx.records, method, mode_hp, ctx.seed, ctx.add_bos,
                                    progress=False)
        runs[mode] = (res, mem)
    (ref, ref_mem), (new, new_mem) = runs["straightforward"], runs["fast"]
    sizes = _edit_prompt_sizes(ctx, ctx.records, new.templates, hp)
    ok, check = compare_residuals(ref, new, tol)
    rows = []
    for mode, res, mem in (("straightforward", ref, ref_mem), ("fast", new, new_mem)):
        flops = residual_flops(ctx.shape, z_layer, [(*s, it) for s, it in zip(sizes, res.iterations)])
        extra = {"speedup": _round(ref.timings["residuals_s"] / res.timings["residuals_s"], 3),
                 "check": check} if mode == "fast" else {}
        rows.append(phase_row(f"{method} residuals ({mode})", res.timings["residuals_s"], len(ctx.records),
                              "s/edit", cpu_s=res.timings.get("residuals_cpu_s"), flops=flops, rates=ctx.rates,
                              memory=mem, method=method, mode=mode, **extra))
    return rows


def edit_rows(ctx: Context, method: str, hp: dict, moments: dict, with_residuals: bool) -> list[dict]:
    """``run_edit`` with the fast path, instrumented: the residual call (compared with the straightforward
    one when ``with_residuals``), the keys for the update and the solves each get their own row and peak."""
    from massedit.editing import run as run_module
    from massedit.editing import update as update_module

    arch_layers = sorted(int(x) for x in hp["layers"])
    snapshot = {l: _down(ctx.model, l).detach().clone() for l in arch_layers}
    residual_log, keys_log, solve_log = [], [], []
    with instrumented(run_module, "compute_residuals", ctx.device, residual_log), \
            instrumented(update_module, "compute_keys", ctx.device, keys_log), \
            instrumented(update_module, "closed_form_delta", ctx.device, solve_log):
        result = run_module.run_edit(ctx.model, ctx.tokenizer, ctx.records, moments, method, {**hp, "forward": "fast"},
                                     ctx.seed, ctx.add_bos, progress=False)
    with torch.no_grad():  # the comparisons and the evaluation run on the unedited model
        for l, w in snapshot.items():
            _down(ctx.model, l).copy_(w)
    rows: list[dict] = []
    if with_residuals:
        fast = residual_log[0]["result"] if residual_log else None
        rows += residual_rows(ctx, method, hp, fast=fast,
                              fast_memory=residual_log[0]["memory"] if residual_log else None)
    t = result.timings
    keys_mem = _largest(keys_log)
    rows.append(phase_row(f"{method} keys (update)", t["keys_s"], len(ctx.records), "s/edit",
                          cpu_s=sum(e["cpu_s"] for e in keys_log) or None, memory=keys_mem, method=method))
    solve_fp64 = 0
    for entry in solve_log:
        C, K, R = entry["args"][:3]
        solve_fp64 += solve_flops(R.shape[0], C.shape[0], K.shape[1])
    rows.append(phase_row(f"{method} solve", t["solve_s"], len(arch_layers), "s/layer",
                          cpu_s=sum(e["cpu_s"] for e in solve_log) or None,
                          flops=0 if solve_log else None, flops_fp64=solve_fp64, rates=ctx.rates,
                          memory=_largest(solve_log), method=method))
    return rows


def _largest(log: list[dict]) -> PeakMemory | None:
    return max((e["memory"] for e in log), key=lambda m: m.growth, default=None)


def _down(model, layer: int):
    from massedit.architectures import arch_for, down_proj_weight

    return down_proj_weight(model, arch_for(model), layer)


def evaluation_rows(ctx: Context, prefixes: list[str], batch_size: int) -> list[dict]:
    """Scoring of the records (no generation) with ``mode="straightforward"`` and the default fast mode:
    s/record, floor (``evaluation_flops``), peak, speed-up, and whether every practical-correctness list and
    summary accuracy is identical."""
    from massedit.evaluation.counterfact import build_items, evaluate_records
    from massedit.tokens import encode_plain, target_ids

    items, _ = build_items(ctx.records, prefixes)
    n_inputs, n_scored = distinct_positions(
        (encode_plain(ctx.tokenizer, p, ctx.add_bos).ids, target_ids(ctx.tokenizer, p, t)) for p, t in items)
    flops = evaluation_flops(ctx.shape, n_inputs, n_scored)
    results, walls, cpus, mems = {}, {}, {}, {}
    for mode in ("straightforward", "fast"):
        t0, c0 = time.perf_counter(), time.process_time()
        with PeakMemory(ctx.device) as mems[mode]:
            results[mode] = evaluate_records(ctx.model, ctx.tokenizer, ctx.records, prefixes, ctx.add_bos,
                                             batch_size=batch_size, fluency_max_new_tokens=0, mode=mode)
        walls[mode], cpus[mode] = time.perf_counter() - t0, time.process_time() - c0
    problems = compare_evaluations(results["straightforward"], results["fast"])
    nll = max_nll_difference(results["straightforward"][0], results["fast"][0])
    check = _check(problems) + f", max NLL diff {nll:.2g}"
    rows = []
    for mode in ("straightforward", "fast"):
        extra = ({"speedup": _round(walls["straightforward"] / walls["fast"], 3), "check": check}
                 if mode == "fast" else {})
        rows.append(phase_row(f"evaluation scoring ({mode})", walls[mode], len(ctx.records), "s/record",
                              cpu_s=cpus[mode], flops=flops, rates=ctx.rates, memory=mems[mode], mode=mode,
                              scored_items=len(items), distinct_inputs=n_inputs, distinct_scored=n_scored, **extra))
    return rows


def generation_rows(ctx: Context, max_new_tokens: int, batch_size: int) -> list[dict]:
    """Greedy generation of the records' generation prompts (the fluency metric) without and with the
    key-value cache, same batches: decoded tokens/s, floor (``generation_flops``), peak, speed-up, and
    whether the texts are identical."""
    from massedit.evaluation.fluency import generate_greedy

    prompts = [p for rec in ctx.records for p in rec.get("generation_prompts") or []]
    if not prompts or max_new_tokens <= 0:
        return []
    texts, rows, walls = {}, [], {}
    for mode, use_cache in (("no cache", False), ("KV cache", True)):
        t0, c0 = time.perf_counter(), time.process_time()
        with PeakMemory(ctx.device) as mem, counting_generate(ctx.model) as counts:
            texts[mode] = generate_greedy(ctx.model, ctx.tokenizer, prompts, ctx.add_bos, max_new_tokens=max_new_tokens,
                                          batch_size=batch_size, use_cache=use_cache)
        walls[mode] = time.perf_counter() - t0
        flops = generation_flops(ctx.shape, counts["prompt_tokens"], counts["rows"],
                                 counts["decoded"] // max(counts["rows"], 1))
        extra = {}
        if use_cache:
            extra = {"speedup": _round(walls["no cache"] / walls[mode], 3),
                     "check": _check(compare_texts(texts["no cache"], texts[mode]))}
        rows.append(phase_row(f"fluency generation ({mode})", walls[mode], counts["decoded"], "tokens/s",
                              cpu_s=time.process_time() - c0, flops=flops, rates=ctx.rates, memory=mem,
                              mode="straightforward" if not use_cache else "fast", **extra))
    return rows


def select_phases(phases: Iterable[str] | None) -> list[str]:
    """The requested phases plus what they need, in pipeline order; unknown names raise."""
    wanted = set(PHASES if phases is None else phases)
    unknown = wanted - set(PHASES)
    if unknown:
        raise ValueError(f"unknown phases {sorted(unknown)}; available: {', '.join(PHASES)}")
    for phase in reversed(PHASES):
        if phase in wanted:
            wanted.update(PHASE_NEEDS.get(phase, ()))
    return [p for p in PHASES if p in wanted]


def measure_rates(shape: ModelShape, device="cpu") -> dict[str, float]:
    """Best fp32 and fp64 matmul rates (FLOP/s) on ``device``: a 2048³ product and the model's MLP shapes
    (512 tokens × hidden × intermediate, both ways) in fp32; the d_ff³ product (the solve's size) in fp64."""
    d, f = shape.hidden, shape.intermediate
    return {"float32": matmul_rate(((2048, 2048, 2048), (512, d, f), (512, f, d)), torch.float32, device),
            "float64": matmul_rate(((min(f, 2048),) * 3,), torch.float64, device)}


def run(model_dir: str, hparams: dict[str, dict], n_edits: int = 3, n_docs: int = 64, maxlen: int = 128,
        add_bos: bool = False, seed: int = 0, phases: Iterable[str] | None = None, device: str = "cpu",
        dtype: str = "float32", stats: dict | None = None, evaluation: dict | None = None,
        out_dir: str | None = "results/benchmarks", run_id: str | None = None) -> list[dict]:
    """Every phase in ``phases`` (default all; see ``select_phases``) on ``n_edits`` quick-start records.

    ``hparams`` maps each method to its resolved hyperparameters, as the workflow passes them
    (``massedit.config.resolve_hparams``), so the benchmark times what a run executes. ``stats`` holds the
    statistics settings (``dtype``, ``batch_tokens``), ``evaluation`` the evaluation ones (``prefix_len``,
    ``n_prefixes``, ``prefix_seed``, ``fluency_max_new_tokens``, ``batch_size``). Rows go to ``out_dir``
    (``Recorder``; None: nowhere) as each phase ends, and are returned. A phase that raises is recorded
    with ``check`` "FAILED: ..." and the run goes on without the phases that need it."""
    from massedit.architectures import arch_for
    from massedit.corpora import load_documents
    from massedit.datasets.quickstart import build_records
    from massedit.models import load_model
    from massedit.stats import second_moments
    from massedit.templates import eval_prefixes

    phases = select_phases(phases)
    stats = {"dtype": "float32", "batch_tokens": 4096, **(stats or {})}
    evaluation = {"prefix_len": 5, "n_prefixes": 10, "prefix_seed": 0, "fluency_max_new_tokens": 64,
                  "batch_size": 32, **(evaluation or {})}
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available")

    t0, c0 = time.perf_counter(), time.process_time()
    with PeakMemory(device) as mem:
        model, tokenizer = load_model(model_dir, dtype=dtype, device=device)
    load = phase_row("load model", time.perf_counter() - t0, 1, "s/model", cpu_s=time.process_time() - c0,
                     memory=mem)
    shape = ModelShape.from_config(model.config)
    rates = measure_rates(shape, device)
    recorder = Recorder(out_dir, machine_info(device), run_id, n_edits=n_edits, dtype=dtype,
                        matmul_gflops_fp32=_round(rates["float32"] / 1e9),
                        matmul_gflops_fp64=_round(rates["float64"] / 1e9))
    print(f"matmul rate: {rates['float32'] / 1e9:.1f} GFLOP/s fp32, {rates['float64'] / 1e9:.1f} GFLOP/s fp64 "
          f"on {recorder.common['machine']}; phases: {', '.join(phases)}", flush=True)
    warning = busy_warning()
    if warning:
        print(warning, flush=True)
    recorder.add(load)
    ctx = Context(model, tokenizer, shape, rates, device, add_bos, seed, build_records(seed)[:n_edits])

    state: dict[str, Any] = {}
    failed: list[str] = []

    def attempt(name: str, needs: tuple[str, ...], measure) -> None:
        """Run one phase and record its rows; a phase that fails is recorded as FAILED (traceback on stderr)
        and the run goes on, without the phases that need it."""
        missing = [n for n in needs if n in failed]
        if missing:
            recorder.add({"phase": name, "check": f"SKIPPED: needs {', '.join(missing)}"})
            failed.append(name)
            return
        try:
            recorder.add(*measure())
        except Exception as err:  # noqa: BLE001 - recorded, and the script exits non-zero
            traceback.print_exc()
            recorder.add({"phase": name, "check": f"FAILED: {type(err).__name__}: {err}"[:300]})
            failed.append(name)

    def corpus() -> list[dict]:
        t0, c0 = time.perf_counter(), time.process_time()
        with PeakMemory(device) as mem, counting_generate(model) as counts:
            state["docs"], _ = load_documents({"kind": "model_sample", "doc_tokens": maxlen, "temperature": 1.0},
                                              n_docs, seed, model=model, tokenizer=tokenizer, add_bos=add_bos)
        flops = generation_flops(shape, counts["prompt_tokens"], counts["rows"],
                                 counts["decoded"] // max(counts["rows"], 1))
        return [phase_row("generation (corpus sample)", time.perf_counter() - t0, counts["decoded"], "tokens/s",
                          cpu_s=time.process_time() - c0, flops=flops, rates=rates, memory=mem)]

    def statistics() -> list[dict]:
        # one statistics pass covers every method's layers, as the workflow shares them
        layers = sorted({int(layer) for hp in hparams.values() for layer in hp["layers"]})
        c0 = time.process_time()
        with PeakMemory(device) as mem:
            sums, count, info = second_moments(model, tokenizer, arch_for(model), layers, state["docs"], maxlen,
                                               add_bos, dtype=stats["dtype"], batch_tokens=int(stats["batch_tokens"]),
                                               progress=False)
        forward, accumulate = statistics_flops(shape, layers, count)
        fp64 = stats["dtype"] == "float64"
        state["moments"] = {layer: sums[layer].double() / count for layer in layers}
        return [phase_row(f"statistics (layers {'-'.join(map(str, layers))}, {stats['dtype']})", info["wall_s"],
                          count, "tokens/s", cpu_s=time.process_time() - c0,
                          flops=forward + (0 if fp64 else accumulate), flops_fp64=accumulate if fp64 else 0,
                          rates=rates, memory=mem)]

    if "corpus" in phases:
        attempt("generation (corpus sample)", (), corpus)
    if "stats" in phases:
        attempt("statistics", ("generation (corpus sample)",), statistics)
    for method, hp in hparams.items():
        if "solve" in phases:
            attempt(f"{method} update", ("statistics",),
                    lambda: edit_rows(ctx, method, hp, state["moments"], with_residuals="residuals" in phases))
        elif "residuals" in phases:
            attempt(f"{method} residuals", (), lambda: residual_rows(ctx, method, hp))
    if "eval" in phases or "generation" in phases:
        prefixes = eval_prefixes(model, tokenizer, int(evaluation["prefix_len"]), int(evaluation["n_prefixes"]),
                                 int(evaluation["prefix_seed"]), add_bos)
        if "eval" in phases:
            attempt("evaluation scoring", (), lambda: evaluation_rows(ctx, prefixes, int(evaluation["batch_size"])))
        if "generation" in phases:
            attempt("fluency generation", (), lambda: generation_rows(ctx, int(evaluation["fluency_max_new_tokens"]),
                                                                      int(evaluation["batch_size"])))
    # A machine shared with other jobs may have been busy during the first measurement: the floors use the
    # best rate of a measurement before and one after the phases.
    again = measure_rates(shape, device)
    best = {dt: max(rates[dt], again[dt]) for dt in rates}
    print(f"\nmatmul rate after the phases: {again['float32'] / 1e9:.1f} GFLOP/s fp32, "
          f"{again['float64'] / 1e9:.1f} GFLOP/s fp64; floors use the best of both", flush=True)
    recorder.set_rates(best)
    if recorder.paths:
        print(f"written: {', '.join(map(str, recorder.paths))}")
    return recorder.rows

