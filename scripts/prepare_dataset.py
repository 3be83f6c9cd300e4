"""Rule prepare_dataset: fetch, verify and normalise one dataset into records.jsonl plus manifest."""
import argparse

from _wiring import console_logging, redirect_logs


def main(name: str, spec: dict, mirror_dir: str | None, download_dir: str, out_records: str, out_manifest: str) -> None:
    from massedit import steps

    steps.prepare_dataset(name, spec, mirror_dir, download_dir, out_records, out_manifest)


if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    from massedit.config import mirror_dir

    # The mirror is a location, not a determinant (files are checked by sha256), hence not a param.
    main(
        snakemake.wildcards.dataset,
        snakemake.params.spec,
        mirror_dir(snakemake.config),
        snakemake.params.download_dir,
        snakemake.output.records,
        snakemake.output.manifest,
    )
elif __name__ == "__main__":
    from massedit import config as mc

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--dataset", required=True, help="key of `datasets` in the config")
    parser.add_argument("--out-records", required=True)
    parser.add_argument("--out-manifest", required=True)
    parser.add_argument("--download-dir", default=mc.DOWNLOAD_DIR)
    args = parser.parse_args()
    console_logging()
    cfg = mc.load_config(args.configfile)
    main(
        args.dataset, mc.dataset_spec(cfg, args.dataset), mc.mirror_dir(cfg), args.download_dir,
        args.out_records, args.out_manifest,
    )
