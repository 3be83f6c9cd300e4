"""Rule generate_eval_prefixes: sample the evaluation prefixes from the unedited model, once per model."""
import argparse

from _wiring import console_logging, limit_threads, redirect_logs


def main(model_dir: str, model_cfg: dict, prefix_len: int, n_prefixes: int, seed: int, out_json: str,
         threads: int = 1) -> None:
    limit_threads(threads)
    from massedit import steps

    steps.generate_prefixes(model_dir, model_cfg, prefix_len, n_prefixes, seed, out_json)


if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    main(
        snakemake.input.model,
        snakemake.params.model_cfg,
        int(snakemake.wildcards.prefix_len),
        snakemake.params.n_prefixes,
        int(snakemake.wildcards.seed),
        snakemake.output.prefixes,
        snakemake.threads,
    )
elif __name__ == "__main__":
    from massedit import config as mc

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--out-json", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    console_logging()
    cfg = mc.load_config(args.configfile)
    ev = cfg["evaluation"]
    main(args.model_dir, mc.model_spec(cfg, args.model), ev["prefix_len"], ev["n_prefixes"], ev["prefix_seed"],
         args.out_json, args.threads)
