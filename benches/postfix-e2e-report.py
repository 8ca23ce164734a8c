#!/usr/bin/python3
# postfix-e2e-report.py -- the summary of benches/postfix-e2e.sh, which calls it: reads the raw
# per-round figures (TSV: round, config, kind, metric, value), prints the medians over rounds and
# the ratios of each round, each beside its target (issue 16; never asserted anywhere), and
# appends the machine-readable results (TSV: config, metric, value) to --results.
#
# Every ratio is the median of the per-round ratios: both sides of a ratio come from the same
# round, so a slow moment of the machine hits both.
import argparse
import statistics
import sys
from collections import defaultdict

# Issue 16's targets.
CPU_RATIO_TARGET = {"helpdesk": 0.50, "other": 0.20}  # helpdesk-milter's CPU / pymilter's
E2E_RATIO_TARGET = 0.90  # helpdesk-milter's e2e msg/s / no milter's, and above the peers
LATENCY_ADDED_TARGET_MS = 0.5
STATE_OVERHEAD_TARGET_PCT = 10.0  # full over stats-replies-off
BARE_VARIANT = "stats-replies-off"
SHARED_VARIANT = "shared"  # the full configuration on the shared store (PostgreSQL)

KIND_TEXT = {
    "helpdesk": "mail to the Help Desk",
    "other": "mail not for the Help Desk",
    "mix": "a mix, 1 in {every} to the Help Desk",
}


def median(values):
    return statistics.median(values) if values else None


def fmt(v, spec):
    """v formatted by spec ("10.3f"); None as "-" in the same width."""
    return "-".rjust(int(spec.split(".")[0] or 0)) if v is None else format(v, spec)


