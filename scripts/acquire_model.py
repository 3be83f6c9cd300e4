"""Rule acquire_model: obtain a model from its configured source as a Hugging Face directory plus manifest."""
import argparse

from _wiring import console_logging, limit_threads, redirect_logs


def main(name: str, spec: dict, out_dir: str, manifest: str, fingerprint: str, download_dir: str,
         threads: int = 1) -> None:
    limit_threads(threads)
    from massedit import steps

    steps.acquire_model(name, spec, out_dir, manifest, fingerprint, download_dir)


if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    main(
        snakemake.wildcards.model,
        snakemake.params.spec,
        snakemake.output.hf,
        snakemake.output.manifest,
        snakemake.output.fingerprint,
        snakemake.params.download_dir,
        snakemake.threads,
    )
elif __name__ == "__main__":
    from massedit import config as mc

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--model", required=True, help="key of `models` in the config")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--fingerprint", required=True)
    parser.add_argument("--download-dir", default=mc.DOWNLOAD_DIR)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    console_logging()
    cfg = mc.load_config(args.configfile)
    main(args.model, mc.model_spec(cfg, args.model), args.out_dir, args.manifest, args.fingerprint,
         args.download_dir, args.threads)
