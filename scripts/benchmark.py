"""Per-phase benchmark of the pipeline on one model; prints a table and writes results/benchmark/*.csv.

    python scripts/benchmark.py --model smollm2-135m
    python scripts/benchmark.py --residuals-only --n-edits 2 --out results/benchmark/residuals.csv

Hyperparameters, BOS policy and seed come from the configuration, resolved for the model as the workflow
resolves them.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from massedit import benchmark  # noqa: E402
from massedit import config as mc  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--configfile", default="config/config.yaml")
parser.add_argument("--model", default="smollm2-135m", help="key of `models` in the config")
parser.add_argument("--model-dir", help="default: resources/models/<model>/hf")
parser.add_argument("--methods", default="eamet,memit")
parser.add_argument("--n-edits", type=int, default=3)
parser.add_argument("--n-docs", type=int, default=64)
parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
parser.add_argument("--residuals-only", action="store_true",
                    help="only residual optimisation, forward: full against forward: fast")
parser.add_argument("--out", default="results/benchmark/phases.csv")
args = parser.parse_args()
if args.threads:
    import torch

    torch.set_num_threads(args.threads)
cfg = mc.load_config(args.configfile)
hparams = {method: mc.resolve_hparams(cfg, method, args.model) for method in args.methods.split(",")}
rows = benchmark.run(args.model_dir or f"resources/models/{args.model}/hf", hparams, n_edits=args.n_edits,
                     n_docs=args.n_docs, add_bos=bool(cfg["models"][args.model].get("bos", False)),
                     seed=cfg["seed"], residuals_only=args.residuals_only)
print(benchmark.format_rows(rows))
benchmark.write_csv(rows, args.out)
print(f"\nwritten: {args.out}")
