"""Rule select_edits: the first n records (optionally only facts the unedited model knows) for one model."""
import argparse

from _wiring import console_logging, limit_threads, redirect_logs


def main(records: str, model_dir: str, model_cfg: dict, dataset_spec: dict, n: int, seed: int,
         out_records: str, out_manifest: str, threads: int = 1) -> None:
    limit_threads(threads)
    from massedit import steps

    steps.select_edits(records, model_dir, model_cfg, dataset_spec, n, seed, out_records, out_manifest)


if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    main(
        snakemake.input.records,
        snakemake.input.model,
        snakemake.params.model_cfg,
        snakemake.params.dataset_spec,
        int(snakemake.wildcards.n),
        snakemake.params.seed,
        snakemake.output.records,
        snakemake.output.manifest,
        snakemake.threads,
    )
elif __name__ == "__main__":
    from massedit import config as mc

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--records", required=True, help="records.jsonl of prepare_dataset")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--out-records", required=True)
    parser.add_argument("--out-manifest", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    console_logging()
    cfg = mc.load_config(args.configfile)
    main(
        args.records, args.model_dir, mc.model_spec(cfg, args.model), mc.dataset_spec(cfg, args.dataset),
        args.n, cfg["seed"], args.out_records, args.out_manifest, args.threads,
    )
