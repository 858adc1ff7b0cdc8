"""Writers of the benchmark report: latest.md and torch.png from the result
object that bench/run.py builds (and writes as latest.json).

Run alone, it renders an existing result again:

    python bench/report.py [bench/results/latest.json] [--out DIR]

Nothing here measures anything; every number comes from the result object,
and a null figure is shown as a dash with its reason listed under Missing.
"""

import argparse
import json
import sys
from pathlib import Path

MIB = 1 << 20
GIB = 1 << 30

# Sections in the order run.py runs them and the report shows them.
SECTIONS = ["blake3", "store", "index", "remote", "torch", "compression"]


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def cell(text):
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text or "").split()).replace("|", "/")



def fmt_value(v, unit):
    if v is None:
        return "—"
    if unit == "B/s":
        if v >= GIB:
            return f"{v / GIB:.2f} GiB/s"
        return f"{v / MIB:.1f} MiB/s"
    if unit == "us":
        return f"{v:.1f} µs" if v < 1000 else f"{v / 1000:.2f} ms"
    if unit == "ms":
        return f"{v:.1f} ms" if v < 1000 else f"{v / 1000:.2f} s"
    if unit == "s":
        return f"{v:.2f} s"
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "%":
        return f"{v * 100:.0f} %"
    return f"{v:.3g}"


def fmt_goal_value(g):
    v = g["value"]
    if v is None:
        return "—"
    t = g["target"]
    if t.endswith("x"):
        return f"{v:.2f}x"
    if t.endswith(" s"):
        return f"{v:.2f} s"
    if t.endswith("us"):
        return fmt_value(v, "us")
    if t.endswith("%"):
        return f"{v * 100:.0f} %"
    return f"{v:.3g}"


def goal_cell(res, field):
    """The goals judged on a figure: "pass", or each miss and not-run."""
    gs = [g for g in res.get("goals", []) if g.get("field") == field]
    if not gs:
        return ""
    if all(g["status"] == "pass" for g in gs):
        return "pass" if len(gs) == 1 else f"all {len(gs)} pass"
    out = []
    for g in gs:
        if g["status"] != "pass":
            name = g["goal"].split(": ", 1)[-1]
            word = "MISS" if g["status"] == "miss" else g["status"]
            out.append(f"{word}: {name}" if len(gs) > 1
                       else f"{word} ({g['target']})")
    return "; ".join(out)


