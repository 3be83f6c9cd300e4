"""Rule compute_layer_stats: uncentred second moments of the MLP down-projection inputs for a layer set."""
import argparse

from _wiring import console_logging, limit_threads, redirect_logs


def main(model_dir: str, model_cfg: dict, layers: list[int], corpus_name: str, corpus_spec: dict,
         stats_cfg: dict, mirror_dir: str | None, seed: int, out_npz: str, out_json: str, threads: int = 1,
         out_timings: str | None = None) -> None:
    limit_threads(threads)
    from massedit import steps

    steps.compute_stats(model_dir, model_cfg, layers, corpus_name, corpus_spec, stats_cfg, mirror_dir, seed,
                        out_npz, out_json, out_timings)


if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    from massedit import config as mc
    from massedit import preflight

    w = snakemake.wildcards
    # The model's depth is known from here on: its layer settings are checked before any work.
    preflight.check_job(snakemake.config, model=w.model, layers=mc.parse_layers_key(w.layers),
                        model_dir=mc.model_dir_of(snakemake.input.fingerprint))
    # The file name carries the settings that determine the result; batch sizes come from the config
    # untracked, since they change only speed and memory.
    stats_cfg = {"n_docs": int(w.n_docs), "maxlen": int(w.maxlen), "dtype": w.dtype,
                 **mc.stats_runtime(snakemake.config)}
    main(
        mc.model_dir_of(snakemake.input.fingerprint),
        snakemake.params.model_cfg,
        mc.parse_layers_key(w.layers),
        w.corpus,
        snakemake.params.corpus_spec,
        stats_cfg,
        mc.mirror_dir(snakemake.config),
        snakemake.params.seed,
        snakemake.output.npz,
        snakemake.output.json,
        snakemake.threads,
        snakemake.output.timings,
    )
elif __name__ == "__main__":
    from massedit import config as mc

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--model", required=True)
    parser.add_argument("--method", required=True, help="use this method's layer set for the model")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--out-npz", required=True)
    parser.add_argument("--out-json", required=True)
    parser.add_argument("--out-timings", help="wall-clock times (default: the log)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    console_logging()
    cfg = mc.load_config(args.configfile)
    settings = mc.stats_settings(cfg, args.model)
    stats_cfg = {key: settings[key] for key in ("n_docs", "maxlen", "dtype")} | mc.stats_runtime(cfg)
    main(
        args.model_dir, mc.model_spec(cfg, args.model), mc.resolve_hparams(cfg, args.method, args.model)["layers"],
        settings["corpus"], mc.corpus_spec(cfg, settings["corpus"]), stats_cfg, mc.mirror_dir(cfg),
        settings["seed"], args.out_npz, args.out_json, args.threads, args.out_timings,
    )
