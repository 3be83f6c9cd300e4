"""Rule evaluate_model: score a model, with a method's deltas or unedited, on one batch of edits."""
import argparse

from _wiring import console_logging, limit_threads, redirect_logs


def main(model_dir: str, model_cfg: dict, records: str, prefixes: str, deltas: str | None, eval_cfg: dict,
         out_records: str, out_summary: str, labels: dict, threads: int = 1,
         head_of: tuple[str, str] | None = None, out_timings: str | None = None) -> None:
    limit_threads(threads)
    from massedit import steps

    steps.evaluate_model(model_dir, model_cfg, records, prefixes, deltas, eval_cfg, out_records, out_summary, labels,
                         head_of, out_timings)


if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    from massedit.config import eval_runtime

    # The unedited pseudo-method has an empty `deltas` input.
    deltas = snakemake.input.get("deltas", [])
    deltas = [deltas] if isinstance(deltas, str) else list(deltas)
    # The unedited model on a smaller batch: the records and summary of its largest batch's evaluation.
    head_of = list(snakemake.input.get("head_of", []))
    main(
        snakemake.input.model,
        snakemake.params.model_cfg,
        snakemake.input.records,
        snakemake.input.prefixes,
        deltas[0] if deltas else None,
        {**snakemake.params.eval_cfg, **eval_runtime(snakemake.config)},
        snakemake.output.records,
        snakemake.output.summary,
        snakemake.params.labels,
        snakemake.threads,
        tuple(head_of) if head_of else None,
        # rule evaluate_prefix_length declares no timings file: its timings go to the log
        snakemake.output.get("timings"),
    )
elif __name__ == "__main__":
    from massedit import config as mc

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--method", required=True, help=f"a method or {mc.UNEDITED!r}")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--records", required=True, help="records.jsonl of select_edits")
    parser.add_argument("--prefixes", required=True)
    parser.add_argument("--deltas", default=None, help="deltas.pt of edit_model; omit for the unedited model")
    parser.add_argument("--out-records", required=True)
    parser.add_argument("--out-summary", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    console_logging()
    cfg = mc.load_config(args.configfile)
    main(
        args.model_dir, mc.model_spec(cfg, args.model), args.records, args.prefixes, args.deltas,
        {**mc.eval_settings(cfg), **mc.eval_runtime(cfg)}, args.out_records, args.out_summary,
        mc.labels(cfg, args.model, args.dataset, args.method, args.n), args.threads,
    )