def write_markdown(res, path):
    m, v = res["machine"], res["versions"]
    lines = []
    w = lines.append
    mode = "quick (make bench-quick)" if res["quick"] else "full (make bench)"
    w("# mithril-cache benchmark report")
    w("")
    w(f"- Run: {res['started']}, {mode}, {res['duration_s']:.0f} s, "
      f"medians of up to {res['repeats']} repeats")
    dirty = " (with uncommitted changes)" if res.get("dirty") else ""
    w(f"- Commit: `{res.get('commit')}`{dirty} {res.get('commit_subject')}")
    w(f"- Machine: {m['cpu_model']}, {m['cores_usable']} usable cores of "
      f"{m['cores_online']}, {(m['memory_bytes'] or 0) / GIB:.0f} GiB, "
      f"SIMD: {' '.join(m['cpu_simd_flags']) or 'none'}, Linux "
      f"{m['kernel']}")
    w(f"- Load average: {m['loadavg_start'][0]:.2f} at start, "
      f"{m['loadavg_end'][0]:.2f} at end (a shared machine: compare "
      f"ratios, not absolute times)")
    w(f"- Versions: python {v.get('python')}, torch {v.get('torch')}, "
      f"{v.get('compiler')}, build type {v.get('cmake_build_type')} "
      f"(`{v.get('c_flags')}`), libzstd {v.get('libzstd')}, "
      f"lmdb {v.get('lmdb')}, hiredis {v.get('hiredis')}, "
      f"{v.get('b3sum')}, {v.get('redis_server')}")
    w("")
    for note in res["notes"]:
        w(f"> Note: {note}")
        w("")

    w("## Goals")
    w("")
    w("| goal | measured | target | result |")
    w("|---|---|---|---|")
    for g in res["goals"]:
        shown = f" ({g['shown']})" if g.get("shown") else ""
        mark = {"pass": "**pass**", "miss": "**MISS**"}.get(g["status"],
                                                           g["status"])
        w(f"| {g['goal']} | {fmt_goal_value(g)}{shown} | {g['target']} "
          f"| {mark} |")
    w("")

    w("## Figures and their anchors")
    w("")
    w("Ratio = figure / anchor, both medians from this run (for speeds, "
      "above 1 is faster than the anchor).")
    for section in SECTIONS:
        rows = [f for f in res["figures"] if f["section"] == section]
        sec = res["sections"].get(section, {})
        if section == "torch":
            continue
        w("")
        w(f"### {section}")
        w("")
        if sec.get("status") != "ran":
            w(f"*{sec.get('status', 'not run')}: "
              f"{cell(sec.get('reason'))}*")
            w("")
        if not rows:
            continue
        w("| figure | value | anchor | anchor value | ratio | goal | note |")
        w("|---|---|---|---|---|---|---|")
        judged = set()  # a goal is shown beside its field's first figure
        for f in rows:
            r = f"{f['ratio']:.2f}x" if f["ratio"] is not None else ""
            av = (fmt_value(f["anchor"], f["unit"]) if f["anchor_name"]
                  else "")
            g = "" if f["field"] in judged else goal_cell(res, f["field"])
            judged.add(f["field"])
            w(f"| {f['name']} | {fmt_value(f['value'], f['unit'])} | "
              f"{f['anchor_name'] or ''} | {av} | {r} | "
              f"{g} | {f['note'] or ''} |")

    w("")
    w("### torch")
    w("")
    sec = res["sections"].get("torch", {})
    if sec.get("status") != "ran":
        w(f"*{sec.get('status', 'not run')}: {cell(sec.get('reason'))}*")
        w("")
    if res["torch"]:
        w("First call of each model in a fresh process, in seconds. "
          "Overhead on a hit = mithril warm minus eager.")
        w("")
        w("| model | eager | cold | torch warm | mithril warm | "
          "remote warm | mithril/torch warm | overhead on hit | "
          "remote/mithril | hit rate | goals |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for t in res["torch"]:
            def s(k):
                return fmt_value(t.get(k), "s")

            def r(a, b):
                x = ratio(t.get(a), t.get(b))
                return f"{x:.2f}x" if x is not None else "—"
            # remote/mithril: against the local warm starts interleaved
            # with the remote ones when measured, as the median of the
            # pairs' ratios (see docs/BENCH.md).
            anchor = ("remote_local_warm_s" if t.get("remote_local_warm_s")
                      else "mithril_warm_s")
            paired = t.get("remote_paired_ratio")
            over = (None if t.get("mithril_warm_s") is None
                    or t.get("eager_s") is None
                    else t["mithril_warm_s"] - t["eager_s"])
            w(f"| {t.get('model')} | {s('eager_s')} | {s('cold_s')} | "
              f"{s('torch_warm_s')} | {s('mithril_warm_s')} | "
              f"{s('remote_warm_s')} | {r('mithril_warm_s', 'torch_warm_s')}"
              f" | {fmt_value(over, 's')} | "
              f"{f'{paired:.2f}x' if paired is not None else r('remote_warm_s', anchor)} | "
              f"{fmt_value(t.get('hit_rate'), '%')} | "
              f"{goal_cell(res, 'torch.' + str(t.get('model')))} |")
        w("")
        main_cols = {"model", "eager_s", "cold_s", "torch_warm_s",
                     "mithril_warm_s", "remote_warm_s", "hit_rate",
                     "hit_overhead_s", "errors", "repeats"}
        for t in res["torch"]:
            extra = []
            for k, v in sorted(t.items()):
                if k in main_cols or isinstance(v, bool):
                    continue
                if isinstance(v, (int, float)) and k.endswith("enable_s"):
                    extra.append(f"{k} {v * 1000:.1f} ms")
                elif isinstance(v, (int, float)):
                    unit = ("%" if k.endswith("rate") else
                            "s" if k.endswith("_s") else "")
                    extra.append(f"{k} {fmt_value(v, unit)}")
            if t.get("cold_s") and t.get("torch_cold_s"):
                extra.append("cold/torch cold "
                             f"{t['cold_s'] / t['torch_cold_s']:.2f}x")
            if extra:
                w(f"- {t.get('model')}: " + ", ".join(extra))
        w("")
        w("Chart: [torch.png](torch.png)")
        w("")

    w("## Missing")
    w("")
    if res["missing"]:
        for k, why in sorted(res["missing"].items()):
            w(f"- `{k}`: {cell(why)}")
    else:
        w("Nothing: every figure was measured.")
    w("")
    w("## Sections")
    w("")
    w("| section | status | seconds | reason |")
    w("|---|---|---|---|")
    for name in SECTIONS:
        sec = res["sections"].get(name, {})
        w(f"| {name} | {sec.get('status', 'not run')} | "
          f"{sec.get('seconds', '')} | {cell(sec.get('reason'))[:300]} |")
    w("")
    w("How to read this report: docs/BENCH.md. Raw samples: latest.json.")
    text = "\n".join(lines) + "\n"
    text = text.replace("\r", " ")
    Path(path).write_text(text)


def write_chart(res, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        # The file must exist even so: a tiny valid PNG would hide the
        # cause, so the report names it instead.
        res["notes"].append(f"torch.png not drawn: {e}")
        return False
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    series = [("eager_s", "eager first call"), ("cold_s", "cold compile"),
              ("torch_warm_s", "torch warm"),
              ("mithril_warm_s", "mithril warm"),
              ("remote_warm_s", "remote warm (Redis)")]
    models = [t.get("model", "?") for t in res["torch"]]
    if models:
        width = 0.8 / len(series)
        for i, (key, label) in enumerate(series):
            xs = [j + (i - (len(series) - 1) / 2) * width
                  for j in range(len(models))]
            ys = [t.get(key) or 0 for t in res["torch"]]
            bars = ax.bar(xs, ys, width, label=label)
            for b, t in zip(bars, res["torch"]):
                v = t.get(key)
                ax.annotate("n/a" if v is None else f"{v:.2f}",
                            (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models)
        ax.set_ylabel("seconds to the first result (median)")
        ax.legend(fontsize=8)
    else:
        reason = res["sections"].get("torch", {}).get("reason") or "no data"
        ax.text(0.5, 0.5, "torch benchmark not run:\n" + reason[:120],
                ha="center", va="center", wrap=True)
        ax.set_axis_off()
    title = "torch.compile first call: eager, cold, warm caches"
    if res["quick"]:
        title += " (quick)"
    ax.set_title(title)
    fig.text(0.01, 0.01, f"{(res.get('commit') or '')[:12]}  "
             f"{res['machine']['cpu_model']}  torch "
             f"{res['versions']['torch']}", fontsize=7, color="gray")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = Path(__file__).resolve().parent
    ap.add_argument("result", nargs="?",
                    default=str(here / "results" / "latest.json"))
    ap.add_argument("--out", default=None,
                    help="folder for latest.md and torch.png (default: "
                         "the result's folder)")
    args = ap.parse_args()
    res = json.loads(Path(args.result).read_text())
    out = Path(args.out or Path(args.result).parent)
    out.mkdir(parents=True, exist_ok=True)
    write_chart(res, out / "torch.png")
    write_markdown(res, out / "latest.md")
    sys.stdout.write((out / "latest.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
