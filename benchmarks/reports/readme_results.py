"""The README's results tables, written from committed run files only, and checked against them.

    python -m benchmarks.reports.readme_results            # rewrite README.md's tables from the committed runs
    python -m benchmarks.reports.readme_results --check    # exit 1 when a README table differs from the files

Each table sits in README.md between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``, made from
``benchmarks/results/cpu/summary.json`` (the main run) and ``benchmarks/results/cpu-scratch/summary.json``
(its from-scratch counterpart, one column), with the seed's and the best published figures beside them.
Rows are sorted by macro top-1 within each input (image, then product name): the answer reads top down.
Beside them: each group's paired differences (``differences-<group>``, from summary.json's ``statistics``) and
validation against test macro top-1 of every method that chose settings on validation (``validation-vs-test``).
The ``scratch-vs-pretrained`` block is ``python -m benchmarks.reports.compare benchmarks/results/cpu-scratch
benchmarks/results/cpu --common --metrics macro_top1 macro_top5``, with ``####`` headings.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import benchmarks.builtin  # noqa: F401  (registers the built-in methods: what runs before declarations read)
from benchmarks.registry.methods import get_method
from benchmarks.reports import compare
from benchmarks.reports.statistics import difference_cell, verdict
from benchmarks.reports.summary import PUBLISHED_EPISODIC, SEED_REFERENCE
from fewshot.evaluation import BUCKETS
from fewshot.utils.errors import UserError, run_cli
from fewshot.utils.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
MAIN, SCRATCH = ROOT / "benchmarks/results/cpu", ROOT / "benchmarks/results/cpu-scratch"
EPISODIC_SETTINGS = ("2w1s", "2w5s", "5w1s", "5w5s", "15w1s", "15w5s")
COMPARED = ("macro_top1", "macro_top5")


def pct(value: float | None) -> str:
    """A fraction as the README prints it: percent with one decimal, "–" when missing."""
    return "–" if value is None else f"{100 * value:.1f}"


def inputs(summary: dict, method: str) -> str:
    """What ``method`` reads ("image", "name", "image + name"): as the run's summary.json declares it, else (a
    run from before the declarations) as the registry does."""
    declared = summary.get("methods", {}).get(method, {}).get("inputs")
    return " + ".join(declared if declared is not None else get_method(method).reads())


def _order(rows: dict, summary: dict) -> list[str]:
    """Image methods, then the name-reading ones, each by macro top-1 (best first; ties by name)."""
    return sorted(rows, key=lambda m: (inputs(summary, m) != "image", -rows[m]["macro_top1"], m))


def with_ci(row: dict, metric: str, bucket: str | None = None) -> str:
    """A figure with its 95% interval as the README prints it, "50.8 [48.3, 53.1]" (the figure alone when the
    run has no interval)."""
    value = (row.get("buckets") or {}).get(bucket) if bucket else row.get(metric)
    ci = ((row.get("ci") or {}).get("buckets") or {}).get(bucket) if bucket else (row.get("ci") or {}).get(metric)
    return pct(value) if not ci or ci[0] is None or value is None else f"{pct(value)} [{pct(ci[0])}, {pct(ci[1])}]"


def seeds_cell(row: dict) -> str:
    """The lowest and highest macro top-1 over the run's seeds, "50.1–51.0", or "–"."""
    values = list((row.get("seeds") or {}).get("macro_top1", {}).values())
    return f"{pct(min(values))}–{pct(max(values))}" if len(values) > 1 else "–"


def episodic_seeds(row: dict) -> str:
    """The lowest and highest mean accuracy of an episodic setting over the run's seeds, "73.3–75.4", or "–"."""
    values = list((row.get("seeds") or {}).values())
    return f"{pct(min(values))}–{pct(max(values))}" if len(values) > 1 else "–"


def transfer_table(group: str, main: dict, scratch: dict) -> str:
    rows = main["transfer"][group]
    other = scratch.get("transfer", {}).get(group, {})
    joint = group == "all"
    head = ("| method | input | macro top-1 [95%] | macro top-5 [95%] | micro top-1 [95%] |"
            + (" head / tail macro top-1 |" if joint else "") + " Many | Medium | Few | seeds | from scratch |")
    lines = [head, "|---|---|" + "---:|" * (8 + joint)]
    for m in _order(rows, main):
        r = rows[m]
        buckets = " | ".join(with_ci(r, "buckets", b) for b in BUCKETS)
        split = f" {pct(r.get('head_macro_top1'))} / {pct(r.get('tail_macro_top1'))} |" if joint else ""
        lines.append(f"| `{m}` | {inputs(main, m)} | {with_ci(r, 'macro_top1')} | {with_ci(r, 'macro_top5')} | "
                     f"{with_ci(r, 'micro_top1')} |{split} {buckets} | {seeds_cell(r)} | "
                     f"{pct(other.get(m, {}).get('macro_top1'))} |")
    if group in SEED_REFERENCE:
        blank = " – |" * (5 + joint)
        for label, key in (("seed notebook, per-class mean (ResNet50, ImageNet, 224 px)", "notebook_macro"),
                           ("seed, as published", "published")):
            top1, top5 = SEED_REFERENCE[group][key]
            lines.append(f"| {label} | image | {pct(top1)} | {pct(top5)} |{blank} – |")
    return "\n".join(lines)


