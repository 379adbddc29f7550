"""Prints the table of a variants.sh run: summary.py DIR (what variants.sh
wrote: llama-TYPE-rR.json, llamabench-TYPE-rR.json (llama.cpp's own
llama-bench -o json), ours-TYPE-VARIANT-rR.json, check-TYPE-VARIANT.json,
tiny-VARIANT.json)."""

import glob
import json
import os
import re
import statistics
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def mode(d, name):
    return next((r for r in d["results"] if r["mode"] == name), None)


def main(d):
    llama, ours = {}, {}
    for p in glob.glob(f"{d}/llama-*-r*.json"):
        t = re.match(r"llama-(.+)-r\d+\.json", os.path.basename(p)).group(1)
        if (j := load(p)) is not None:
            llama.setdefault(t, []).append(j)
    for p in glob.glob(f"{d}/ours-*-r*.json"):
        t, v = re.match(r"ours-([a-z0-9_]+)-(.+)-r\d+\.json", os.path.basename(p)).groups()
        if (j := load(p)) is not None:
            ours.setdefault((t, v), []).append(j)
    own = {}
    for p in glob.glob(f"{d}/llamabench-*-r*.json"):
        t = re.match(r"llamabench-(.+)-r\d+\.json", os.path.basename(p)).group(1)
        for e in load(p) or []:
            # tg128 after 512 tokens of context (-d 512), as ours runs after the prompt.
            if e.get("n_prompt") and not e.get("n_gen"):
                key = "pp512" if not e.get("n_depth") else None
            else:
                key = "tg128" if e.get("n_depth") == 512 else None
            if key:
                own.setdefault(t, {}).setdefault(key, []).append(e["avg_ts"])
    med = statistics.median
    for (t, v), runs in sorted(ours.items()):
        ar = [mode(j, "ar") for j in runs]
        orx = [mode(j, "orthrus") for j in runs]
        tg = med(r["generation_tokens_per_second"] for r in ar)
        pp = med(r["prompt_tokens_per_second"] for r in ar)
        ar_step = med(r["step_ms"] for r in ar)
        or_step = med(r["step_ms"] for r in orx if r)
        line = f"{t} {v}: ar {tg:.1f} tok/s, pp {pp:.0f}; step ar {ar_step:.3f} ms, orthrus {or_step:.3f} ms, ratio {or_step / ar_step:.2f}"
        if t in llama:
            ltg = med(j["tg128"] for j in llama[t])
            lpp = med(j["pp512"] for j in llama[t])
            line += f" | llama tg128 {ltg:.1f} pp512 {lpp:.0f} | ratio tg {tg / ltg:.3f} pp {pp / lpp:.3f}"
        if t in own and own[t].get("tg128"):
            otg, opp = med(own[t]["tg128"]), med(own[t].get("pp512", [float("nan")]))
            line += f" | llama-bench tg128@512 {otg:.1f} pp512 {opp:.0f} | ratio tg {tg / otg:.3f} pp {pp / opp:.3f}"
        print(line)
        print(f"    pass_ms (last round): {runs[-1].get('pass_ms')}")
    for p in sorted(glob.glob(f"{d}/check-*.json")) + sorted(glob.glob(f"{d}/tiny-*.json")):
        j = load(p)
        if j is None:
            print(os.path.basename(p), "missing")
            continue
        c = j.get("check") or {}
        div = c.get("divergences", [])
        gaps = sorted(round(x["top2_gap"], 4) for x in div)
        rel = sorted(x["batched_vs_single_rel"] for x in div)
        res = {r["mode"]: (round(r["generation_tokens_per_second"]), round(r["step_ms"], 3), round(r["mean_accepted"], 2)) for r in j["results"]}
        print(f"{os.path.basename(p)}: identical {c.get('identical')} of {c.get('prompts')}; gaps {gaps[:8]}; "
              f"batched vs single rel {['%.1e' % x for x in rel[:3]]}..{['%.1e' % x for x in rel[-2:]]}; {res}; pass_ms {j.get('pass_ms')}")


if __name__ == "__main__":
    main(sys.argv[1])
