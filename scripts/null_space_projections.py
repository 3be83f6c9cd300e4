"""Rule null_space_projections: AlphaEdit's projection per layer from the cached statistics."""
from _wiring import limit_threads, redirect_logs

if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    limit_threads(snakemake.threads)
    import torch

    from massedit import steps
    from massedit.config import parse_layers_key

    steps.null_space_projections(
        snakemake.input.stats, parse_layers_key(snakemake.wildcards.layers), float(snakemake.wildcards.threshold),
        snakemake.output.pt, snakemake.output.json, "cuda" if torch.cuda.is_available() else "cpu",
    )
