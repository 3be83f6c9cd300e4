"""Per-phase benchmark of the pipeline on one model: wall time, throughput, peak memory, floor and the
straightforward paths' speed; prints each phase as it ends and writes results/benchmarks/<run>.csv and
results/benchmarks/latest.csv.

    python scripts/benchmark.py --model smollm2-135m
    python scripts/benchmark.py --n-edits 2 --methods memit --phases residuals,eval
    python scripts/benchmark.py --device cuda
    python scripts/benchmark.py --markdown results/benchmarks/latest.csv    # the README table

Phases: corpus (the model-sampled statistics corpus), stats, residuals (straightforward against fast),
solve (keys and closed-form solve of the update), eval (scoring, straightforward against fast), generation
(fluency generation without and with the KV cache); a phase brings in the ones it needs (solve: stats,
stats: corpus). Hyperparameters, BOS policy, seed, model dtype, statistics and evaluation settings come
from the configuration, resolved for the model as the workflow resolves them.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from massedit import benchmark  # noqa: E402
from massedit import config as mc  # noqa: E402
from massedit.stats import DTYPES as STATS_DTYPES  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--configfile", default="config/config.yaml")
parser.add_argument("--model", default="smollm2-135m", help="key of `models` in the config")
parser.add_argument("--model-dir", help="default: resources/models/<model>/hf")
parser.add_argument("--methods", default="eamet,memit", help="comma-separated method names")
parser.add_argument("--phases", default=",".join(benchmark.PHASES),
                    help=f"comma-separated subset of {','.join(benchmark.PHASES)} (default: all)")
parser.add_argument("--n-edits", type=int, default=3)
parser.add_argument("--n-docs", type=int, default=64, help="documents of the statistics corpus sample")
parser.add_argument("--maxlen", type=int, default=128, help="tokens per statistics document")
parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
parser.add_argument("--stats-dtype", choices=sorted(STATS_DTYPES),
                    help="accumulation dtype of the statistics (default: the config's stats.dtype; the "
                         "statistics code has no half-precision option)")
parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
parser.add_argument("--residuals-only", action="store_true", help="same as --phases residuals")
parser.add_argument("--out-dir", default="results/benchmarks")
parser.add_argument("--scaling", metavar="N,N,...",
                    help="time and peak memory of the phases that grow with the number of edits, at these n, on "
                         "random data of the model's shapes (massedit/scaling.py), instead of the phases")
parser.add_argument("--markdown", metavar="CSV", help="print CSV's rows as the README's markdown table and exit")
args = parser.parse_args()

if args.markdown:
    print(benchmark.markdown_table(benchmark.read_csv(args.markdown)))
    sys.exit(0)
if args.threads:
    import torch

    torch.set_num_threads(args.threads)
cfg = mc.load_config(args.configfile)
if args.scaling:
    import json

    from massedit import scaling

    model_dir = args.model_dir or f"resources/models/{args.model}/hf"
    shape = json.loads((Path(model_dir) / "config.json").read_text())
    d, d_ff = shape["hidden_size"], shape["intermediate_size"]
    rows = scaling.run([int(n) for n in args.scaling.split(",")], d, d_ff, args.device)
    # their own directory, so latest.csv keeps the phase benchmark
    recorder = benchmark.Recorder(Path(args.out_dir) / "scaling", benchmark.machine_info(args.device))
    recorder.add(*rows)
    print(benchmark.markdown_table(rows))
    sys.exit(0)
if args.model not in cfg["models"]:
    parser.error(f"--model {args.model!r} is not in {args.configfile}; models: {', '.join(cfg['models'])}")
methods = [m for m in args.methods.split(",") if m]
phases = ["residuals"] if args.residuals_only else [p for p in args.phases.split(",") if p]
try:
    benchmark.select_phases(phases)
except ValueError as err:
    parser.error(str(err))
hparams = {method: mc.resolve_hparams(cfg, method, args.model) for method in methods}
model_dir = args.model_dir or f"resources/models/{args.model}/hf"
if not (Path(model_dir) / "config.json").is_file():
    parser.error(f"{model_dir} holds no converted model: acquire it (snakemake "
                 f"resources/models/{args.model}/manifest.json) or pass --model-dir")
stats = {"dtype": args.stats_dtype or mc.stats_settings(cfg, args.model)["dtype"],
         "batch_tokens": mc.stats_runtime(cfg)["batch_tokens"]}
rows = benchmark.run(
    model_dir, hparams, n_edits=args.n_edits, n_docs=args.n_docs, maxlen=args.maxlen,
    add_bos=bool(cfg["models"][args.model].get("bos", False)), seed=cfg["seed"],
    phases=phases,
    device=args.device, dtype=cfg["models"][args.model].get("dtype", "float32"), stats=stats,
    evaluation={**cfg["evaluation"]}, out_dir=args.out_dir,
)
print()
print(benchmark.markdown_table(rows))
problems = [f"{r['phase']}: {benchmark.problem(r)}" for r in rows if benchmark.problem(r)]
if problems:
    print("\n" + "\n".join(problems), file=sys.stderr)
    sys.exit(1)
