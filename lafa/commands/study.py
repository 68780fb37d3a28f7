"""`lafa study -c configs/studies/converge.yaml [-c configs/tiny/studies/converge.yaml]`

Runs what is missing, resumes what was interrupted and skips what is finished, then writes the report
(`<out_dir>/report/`: report.json, report.md, curves.png, factor.png). `--plan` prints one `lafa fit` command
per run instead (for a cluster scheduler); `--report` only reads what the runs logged. An out_dir made from other
inputs (data shards, study name, lafa version: `<out_dir>/study_inputs.json`) is refused unless `--overwrite`.
See docs/study.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from jsonargparse import ActionYesNo, ArgumentParser

from lafa.commands.options import HelpFormatter, parse
from lafa.errors import BadInput

CONFIG_FIX = "see docs/study.md for a study's keys (configs/studies/ holds examples)"


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lafa study", description=__doc__, formatter_class=HelpFormatter,
                            exit_on_error=False)
    parser.add_argument("-c", "--config", action="append", required=True,
                        help="study YAML; give several to overlay later ones on earlier ones")
    parser.add_argument("--plan", action=ActionYesNo, default=False,
                        help="print one `lafa fit` command per run and exit")
    parser.add_argument("--report", action=ActionYesNo, default=False,
                        help="only write the report from what the runs logged")
    parser.add_argument("--overwrite", action=ActionYesNo, default=False,
                        help="an out_dir made from other inputs (data shards, study name, lafa version): move its "
                             "runs to <out_dir>/.stale/<fingerprint>/ and start over (without it, it is refused)")
    return parser


def read_study(paths: list[str]):  # noqa: ANN201
    """The study of `paths`, or one line naming the file and what is wrong with it."""
    from lafa.study.spec import load_study

    for path in paths:
        if not Path(path).is_file():
            what = "is a folder, not a study YAML" if Path(path).is_dir() else "no such file"
            raise BadInput(f"--config {path}", what, "give a study YAML, e.g. configs/studies/converge.yaml")
    where = "--config " + " --config ".join(paths)
    try:
        return load_study(paths)
    except yaml.YAMLError as e:
        raise BadInput(where, f"not valid YAML ({' '.join(str(e).split())})", CONFIG_FIX) from e
    except ValueError as e:
        raise BadInput(where, re.sub(r"^study config .*?: ", "", str(e)), CONFIG_FIX) from e


def main(argv: list[str]) -> int:
    from lafa.study.merge import check_final_evaluation, check_one_factor
    from lafa.study.report import analyze_latents, build_report, write_report
    from lafa.study.runner import plan, run_study

    args = parse(_parser(), argv)
    study = read_study(args.config)
    try:  # the runs' checks (one factor, evaluation at the last step, ...) before any run starts
        check_one_factor(study)
        check_final_evaluation(study)
    except ValueError as e:
        if isinstance(e, BadInput):
            raise
        raise BadInput("--config " + " --config ".join(args.config), str(e), CONFIG_FIX) from e
    except FileNotFoundError as e:  # a stage config named relative to another folder
        raise BadInput("--config " + " --config ".join(args.config),
                       f"{e} (a study's paths are relative to the folder it runs from, {Path.cwd()})",
                       "run `lafa study` from the folder its stage configs are relative to (the repository "
                       "root for configs/studies/), or give their absolute paths") from e
    if args.plan:
        print("\n".join(plan(study)))
        return 0
    from lafa.output_lock import output_lock

    with output_lock(study.out_dir, "lafa study"):  # one writer per study folder (a second study is refused)
        if not args.report:
            run_study(study, overwrite=args.overwrite)
        report = build_report(study, analyze_latents(study))
        paths = write_report(report, Path(study.out_dir) / "report")
    print(paths["markdown"].read_text())
    print("report: " + ", ".join(str(p) for p in paths.values()))
    return 0
