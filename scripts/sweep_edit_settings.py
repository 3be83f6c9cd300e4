"""Sweep of edit settings for a new model: optimise the residuals once, then try layer sets and λ.

The residuals depend only on the z-layer (the last edited layer) and the residual hyperparameters, not
on λ or the lower layers, so one residual pass serves the whole λ × layer-set grid. Efficacy and
generalisation are practical accuracies on the bare rewrite and paraphrase prompts.

    python scripts/sweep_edit_settings.py --model-dir resources/models/smollm2-135m/hf --method eamet \
        --z-layer 4 --n-edits 6 --set clamp_ks_factor=20 --mirror ../shared/data
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from massedit.architectures import arch_for  # noqa: E402
from massedit.corpora import load_documents  # noqa: E402
from massedit.datasets.quickstart import build_records  # noqa: E402
from massedit.editing.keys import compute_keys  # noqa: E402
from massedit.editing.residual import build_edit_prompts  # noqa: E402
from massedit.editing.run import RESIDUAL_STEPS, ResidualContext  # noqa: E402
from massedit.editing.update import apply_deltas, apply_multilayer_update  # noqa: E402
from massedit.evaluation.counterfact import known_mask  # noqa: E402
from massedit.evaluation.scoring import score_targets  # noqa: E402
from massedit.models import load_model  # noqa: E402
from massedit.stats import second_moments  # noqa: E402
from massedit.templates import context_templates  # noqa: E402

DEFAULTS = {
    "eamet": {"clamp_ks_factor": 2.0, "cs_factor": 2, "mse_factor": 8, "tau": 0.07, "top_m": 50},
    "memit": {"clamp_norm_factor": 0.75, "v_weight_decay": 0.5},
}

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model-dir", required=True)
parser.add_argument("--method", choices=sorted(DEFAULTS), required=True)
parser.add_argument("--z-layer", type=int, required=True)
parser.add_argument("--n-edits", type=int, default=6)
parser.add_argument("--lambdas", default="1,10,100,1000,4000")
parser.add_argument("--depths", default="1,2,4", help="numbers of layers ending at the z-layer")
parser.add_argument("--set", action="append", default=[], help="hyperparameter override KEY=VALUE")
parser.add_argument("--mirror", required=True, help="data mirror holding corpus/wikitext-103")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

model, tok = load_model(args.model_dir)
arch = arch_for(model)
records = build_records(args.seed)
records = [r for r, k in zip(records, known_mask(model, tok, records, False)) if k][: args.n_edits]
z = args.z_layer
depths = [int(x) for x in args.depths.split(",")]
all_layers = list(range(z - max(depths) + 1, z + 1))
docs, _ = load_documents({"kind": "text_files", "paths": ["corpus/wikitext-103/wiki.valid.tokens",
                                                        "corpus/wikitext-103/wiki.test.tokens"]},
                         400, 0, args.mirror)
sums, count, _ = second_moments(model, tok, arch, all_layers, docs, 256, False, progress=False)
moments = {layer: sums[layer].double() / count for layer in all_layers}

hp = {"layers": [z], "v_lr": 0.5, "v_num_grad_steps": 25, "kl_factor": 0.0625, "early_stop": 0.01,
      **DEFAULTS[args.method]}
for item in args.set:
    key, value = item.split("=", 1)
    hp[key] = json.loads(value)
groups = context_templates(model, tok, {}, args.seed, False)
ctx = ResidualContext(model, arch, z, hp, compute_keys(model, tok, arch, records, groups, [z], False).keys[z])
step, spreading = RESIDUAL_STEPS[args.method]
hs = []
for i, record in enumerate(records):
    result = step(ctx, i, build_edit_prompts(tok, groups, record, False))
    ctx.add(result.delta)
    hs.append(result.h)
    print(f"edit {i}: {result.iterations} passes, losses {({k: round(v, 3) for k, v in result.losses.items()})}, "
          f"|r|={result.delta.norm():.1f} |h|={result.h.norm():.1f}", flush=True)
Z = torch.stack(hs) + ctx.residuals
rewrite = [(r["prompt"].format(r["subject"]), r["target_new"]) for r in records]
paraphrase = [(p, r["target_new"]) for r in records for p in r["paraphrase_prompts"]]
print("| layers | λ | Eff. | Gen. |\n|---|---:|---:|---:|")
for depth in depths:
    layers = list(range(z - depth + 1, z + 1))
    for lam in [float(x) for x in args.lambdas.split(",")]:
        deltas, _ = apply_multilayer_update(model, tok, arch, records, groups, layers, z, Z, moments,
                                            [lam] * len(layers), False, spreading)
        eff = sum(s.exact for s in score_targets(model, tok, rewrite, False)) / len(rewrite)
        gen = sum(s.exact for s in score_targets(model, tok, paraphrase, False)) / len(paraphrase)
        apply_deltas(model, arch, deltas, -1.0)
        print(f"| {layers} | {lam:g} | {100 * eff:.0f} | {100 * gen:.0f} |", flush=True)
