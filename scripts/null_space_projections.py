"""Rule null_space_projections: AlphaEdit's projection per layer from the cached statistics."""
from _wiring import limit_threads, redirect_logs

if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    limit_threads(snakemake.threads)
    import torch

    from massedit import steps
    from massedit.config import model_dir_of, parse_layers_key

    # the statistics must carry the key of the settings and weights this projection is for
    expected = steps.expected_stats_key(model_dir_of(snakemake.input.fingerprint), snakemake.params.model_cfg,
                                        snakemake.params.stats_settings)
    steps.null_space_projections(
        snakemake.input.stats, parse_layers_key(snakemake.wildcards.layers), float(snakemake.wildcards.threshold),
        snakemake.output.pt, snakemake.output.json, "cuda" if torch.cuda.is_available() else "cpu",
        expected, snakemake.output.timings,
    )
