"""docs/results.md from the benchmark cache: tables (mean +- std over seeds) and plots.

Everything in the document comes from the cache file written by `wtbi-monitor benchmark`;
cells that have not run yet show as "not run" so a partial document is never mistaken
for a complete one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from wtbi_monitor.config import Settings
from wtbi_monitor.data.synthetic import PROFILES
from wtbi_monitor.evaluation.benchmark import Cache, Record, plan, plot_seed0_roc, split_variant
from wtbi_monitor.families import (
    CARD_MEMBERS,
    FAMILIES,
    GRADIENT_FAMILIES,
    PAPER_TABLE_III,
    PAPER_VARIANT,
    family_of,
)

NOT_RUN = "not run"
#: `CARD_MEMBERS` (families.py): model cards (docs/models/) and the members whose results
#: `render` writes into them, between the markers below.
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
CANONICAL = "wtbi-monitor --config configs/benchmark.toml benchmark --data data/farm"


def _values(records: list[Record], get: Any) -> list[float]:
    out = []
    for r in records:
        v = get(r)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out.append(float(v))
    return out


def _pm(values: list[float], digits: int = 3) -> str:
    if not values:
        return NOT_RUN
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _stat(records: list[Record], get: Any, digits: int = 3) -> str:
    """Mean ± std of a field; 'not run' without records, 'n/a' when no seed has a value."""
    if not records:
        return NOT_RUN
    values = _values(records, get)
    return _pm(values, digits) if values else "n/a"


def _group(cache: Cache, protocol: str) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = defaultdict(list)
    for r in cache.records.values():
        if r.get("protocol") == protocol:
            out[r["member"]].append(r)
    return out


def _ev(key: str, which: str = "events") -> Any:
    return lambda r: (r.get(which) or {}).get(key)


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _detected(rs: list[Record], which: str = "events") -> str:
    detected = _values(rs, _ev("episodes_detected", which))
    total = _values(rs, _ev("episodes", which))
    if not detected or not total:
        return NOT_RUN
    return f"{np.mean(detected):.1f} / {int(total[0])}"


def _split_text(settings: Settings) -> str:
    ev, tr = settings.evaluation, settings.training
    if ev.test_start:
        test = f"test from {ev.test_start} to the end of the record"
    else:
        share = 1 - ev.train_fraction - ev.validation_fraction
        test = f"test on the newest {share:.0%} of the record"
    validation = (
        f"validation blocks of {tr.validation_block_hours:g} h spread over the earlier part"
        if tr.validation_split == "blocks"
        else "validation on the part just before the test"
    )
    return f"Train on the earlier part of the record (normal rows only), {validation}, {test}."


def _mean(rs: list[Record], get: Any) -> float | None:
    values = _values(rs, get)
    return float(np.mean(values)) if values else None


def _targets(timed: dict[str, list[Record]], oracle: dict[str, dict[str, Any]] | None) -> list[str]:
    """The issues' targets for the product default (IAE-LSTM-KL), met or not, with numbers."""
    product = "iae_lstm_kl:soft"
    rs = timed.get(product, [])
    if not rs:
        return []
    auroc = _mean(rs, lambda r: r["auroc"])
    auprc = _mean(rs, lambda r: r["auprc"])
    cold = _mean(rs, lambda r: r.get("auroc_below_2c"))
    learned = {
        m: v
        for m, r in timed.items()
        if m != "power_curve_rule" and (v := _mean(r, lambda x: x["auroc"])) is not None
    }
    best_other = max((v for m, v in learned.items() if m != product), default=None)
    oracles = oracle or {}
    best_oracle = max((v["auroc_oracle"] for v in oracles.values()), default=None)
    temp = oracles.get("environment_tmp", {})
    rule = _mean(timed.get("power_curve_rule", []), lambda r: r["auroc"])
    ev = {k: _mean(rs, _ev(k)) for k in (
        "detected_fraction",
        "median_delay_min",
        "false_alarms_per_turbine_30d",
        "alarms_per_detected_episode",
    )}  # fmt: skip

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("MET" if ok else "NOT MET")

    def cmp(value: float | None, bound: float | None, *, above: bool = True) -> bool | None:
        if value is None or bound is None:
            return None
        return value >= bound if above else value <= bound

    rows = [
        (
            f"{product} (product default) AUROC >= 0.90",
            _num(auroc),
            verdict(cmp(auroc, 0.90)),
        ),
        ("AUPRC >= 0.5", _num(auprc), verdict(cmp(auprc, 0.5))),
        (
            "first among the learned members (AUROC)",
            f"best other {_num(best_other)}",
            verdict(cmp(auroc, best_other)),
        ),
        (
            "above every single-channel oracle and the Task 19 rule",
            f"best oracle {_num(best_oracle)}, rule {_num(rule)}",
            verdict(
                cmp(auroc, max(v for v in (best_oracle, rule) if v is not None))
                if best_oracle is not None or rule is not None
                else None
            ),
        ),
        (
            "windows below +2 C: AUROC >= 0.95 and >= temperature alone + 0.05",
            f"{_num(cold)} (temperature alone {_num(temp.get('auroc_oracle_below_2c'))})",
            verdict(
                None
                if cold is None or temp.get("auroc_oracle_below_2c") is None
                else cold >= 0.95 and cold >= temp["auroc_oracle_below_2c"] + 0.05
            ),
        ),
        (
            "AUPRC >= 2 x temperature alone's",
            f"{_num(auprc)} vs {_num(temp.get('auprc_oracle'))}",
            verdict(cmp(auprc, 2 * temp["auprc_oracle"]) if temp.get("auprc_oracle") else None),
        ),
        (
            "episodes detected >= 95 %",
            _num(ev["detected_fraction"], 2),
            verdict(cmp(ev["detected_fraction"], 0.95)),
        ),
        (
            "median delay <= 30 min",
            _num(ev["median_delay_min"], 0),
            verdict(cmp(ev["median_delay_min"], 30.0, above=False)),
        ),
        (
            "false alarms <= 1 per turbine per 30 days",
            _num(ev["false_alarms_per_turbine_30d"], 2),
            verdict(cmp(ev["false_alarms_per_turbine_30d"], 1.0, above=False)),
        ),
        (
            "alarm events per detected episode <= 1.2",
            _num(ev["alarms_per_detected_episode"], 2),
            verdict(cmp(ev["alarms_per_detected_episode"], 1.2, above=False)),
        ),
    ]
    lines = [
        "",
        "## Targets (issues 9 and 10; mean over seeds, time-ordered protocol)",
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return lines


def _rank(rows: dict[str, list[Record]], member: str) -> str:
    means = {
        m: float(np.mean(v)) for m, rs in rows.items() if (v := _values(rs, lambda r: r["auroc"]))
    }
    if member not in means:
        return "-"
    order = sorted(means, key=lambda m: -means[m])
    return f"{order.index(member) + 1} of {len(order)}"


def render(cache: Cache, settings: Settings, out: Path, command: str) -> Path:
    """Write `out` (e.g. docs/results.md) and its plots next to it (<stem>/ folder)."""
    b = settings.benchmark
    plots = out.parent / out.stem
    plots.mkdir(parents=True, exist_ok=True)
    rel = plots.name
    cells = plan(settings)
    done = sum(c.key in cache for c in cells)
    paper, timed = _group(cache, "paper"), _group(cache, "time_ordered")
    main = [*b.members, *(f"{m} (tuned)" for m in b.tune_members)]
    main_paper = {m: paper[m] for m in main if m in paper}
    main_timed = {m: timed[m] for m in main if m in timed}
    oracle = next(
        (
            r.get("single_channel")
            for m in main
            for r in timed.get(m, [])
            if r.get("single_channel")
        ),
        None,
    )
    lines = [
        f"# Results: the whole family on {b.title}",
        "",
        f"Generated by `{command}` ({done} of {len(cells)} cells done, cache `{cache.path}`).",
        "Do not edit by hand: rerun the command (it resumes from the cache; `--render-only`",
        "rebuilds this page without training). Budget, data and deviations: see the end.",
        "The paper's variant of a member is marked `@paper` (its score, model selection and",
        "input clipping as in the paper); the others use the product's (docs/deviations.md).",
        "",
        *_summary({m: paper.get(m, []) for m in main}, {m: timed.get(m, []) for m in main}),
        *_targets(timed, oracle),
        "",
        (
            f"Seeds: {', '.join(map(str, b.seeds))} for the time-ordered tables"
            + (
                f" ({', '.join(b.seed_members)}; the other members seed {min(b.seeds)} only), "
                if b.seed_members
                else ", "
            )
            + f"{', '.join(map(str, b.paper_seeds))} for the paper protocol, "
            f"{', '.join(map(str, b.ablation_seeds))} for the ablations "
            "(mean ± sample std over seeds)."
        ),
        "",
        "## Time-ordered protocol (honest)",
        "",
        _split_text(settings),
        "Events come from the production alarm state machine with the default alarm settings",
        "(time units). Delay: alarm raise time minus the labelled episode start (negative =",
        "during the build-up, before the label). Alarms per episode: distinct alarms that",
        "overlap a detected episode (1.0 = one alarm per episode). Below +2 C: windows whose",
        "mean ambient temperature is below +2 C, where icing is possible.",
        "",
        (
            "| member | AUROC | AUPRC | AUROC < +2 C | AUPRC < +2 C | episodes detected | "
            "median delay (min) | false alarms / turbine / 30 d | alarms / episode | rank |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in main:
        rs = timed.get(m, [])
        lines.append(
            f"| {m} | {_stat(rs, lambda r: r['auroc'])} | "
            f"{_stat(rs, lambda r: r['auprc'])} | "
            f"{_stat(rs, lambda r: r.get('auroc_below_2c'))} | "
            f"{_stat(rs, lambda r: r.get('auprc_below_2c'))} | {_detected(rs)} | "
            f"{_stat(rs, _ev('median_delay_min'), 0)} | "
            f"{_stat(rs, _ev('false_alarms_per_turbine_30d'), 2)} | "
            f"{_stat(rs, _ev('alarms_per_detected_episode'), 2)} | "
            f"{_rank(main_timed, m) if rs else '-'} |"
        )
    if settings.alarm.policy != "model":
        lines += [
            "",
            f"The events above use the product policy (`alarm.policy = {settings.alarm.policy}`:",
            "the member's score and the IEA Task 19 rule fitted beside it). The member's own",
            "score alone (`alarm.policy = model`), same alarm settings otherwise:",
            "",
            (
                "| member | episodes detected | median delay (min) "
                "| false alarms / turbine / 30 d | alarms / episode |"
            ),
            "|---|---|---|---|---|",
        ]
        for m in main:
            rs = timed.get(m, [])
            lines.append(
                f"| {m} | {_detected(rs, 'model_events')} | "
                f"{_stat(rs, _ev('median_delay_min', 'model_events'), 0)} | "
                f"{_stat(rs, _ev('false_alarms_per_turbine_30d', 'model_events'), 2)} | "
                f"{_stat(rs, _ev('alarms_per_detected_episode', 'model_events'), 2)} |"
            )
    if oracle:
        lines += [
            "",
            "Single-channel ORACLES (window mean of one channel, its direction chosen on the test",
            "labels: an upper bound for any one-channel threshold rule; the IEA Task 19 rule is",
            "the `power_curve_rule` row above):",
            "",
            "| channel | direction | AUROC | AUPRC | AUROC < +2 C | AUPRC < +2 C |",
            "|---|---|---|---|---|---|",
        ]
        for name, v in oracle.items():
            lines.append(
                f"| {name} | {'higher' if v['direction'] == 'high' else 'lower'} = icing | "
                f"{_num(v.get('auroc_oracle'))} | {_num(v.get('auprc_oracle'))} | "
                f"{_num(v.get('auroc_oracle_below_2c'))} | {_num(v.get('auprc_oracle_below_2c'))} |"
            )
    lines += [
        "",
        "## Paper protocol (LEAKY: random split of overlapping windows)",
        "",
        "AUROC of icing vs normal test windows. The random split puts near-copies of training",
        "windows in the test set, so these numbers flatter every model; they are here only to",
        "compare with the paper's Table III, never to choose a detector.",
        "",
        "| member | AUROC (ours, leaky) | paper Table III | rank (ours) |",
        "|---|---|---|---|",
    ]
    for m in [m for m in main if not b.paper_members or m in b.paper_members]:
        rs = paper.get(m, [])
        ref = PAPER_TABLE_III.get(split_variant(m)[0] if m.endswith(PAPER_VARIANT) else m)
        lines.append(
            f"| {m} | {_stat(rs, lambda r: r['auroc'])} | "
            f"{'-' if ref is None else f'{ref:.3f}'} | {_rank(main_paper, m) if rs else '-'} |"
        )
    full = tuple(m for m in ("iae_lstm_kl:soft", "iae_lstm_kl:hard") if m in b.members)
    if b.ablations:
        lines += _ablation_section(paper, timed, (*full, *b.ablations))
    else:
        lines += [
            "",
            "## Ablations",
            "",
            "Not run in this benchmark (`benchmark.ablations` is empty).",
        ]
    if b.contamination_members and b.contamination_levels:
        lines += _contamination_section(cache, settings, plots)
    else:
        lines += [
            "",
            "## Contamination robustness",
            "",
            "Not run in this benchmark (`benchmark.contamination_members` is empty).",
        ]
    lines += _cost_section(timed, main, list(b.ablations))
    lines += _attribution_section(timed, [*b.members, *b.ablations])
    lines += _tuning_section(cache)
    plot_seed0_roc(cache, plots / "roc_time_ordered.png", list(b.members))
    lines += [
        "",
        "## Plots",
        "",
        "ROC curves, time-ordered protocol, seed 0:",
        "",
        f"![ROC]({rel}/roc_time_ordered.png)",
        "",
        "Score timelines of the first test turbines, seed 0 (red: icing, grey: unlabelled,",
        "orange: alarms, dashed: threshold):",
        "",
    ]
    for m in b.timeline_members:
        slug = m.replace(":", "-").replace("+", "-").replace("@", "-")
        if (plots / f"timeline_{slug}.png").is_file():
            lines += [f"![{m}]({rel}/timeline_{slug}.png)", ""]
    lines += _setup_section(settings, cache)
    out.write_text("\n".join(lines) + "\n")
    if out.name == "results.md":  # the cards quote the main (7 s) page only
        update_model_cards(out.parent / "models", paper, timed)
    return out


def card_table(
    members: tuple[str, ...], paper: dict[str, list[Record]], timed: dict[str, list[Record]]
) -> list[str]:
    """The results block of a model card."""
    lines = [
        "From [../results.md](../results.md) (mean ± std over seeds; the paper protocol is leaky):",
        "",
        (
            "| member | AUROC paper (leaky) | Table III | AUROC time-ordered | AUPRC | episodes | "
            "false alarms / turbine / 30 d |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for m in members:
        rs = timed.get(m, [])
        detected = _values(rs, _ev("episodes_detected"))
        total = _values(rs, _ev("episodes"))
        det = f"{np.mean(detected):.1f} / {int(total[0])}" if detected and total else NOT_RUN
        ref = PAPER_TABLE_III.get(m)
        lines.append(
            f"| {m} | {_stat(paper.get(m, []), lambda r: r['auroc'])} | "
            f"{'-' if ref is None else f'{ref:.3f}'} | {_stat(rs, lambda r: r['auroc'])} | "
            f"{_stat(rs, lambda r: r['auprc'])} | {det} | "
            f"{_stat(rs, _ev('false_alarms_per_turbine_30d'), 2)} |"
        )
    return lines


def update_model_cards(
    folder: Path, paper: dict[str, list[Record]], timed: dict[str, list[Record]]
) -> None:
    """Replace the results block of every card that has the markers."""
    for name, members in CARD_MEMBERS.items():
        path = folder / name
        if not path.is_file():
            continue
        text = path.read_text()
        if BEGIN not in text or END not in text:
            continue
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        block = "\n".join(card_table(members, paper, timed))
        path.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}")


def _summary(paper: dict[str, list[Record]], timed: dict[str, list[Record]]) -> list[str]:
    """Where IAE-LSTM-KL and the best members rank, computed from the tables below."""

    def mean_auroc(rows: dict[str, list[Record]], m: str) -> float | None:
        v = _values(rows.get(m, []), lambda r: r["auroc"])
        return float(np.mean(v)) if v else None

    lines = ["## Summary", ""]
    for name, rows, claim in (
        ("paper protocol (leaky)", paper, "the paper ranks IAE-LSTM-KL(s) first of 11 with 0.963"),
        ("time-ordered protocol", timed, "the paper has no such protocol"),
    ):
        scored = {m: a for m in rows if (a := mean_auroc(rows, m)) is not None}
        if not scored:
            continue
        order = sorted(scored, key=lambda m: -scored[m])
        parts = [
            f"{m} ranks {order.index(m) + 1} of {len(order)} (AUROC {scored[m]:.3f})"
            for m in ("iae_lstm_kl:soft", "iae_lstm_kl:hard")
            if m in scored
        ]
        best = ", ".join(f"{m} {scored[m]:.3f}" for m in order[:3])
        paper_set = [m for m in order if m in PAPER_TABLE_III]
        among = (
            f"; among the paper's {len(paper_set)} Table III members IAE-LSTM-KL(s) is "
            f"{paper_set.index('iae_lstm_kl:soft') + 1}"
            if "iae_lstm_kl:soft" in paper_set
            else ""
        )
        lines.append(f"- {name.capitalize()}: {'; '.join(parts)}{among}; best: {best} ({claim}).")
    return lines


def _ablation_section(
    paper: dict[str, list[Record]], timed: dict[str, list[Record]], ablations: tuple[str, ...]
) -> list[str]:
    lines = [
        "",
        "## Ablations (paper Tables V and VII analogue)",
        "",
        "| member | removes | AUROC paper (leaky) | AUROC time-ordered | AUPRC time-ordered |",
        "|---|---|---|---|---|",
    ]
    for m in ablations:
        info = FAMILIES.get(family_of(m))
        removed = info.removes if info is not None and info.ablation else ()
        what = " and ".join(removed) or "nothing (full model)"
        if "+no_input_gate+no_output_gate" in m:
            what = "input and output gates"
        elif "+no_input_gate" in m:
            what = "input gate"
        elif "+no_output_gate" in m:
            what = "output gate"
        lines.append(
            f"| {m} | {what} | {_stat(paper.get(m, []), lambda r: r['auroc'])} | "
            f"{_stat(timed.get(m, []), lambda r: r['auroc'])} | "
            f"{_stat(timed.get(m, []), lambda r: r['auprc'])} |"
        )
    return lines


def _contamination_section(cache: Cache, settings: Settings, plots: Path) -> list[str]:
    b = settings.benchmark
    rows = _group(cache, "contamination")
    lines = [
        "",
        "## Contamination robustness (paper Fig. 5 analogue)",
        "",
        "A share of the training windows replaced by icing windows of the training period",
        (
            "(validation stays clean); time-ordered test AUROC, mean over seeds "
            f"{', '.join(map(str, b.contamination_seeds))}."
        ),
        "",
        "| member | " + " | ".join(f"{p:.0%}" for p in b.contamination_levels) + " |",
        "|---|" + "---|" * len(b.contamination_levels),
    ]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for m in b.contamination_members:
        cells, xs, ys = [], [], []
        for p in b.contamination_levels:
            at_p = [r for r in rows.get(m, []) if abs(r["contamination"] - p) < 1e-9]
            vals = _values(at_p, lambda r: r["auroc"])
            cells.append(_stat(at_p, lambda r: r["auroc"]))
            if vals:
                xs.append(100 * p)
                ys.append(float(np.mean(vals)))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
        if xs:
            ax.plot(xs, ys, marker="o", label=m)
    ax.set_xlabel("icing windows in training (%)")
    ax.set_ylabel("time-ordered AUROC")
    ax.axhline(0.5, c="grey", lw=0.6, ls=":")
    if any(line.get_label() in b.contamination_members for line in ax.get_lines()):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plots / "contamination.png", dpi=90)
    plt.close(fig)
    lines += ["", f"![contamination]({plots.name}/contamination.png)"]
    return lines


def _cost_section(
    timed: dict[str, list[Record]], main: list[str], ablations: list[str]
) -> list[str]:
    lines = [
        "",
        "## Training time and scoring throughput (this machine, 2 CPU cores)",
        "",
        "Fit = training plus calibration of one member under the benchmark budget below;",
        "scoring = test windows per second through the bundle (scaling included), batch 1024.",
        "",
        "| member | fit (s) | scoring (windows/s) |",
        "|---|---|---|",
    ]
    for m in [*main, *ablations]:
        rs = timed.get(m, [])
        fit = _values(rs, lambda r: r["fit_seconds"])
        rate = _values(rs, lambda r: r["scoring_windows_per_s"])
        lines.append(
            f"| {m} | {f'{np.median(fit):.1f}' if fit else NOT_RUN} | "
            f"{f'{np.median(rate):,.0f}' if rate else NOT_RUN} |"
        )
    return lines


def _attribution_section(timed: dict[str, list[Record]], members: list[str]) -> list[str]:
    lines = [
        "",
        "## Channel attribution of flagged icing windows",
        "",
        "For icing test windows scoring above the 99th percentile of validation normal scores",
        "(seed 0, up to 2,000 sampled), the",
        "share whose top channel (top 1) or top three channels (top 3) include a channel the",
        "generator's episode actually changed (blade icing: power, generator speed, pitch,",
        "vibration; iced anemometer: wind speed). Decoder models: share of reconstruction error;",
        "models without a decoder: gradient x (input - validation mean). Chance = three channels",
        "drawn at random.",
        "",
        "| member | windows | top-1 hit | top-3 hit | chance (top 3) |",
        "|---|---|---|---|---|",
    ]
    pooled: dict[str, list[tuple[int, float, float, float]]] = {"gradient": [], "decoder": []}
    for m in members:
        rec = next((r for r in timed.get(m, []) if r["seed"] == 0), None)
        if rec is None:
            lines.append(f"| {m} | {NOT_RUN} | | | |")
            continue
        a = rec.get("attribution")
        if a is None:
            lines.append(f"| {m} | no channel attribution (score has no per-channel form) | | | |")
            continue
        if not a.get("windows"):
            lines.append(f"| {m} | 0 (no icing window above that level) | - | - | - |")
            continue
        lines.append(
            f"| {m} | {a['windows']} | {a['top1_hit_rate']:.2f} | {a['top3_hit_rate']:.2f} | "
            f"{a['chance']:.2f} |"
        )
        kind = "gradient" if family_of(m) in GRADIENT_FAMILIES else "decoder"
        pooled[kind].append((a["windows"], a["top1_hit_rate"], a["top3_hit_rate"], a["chance"]))
    for kind, rows in pooled.items():
        n = sum(r[0] for r in rows)
        if n == 0:
            continue
        top1, top3, chance = (sum(r[0] * r[k] for r in rows) / n for k in (1, 2, 3))
        label = "gradient attribution" if kind == "gradient" else "reconstruction error"
        lines.append(
            f"| **all members by {label}** (pooled) | {n} | {top1:.2f} | {top3:.2f} | "
            f"{chance:.2f} |"
        )
    return lines


def _tuning_section(cache: Cache) -> list[str]:
    lines = [
        "",
        "## Hyperparameter search (validation normal data only)",
        "",
        "Criterion: AUROC between held-out validation NORMAL windows and copies with generic",
        "synthetic faults on three random channels (offset, frozen, noise, halved); no icing",
        "label is read (training/tuning.py, tested). Random search over the grid",
        "lambda_rec {0.1, 1}, lambda_kl {0.01, 0.1, 1}, nu {0.05, 0.1, 0.2}, learning rate",
        "{1e-4, 1e-3}; the default point is always tried.",
        "",
    ]
    for r in cache.records.values():
        if r.get("protocol") != "tuning":
            continue
        lines += [
            f"**{r['member']}**: {len(r['trials'])} trials in {r['seconds']:.0f} s; chosen "
            + ", ".join(f"{k} = {v:g}" for k, v in r["best"].items()),
            "",
            "| " + " | ".join(r["best"]) + " | criterion |",
            "|" + "---|" * (len(r["best"]) + 1),
        ]
        lines += [
            "| " + " | ".join(f"{t[k]:g}" for k in r["best"]) + f" | {t['criterion']:.3f} |"
            for t in r["trials"]
        ]
        lines.append("")
    return lines


def _setup_section(settings: Settings, cache: Cache) -> list[str]:
    tr, b, sim = settings.training, settings.benchmark, settings.simulation
    pre = settings.preprocessing
    seconds = sum(float(r.get("seconds") or 0.0) for r in cache.records.values())
    budgets = "; ".join(
        f"{m}: " + ", ".join(f"{k} {v:g}" for k, v in sorted(o.items()))
        for m, o in sorted(b.budgets.items())
    )
    return [
        "",
        "## Setup and budget",
        "",
        (
            f"- Data: the default synthetic farm of the profile (`wtbi-monitor simulate`: "
            f"profile {sim.profile}, {sim.turbines} turbines x "
            f"{sim.days or PROFILES[sim.profile].days:g} days, seed {sim.seed}); "
            f"{len(pre.channels)} channels at {pre.nominal_interval_s:g} s, smoothing "
            f"{pre.smoothing_length}, windows of {pre.window_length} samples; derived inputs "
            f"{', '.join(pre.derived) or 'none'} where their sources exist."
        ),
        (
            f"- Network preset `{settings.model.preset}`; default budget per fit: at most "
            f"{tr.max_train_windows} training and {tr.max_validation_windows} validation "
            f"windows, {tr.pretrain_epochs} pretraining + up to {tr.epochs} joint epochs "
            f"(early stopping, patience {tr.patience}), batch {tr.batch_size}, learning rate "
            f"{tr.learning_rate:g}."
        ),
        f"- Larger budgets: {budgets or 'none'}.",
        (
            f"- Time-ordered test: every {b.test_stride}th window scored (the alarm machine's "
            "delays are in time units, so they do not change)."
        ),
        f"- Paper protocol: at most {settings.evaluation.max_test_windows} test windows.",
        (
            f"- Run time of the cells in the cache: {seconds / 3600:.1f} h on this project's "
            "2-core CPU machine (cells run one after another; a cached run only re-renders)."
        ),
        "- The budget is below the paper's (the paper preset trains at ~80 windows/s on this",
        "  CPU); absolute numbers are therefore lower bounds for every neural member.",
    ]
