"""`lafa study --config configs/studies/converge.yaml [--config configs/tiny/studies/converge.yaml]`

Runs what is missing, resumes what was interrupted and skips what is finished, then writes the report
(`<out_dir>/report/`: report.json, report.md, curves.png, factor.png). `--plan` prints one `lafa fit` command
per run instead (for a cluster scheduler); `--report` only reads what the runs logged. See docs/study.md.
"""

from __future__ import annotations

from pathlib import Path

from jsonargparse import ArgumentParser


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lafa study", description=__doc__.split("\n\n")[1])
    parser.add_argument("--config", action="append", required=True,
                        help="study YAML; give several to overlay later ones on earlier ones")
    parser.add_argument("--plan", action="store_true", help="print one `lafa fit` command per run and exit")
    parser.add_argument("--report", action="store_true", help="only write the report from what the runs logged")
    return parser


def main(argv: list[str]) -> int:
    from lafa.study.report import analyze_latents, build_report, write_report
    from lafa.study.runner import plan, run_study
    from lafa.study.spec import load_study

    args = _parser().parse_args(argv)
    study = load_study(args.config)
    if args.plan:
        print("\n".join(plan(study)))
        return 0
    if not args.report:
        run_study(study)
    report = build_report(study, analyze_latents(study))
    paths = write_report(report, Path(study.out_dir) / "report")
    print(paths["markdown"].read_text())
    print("report: " + ", ".join(str(p) for p in paths.values()))
    return 0
