"""Rule make_tables: the main results table (CSV and Markdown) from every evaluation summary."""
import argparse

from _wiring import console_logging, redirect_logs


def main(summaries: list[str], out_csv: str, out_md: str) -> None:
    from massedit import steps

    steps.make_tables(summaries, out_csv, out_md)


if "snakemake" in globals():
    redirect_logs(snakemake.log[0])
    main(list(snakemake.input.summaries), snakemake.output.csv, snakemake.output.md)
elif __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("summaries", nargs="+", help="summary.json files of evaluate_model")
    parser.add_argument("--out-csv", required=True)
    parser.add_argument("--out-md", required=True)
    args = parser.parse_args()
    console_logging()
    main(args.summaries, args.out_csv, args.out_md)