def episodic_table(main: dict, scratch: dict) -> str:
    rows = main["episodic"]
    settings = [s for s in EPISODIC_SETTINGS if any(s in r for r in rows.values())]
    lines = ["| method | " + " | ".join(settings) + " | 5w1s / 5w5s over seeds | from scratch 5w1s / 5w5s |",
             "|---|" + "---:|" * (len(settings) + 2)]
    for m in sorted(rows, key=lambda m: (-rows[m].get("5w1s", {}).get("mean", 0), m)):
        cells = [f"{pct(rows[m][s]['mean'])} ± {pct(rows[m][s]['ci95'])}" if s in rows[m] else "–" for s in settings]
        other = scratch.get("episodic", {}).get(m, {})
        lines.append(f"| `{m}` | " + " | ".join(cells)
                     + f" | {episodic_seeds(rows[m].get('5w1s', {}))} / {episodic_seeds(rows[m].get('5w5s', {}))}"
                     + f" | {pct(other.get('5w1s', {}).get('mean'))} / {pct(other.get('5w5s', {}).get('mean'))} |")
    published = [f"{PUBLISHED_EPISODIC[s]:.1f}" if s in PUBLISHED_EPISODIC else "–" for s in settings]
    lines.append("| best published (Conv4 ProtoNet, 80x60, from scratch) | " + " | ".join(published) + " | – | – |")
    return "\n".join(lines)


def differences_table(group: str, main: dict) -> str:
    """The group's paired differences (macro top-1, a - b with its 95% interval) and what they support."""
    st = main["statistics"][group]
    lines = ["| a | b | compared because | macro top-1 a − b [95%] | verdict |", "|---|---|---|---:|---|"]
    for row in st["comparisons"]:
        if row["metric"] == "macro_top1":
            why = f"reference `{st['reference']}`" if row["why"] == "reference" else "leaders"
            lines.append(f"| `{row['a']}` | `{row['b']}` | {why} | {difference_cell(row)} | {verdict(row)} |")
    return "\n".join(lines)


def validation_figure(method: str, choice: dict) -> float | None:
    """The validation macro top-1 of the setting ``method`` chose, from summary.json's ``choices``. The fusion
    phase records every rule's figure under the rule's name, and its methods are ``fusion_<rule>``
    (benchmarks/builtin/fusion.py)."""
    value = choice.get("val_macro_top1")
    return value.get(method.removeprefix("fusion_")) if isinstance(value, dict) else value


def validation_table(main: dict) -> str | None:
    """Validation against test macro top-1 of every method that chose its settings on validation images, per
    group: how far the run's validation rule flatters the test it stands in for; None when none chose."""
    lines = ["| group | method | validation macro top-1 | test macro top-1 [95%] | validation − test |",
             "|---|---|---:|---:|---:|"]
    for group in ("tail", "head", "all"):
        rows = main.get("transfer", {}).get(group, {})
        for method in _order(rows, main):
            val = validation_figure(method, main.get("choices", {}).get(method, {}).get(group, {}))
            if val is not None:
                test = rows[method]["macro_top1"]
                lines.append(f"| {group} | `{method}` | {pct(val)} | {with_ci(rows[method], 'macro_top1')} | "
                             f"{100 * (val - test):+.1f} |")
    return "\n".join(lines) if len(lines) > 2 else None


def tables(main: dict, scratch: dict) -> dict[str, str]:
    """{block name: Markdown table} for every group the main run reports."""
    out = {f"transfer-{g}": transfer_table(g, main, scratch) for g in ("tail", "head", "all")
           if main.get("transfer", {}).get(g)}
    out.update({f"differences-{g}": differences_table(g, main) for g in ("tail", "head", "all")
                if main.get("statistics", {}).get(g, {}).get("comparisons")})
    validation = validation_table(main)
    if validation is not None:
        out["validation-vs-test"] = validation
    if main.get("episodic"):
        out["episodic"] = episodic_table(main, scratch)
    rows = compare.common_rows(compare.compare_rows(scratch, main))
    if rows:
        out["scratch-vs-pretrained"] = compare.markdown(rows, SCRATCH.name, MAIN.name, COMPARED, heading="####").rstrip()
    return out


def load(run: Path) -> dict:
    path = run / "summary.json"
    if not path.is_file():
        raise UserError(f"{path}: missing; the README's tables are written from committed runs")
    return json.loads(path.read_text())


def _block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- results:{re.escape(name)} -->\n)(.*?)(\n<!-- /results:{re.escape(name)} -->)", re.S)


def blocks(readme: str) -> dict[str, str]:
    """{name: content} of the README's marked result blocks."""
    return {m.group(1): m.group(2) for m in re.finditer(r"<!-- results:([\w-]+) -->\n(.*?)\n<!-- /results:\1 -->",
                                                        readme, re.S)}


def update(readme: str, generated: dict[str, str]) -> str:
    for name, table in generated.items():
        pattern = _block(name)
        if not pattern.search(readme):
            raise UserError(f"README.md has no <!-- results:{name} --> ... <!-- /results:{name} --> block")
        readme = pattern.sub(lambda m: m.group(1) + table + m.group(3), readme)
    return readme


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reports.readme_results", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when a table is stale")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    return p


def main(args: argparse.Namespace) -> int:
    readme = args.readme.read_text()
    updated = update(readme, tables(load(MAIN), load(SCRATCH)))
    if args.check:
        stale = [n for n, v in blocks(updated).items() if blocks(readme).get(n) != v]
        print(f"stale README tables: {', '.join(stale)}" if stale else "README tables match the committed runs")
        return 1 if stale else 0
    if updated != readme:
        atomic_write_text(args.readme, updated)
    print(f"wrote {', '.join(blocks(updated))} into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: main(get_args_parser().parse_args(argv)), prog="benchmarks.reports.readme_results"))
