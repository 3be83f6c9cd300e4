"""Rule plot_scaling: metrics against the number of edits, one line per method and model."""
import argparse

from _wiring import console_logging, redirect_logs


def main(summaries: list[str], out_png: str) -> None:
    from massedit import steps

    steps.plot_scaling(summaries, out_png)


if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    main(list(snakemake.input.summaries), snakemake.output.png)
elif __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("summaries", nargs="+", help="summary.json files of evaluate_model")
    parser.add_argument("--out-png", required=True)
    args = parser.parse_args()
    console_logging()
    main(args.summaries, args.out_png)
