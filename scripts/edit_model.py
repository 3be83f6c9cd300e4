"""Rule edit_model: apply one method's batch of edits and store the weight deltas and artefacts."""
import argparse

from _wiring import console_logging, limit_threads, redirect_logs


def main(method: str, hparams: dict, model_dir: str, model_cfg: dict, records: str, stats_npz: str | None, seed: int,
         out_deltas: str, out_artefacts: str, out_meta: str, threads: int = 1, projections: str | None = None,
         residuals: str | None = None, stats_settings: dict | None = None, out_timings: str | None = None) -> None:
    limit_threads(threads)
    from massedit import steps

    steps.edit_model(method, hparams, model_dir, model_cfg, records, stats_npz, seed, out_deltas, out_artefacts,
                     out_meta, projections, residuals, stats_settings, out_timings)


def _optional(value) -> str | None:
    """A named input that an input function left empty arrives as an empty list."""
    return value if isinstance(value, str) and value else None


if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    from massedit import preflight

    preflight.check_job(snakemake.config, model=snakemake.wildcards.model, method=snakemake.wildcards.method,
                        model_dir=snakemake.input.model)
    main(
        snakemake.wildcards.method,
        snakemake.params.hparams,
        snakemake.input.model,
        snakemake.params.model_cfg,
        snakemake.input.records,
        _optional(snakemake.input.get("stats")),
        snakemake.params.seed,
        snakemake.output.deltas,
        snakemake.output.artefacts,
        snakemake.output.meta,
        snakemake.threads,
        _optional(snakemake.input.get("projections")),
        _optional(snakemake.input.get("residuals")),
        snakemake.params.get("stats_settings"),
        snakemake.output.get("timings"),
    )
elif __name__ == "__main__":
    from massedit import config as mc

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--method", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--records", required=True, help="records.jsonl of select_edits")
    parser.add_argument("--stats", required=True, help=".npz of compute_layer_stats")
    parser.add_argument("--out-deltas", required=True)
    parser.add_argument("--out-artefacts", required=True)
    parser.add_argument("--out-meta", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    console_logging()
    cfg = mc.load_config(args.configfile)
    main(
        args.method, mc.resolve_hparams(cfg, args.method, args.model), args.model_dir, mc.model_spec(cfg, args.model),
        args.records, args.stats, cfg["seed"], args.out_deltas, args.out_artefacts, args.out_meta, args.threads,
    )