def verdict(ok):
    return "holds" if ok else "MISSED"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--configs", required=True)
    ap.add_argument("--kinds", required=True)
    ap.add_argument("--lat-kinds", default="")
    ap.add_argument("--py-ref", default="py-unix")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--sessions", type=int, required=True)
    ap.add_argument("--lat-n", type=int, required=True)
    ap.add_argument("--mix-every", type=int, required=True)
    ap.add_argument("--results")
    a = ap.parse_args()
    configs = a.configs.split()
    kinds = a.kinds.split()
    lat_kinds = a.lat_kinds.split()

    # v[config][kind][metric] = {round: value}
    v = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    rounds = []
    with open(a.raw) as f:
        for line in f:
            r, c, k, m, val = line.rstrip("\n").split("\t")
            r = int(r)
            if r not in rounds:
                rounds.append(r)
            if val != "-":
                v[c][k][m][r] = float(val)

    out = []  # results rows

    def put(cfg, metric, value, spec):
        if value is not None:
            out.append((cfg, metric, format(value, spec)))

    def failed(c, k, metric="failed"):
        return sum(v[c][k][metric].values())

    def good_rounds(c, k, metric):
        """round -> value of the rounds whose run did not fail."""
        fm = "lat_failed" if metric == "lat" else "failed"
        return {r: x for r, x in v[c][k][metric].items() if not v[c][k][fm].get(r)}

    def med(c, k, metric):
        return median(list(good_rounds(c, k, metric).values()))

    def ratio(c, ref, k, metric, op=lambda x, y: x / y):
        mine, theirs = good_rounds(c, k, metric), good_rounds(ref, k, metric)
        per_round = [op(mine[r], theirs[r]) for r in rounds if r in mine and r in theirs and theirs[r] > 0]
        return median(per_round)

    is_hm = lambda c: c.startswith("hm-")
    peers = [c for c in configs if c.startswith(("py", "dkim"))]
    has_none = "none" in configs
    has_ref = a.py_ref in configs

    print(f"Medians over {len(rounds)} round(s); {a.n} messages x {a.sessions} sessions per kind; "
          f"mix: 1 in {a.mix_every} to the Help Desk")
    any_failed = False
    for k in kinds:
        print()
        print(f"== {k}: {KIND_TEXT[k].format(every=a.mix_every)}")
        head = f"{'config':<28} {'CPU us/msg':>10} {'/ ' + a.py_ref:>12} {'target':>14}   " \
               f"{'e2e msg/s':>9} {'ingest':>7} {'e2e/none':>8} {'target':>22}"
        print(head)
        # The peers' best end-to-end ratio: helpdesk-milter's must be above it.
        peer_ratios = [ratio(p, "none", k, "e2e") for p in peers] if has_none else []
        best_peer = max((x for x in peer_ratios if x is not None), default=None)
        for c in configs:
            cpu = med(c, k, "cpu")
            cpu_r = ratio(c, a.py_ref, k, "cpu") if has_ref and c != a.py_ref and c != "none" else None
            e2e, ingest = med(c, k, "e2e"), med(c, k, "ingest")
            e2e_r = ratio(c, "none", k, "e2e") if has_none and c != "none" else None
            ingest_r = ratio(c, "none", k, "ingest") if has_none and c != "none" else None
            cpu_t = e2e_t = ""
            if is_hm(c) and cpu_r is not None and k in CPU_RATIO_TARGET:
                cpu_t = f"<= {CPU_RATIO_TARGET[k]:.2f} {verdict(cpu_r <= CPU_RATIO_TARGET[k])}"
            if is_hm(c) and e2e_r is not None:
                text = f">= {E2E_RATIO_TARGET:.2f}"
                ok = e2e_r >= E2E_RATIO_TARGET
                if best_peer is not None:
                    text += f", > {best_peer:.3f}"
                    ok = ok and e2e_r > best_peer
                e2e_t = f"{text} {verdict(ok)}"
            nf = failed(c, k)
            any_failed = any_failed or nf > 0
            print(f"{c:<28} {fmt(cpu, '10.0f')} {fmt(cpu_r, '12.3f')} {cpu_t:>14}   "
                  f"{fmt(e2e, '9.1f')} {fmt(ingest, '7.1f')} {fmt(e2e_r, '8.3f')} {e2e_t:>22}"
                  + (f"  ({nf:.0f} failed run(s) left out)" if nf else ""))
            put(c, f"{k}.cpu_us_per_msg", cpu, ".0f")
            put(c, f"{k}.cpu_ratio_to_py", cpu_r, ".3f")
            put(c, f"{k}.e2e_msg_s", e2e, ".1f")
            put(c, f"{k}.ingest_msg_s", ingest, ".1f")
            put(c, f"{k}.e2e_ratio_to_none", e2e_r, ".3f")
            put(c, f"{k}.ingest_ratio_to_none", ingest_r, ".3f")
            out.append((c, f"{k}.failed_runs", f"{nf:.0f}"))
            out.append((c, f"{k}.lost_messages", f"{sum(v[c][k]['lost'].values()):.0f}"))
            for r in rounds:
                for m, name, spec in (("cpu", "cpu_us_per_msg", ".0f"), ("e2e", "e2e_msg_s", ".1f"),
                                      ("ingest", "ingest_msg_s", ".1f")):
                    put(c, f"{k}.round{r}_{name}", v[c][k][m].get(r), spec)
        if best_peer is not None:
            out.append(("peers", f"{k}.best_e2e_ratio_to_none", f"{best_peer:.3f}"))
    print()
    print("CPU: utime + stime of the milter's process (all threads) over the throughput run, per "
          "message; '/ " + a.py_ref + "': the ratio to pymilter's figure of the same round.")
    print("e2e: messages per second delivered to the sink; ingest: accepted by smtpd (smtp-source's rate).")

    # What the variants cost: `full` against each other variant on the same socket.
    lines = []
    for c in configs:
        if not is_hm(c) or c.endswith(":full"):
            continue
        full = c.split(":")[0] + ":full"
        if full not in configs:
            continue
        for k in kinds:
            pct = ratio(full, c, k, "cpu", lambda x, y: (x / y - 1) * 100)
            if pct is None:
                continue
            put(full, f"{k}.cpu_added_pct_over.{c.split(':')[1]}", pct, ".1f")
            lines.append((c, k, pct))
    if lines:
        print()
        print("== What statistics, state and replies cost (CPU per message, full over the variant, "
              "median of per-round ratios)")
        for c, k, pct in lines:
            var = c.split(":")[1]
            sock = c.split(":")[0]
            if var == BARE_VARIANT and k == "helpdesk":
                print(f"statistics and state add {pct:.1f} % to the CPU per message, embedded store "
                      f"({sock}:full vs {c}, {k} mail); target <= {STATE_OVERHEAD_TARGET_PCT:.0f} %: "
                      f"{verdict(pct <= STATE_OVERHEAD_TARGET_PCT)}")
            else:
                print(f"{sock}:full over {c}, {k} mail: {pct:+.1f} %")
        # The shared store against the same bare variant: its own "statistics and state" figure.
        for sock in sorted({c.split(":")[0] for c in configs if is_hm(c)}):
            shared, bare = f"{sock}:{SHARED_VARIANT}", f"{sock}:{BARE_VARIANT}"
            if shared in configs and bare in configs and "helpdesk" in kinds:
                pct = ratio(shared, bare, "helpdesk", "cpu", lambda x, y: (x / y - 1) * 100)
                if pct is not None:
                    put(shared, f"helpdesk.cpu_added_pct_over.{BARE_VARIANT}", pct, ".1f")
                    print(f"statistics and state add {pct:.1f} % to the CPU per message, shared store "
                          f"({shared} vs {bare}, helpdesk mail); target <= {STATE_OVERHEAD_TARGET_PCT:.0f} %: "
                          f"{verdict(pct <= STATE_OVERHEAD_TARGET_PCT)}")

    if lat_kinds:
        print()
        print(f"== Latency, 1 session, {a.lat_n} messages (ms per message; added over no milter, "
              "median of per-round differences)")
        print(f"{'config':<28} {'kind':<9} {'ms/msg':>8} {'added':>8} {'target':>16}")
        for k in lat_kinds:
            for c in configs:
                lat = med(c, k, "lat")
                added = ratio(c, "none", k, "lat", lambda x, y: x - y) if has_none and c != "none" else None
                t = ""
                if is_hm(c) and added is not None:
                    t = f"<= {LATENCY_ADDED_TARGET_MS} {verdict(added <= LATENCY_ADDED_TARGET_MS)}"
                nf = failed(c, k, "lat_failed")
                any_failed = any_failed or nf > 0
                print(f"{c:<28} {k:<9} {fmt(lat, '8.3f')} {fmt(added, '8.3f')} {t:>16}"
                      + (f"  ({nf:.0f} failed run(s) left out)" if nf else ""))
                put(c, f"{k}.latency_ms", lat, ".3f")
                put(c, f"{k}.latency_added_ms", added, ".3f")
                out.append((c, f"{k}.latency_failed_runs", f"{nf:.0f}"))
    if any_failed:
        print()
        print("NOTE: failed runs are left out of the medians and ratios above; see the FAILED RUN lines.")

    if a.results:
        with open(a.results, "a") as f:
            for row in out:
                f.write("\t".join(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
