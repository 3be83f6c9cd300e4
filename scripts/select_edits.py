"""Rule select_edits: the first n records of a dataset (of the facts the model knows, with keep_known)."""
import argparse

from _wiring import console_logging, redirect_logs


def main(records: str, known_manifest: str | None, dataset_spec: dict, n: int, seed: int, out_records: str,
         out_manifest: str) -> None:
    from massedit import steps

    steps.select_edits(records, known_manifest, dataset_spec, n, seed, out_records, out_manifest)


if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    from massedit import preflight

    # The records after the known-fact filter are counted only now; a batch larger than them names its key.
    preflight.check_job(snakemake.config, model=snakemake.wildcards.model, dataset=snakemake.wildcards.dataset,
                        n=int(snakemake.wildcards.n), records=snakemake.input.records)
    main(
        snakemake.input.records,
        snakemake.input.get("known_manifest") or None,
        snakemake.params.dataset_spec,
        int(snakemake.wildcards.n),
        snakemake.params.seed,
        snakemake.output.records,
        snakemake.output.manifest,
    )
elif __name__ == "__main__":
    from massedit import config as mc

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--records", required=True, help="records.jsonl of prepare_dataset or filter_known")
    parser.add_argument("--known-manifest", help="manifest.json of filter_known, when the records come from it")
    parser.add_argument("--out-records", required=True)
    parser.add_argument("--out-manifest", required=True)
    args = parser.parse_args()
    console_logging()
    cfg = mc.load_config(args.configfile)
    main(args.records, args.known_manifest, mc.dataset_spec(cfg, args.dataset), args.n, cfg["seed"],
         args.out_records, args.out_manifest)
