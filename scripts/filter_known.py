"""Rule filter_known: the facts of one dataset that the unedited model already answers."""
import argparse

from _wiring import console_logging, limit_threads, redirect_logs


def main(records: str, model_dir: str, model_cfg: dict, out_records: str, out_manifest: str, threads: int = 1) -> None:
    limit_threads(threads)
    from massedit import steps

    steps.filter_known(records, model_dir, model_cfg, out_records, out_manifest)


if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    main(
        snakemake.input.records,
        snakemake.input.model,
        snakemake.params.model_cfg,
        snakemake.output.records,
        snakemake.output.manifest,
        snakemake.threads,
    )
elif __name__ == "__main__":
    from massedit import config as mc

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--model", required=True)
    parser.add_argument("--records", required=True, help="records.jsonl of prepare_dataset")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--out-records", required=True)
    parser.add_argument("--out-manifest", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    console_logging()
    cfg = mc.load_config(args.configfile)
    main(args.records, args.model_dir, mc.model_spec(cfg, args.model), args.out_records, args.out_manifest,
         args.threads)
