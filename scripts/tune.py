"""Rule tune_method: search one method's edit settings for one model on held-out edits (docs/tuning.md)."""
import argparse

from _wiring import console_logging, limit_threads, redirect_logs


def main(method: str, model: str, base_hp: dict, grid: dict, selection: dict, model_dir: str, model_cfg: dict,
         records: str, dataset_spec: dict, stats_npz: str, seed: int, out_csv: str, out_yaml: str, out_meta: str,
         threads: int = 1) -> None:
    limit_threads(threads)
    from massedit import tuning

    tuning.tune_model(method, model, base_hp, grid, selection, model_dir, model_cfg, records, dataset_spec,
                      stats_npz, seed, out_csv, out_yaml, out_meta)


if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    main(
        snakemake.wildcards.method,
        snakemake.wildcards.model,
        snakemake.params.base_hp,
        snakemake.params.grid,
        snakemake.params.selection,
        snakemake.input.model,
        snakemake.params.model_cfg,
        snakemake.input.records,
        snakemake.params.dataset_spec,
        snakemake.input.stats,
        snakemake.params.seed,
        snakemake.output.search,
        snakemake.output.chosen,
        snakemake.output.meta,
        snakemake.threads,
    )
elif __name__ == "__main__":
    from massedit import config as mc
    from massedit import tuning

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--method", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--records", required=True, help="records.jsonl of prepare_dataset (the tune dataset)")
    parser.add_argument("--stats", required=True, help=".npz of compute_layer_stats covering every layer of the grid")
    parser.add_argument("--out-search", required=True)
    parser.add_argument("--out-chosen", required=True)
    parser.add_argument("--out-meta", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    console_logging()
    cfg = mc.load_config(args.configfile)
    settings = tuning.settings(cfg)
    hp = mc.resolve_hparams(cfg, args.method, args.model)
    main(
        args.method, args.model, tuning.search_hparams(hp, args.method),
        tuning.method_grid(settings["grid"], args.method, hp), tuning.selection(cfg, settings),
        args.model_dir, mc.model_spec(cfg, args.model), args.records, mc.dataset_spec(cfg, settings["dataset"]),
        args.stats, cfg["seed"], args.out_search, args.out_chosen, args.out_meta, args.threads,
    )
