"""One table of the side-by-side ratios from the benchmarks' JSON (``benchmarks/results/``),
printed and written to ``benchmarks/results/summary.json``. Run by ``benchmarks/run.sh`` after
the benchmarks; a benchmark that did not run is shown as missing, not guessed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rows() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    parse = _load("sip_parse_peers")
    if parse:
        rates, fails = parse["rates"], parse["failures"]
        ours = rates["skinnysip"]
        peers = {k: v for k, v in rates.items() if k not in ("skinnysip", "bare split")}
        fastest = max(peers, key=lambda k: peers[k]) if peers else None
        out.append({"what": "SIP parse: skinnysip / fastest peer" + (f" ({fastest})" if fastest else ""),
                    "ours": round(ours), "peer": round(peers[fastest]) if fastest else None,
                    "ratio": ours / peers[fastest] if fastest else None, "goal": ">= 1 (fastest)"})
        out.append({"what": "SIP parse: bare split / skinnysip", "ours": round(ours),
                    "peer": round(rates["bare split"]), "ratio": rates["bare split"] / ours, "goal": "<= 3"})
        for name, f in fails.items():
            out.append({"what": f"SIP parse failures, {name} (real, RFC 4475 §3.1.1)",
                        "ours": len(f["real"]), "peer": len(f["rfc4475_3.1.1"]), "ratio": None,
                        "goal": "0, 0" if name == "skinnysip" else ""})
    reg = _load("load_register")
    if reg:
        ob, sb = reg["skinnysip"]["best"], reg["sipp"]["best"]

        def higher(name: str) -> str:  # a climb in which no step failed only gives a lower bound
            return " (no step failed)" if (reg.get(name) or {}).get("ceiling_higher") else ""

        out.append({"what": f"REGISTER+digest max rate, 0 failures: load{higher('skinnysip')} / SIPp{higher('sipp')}", "ours": ob and ob["rate"],
                    "peer": sb and sb["rate"], "ratio": reg.get("rate_ratio"), "goal": ">= 0.8"})
        for name, climb in reg.items():
            if name.startswith("skinnysip x") and isinstance(climb, dict):
                best = climb.get("best")
                out.append({"what": f"REGISTER+digest max rate, 0 failures: load --processes {name[11:]}{higher(name)} "
                                    f"/ SIPp{higher('sipp')}",
                            "ours": best and best["rate"], "peer": sb and sb["rate"],
                            "ratio": (best["rate"] / sb["rate"]) if best and sb else None, "goal": ">= 0.8"})
        for name, label in (("skinnysip asyncio", "load --loop asyncio"), ("python floor", "Python floor (uvloop)"),
                            ("python floor asyncio", "Python floor (asyncio)")):
            best = (reg.get(name) or {}).get("best")
            if name in reg:
                out.append({"what": f"REGISTER+digest max rate, 0 failures: {label}{higher(name)} / SIPp{higher('sipp')}",
                            "ours": best and best["rate"], "peer": sb and sb["rate"],
                            "ratio": (best["rate"] / sb["rate"]) if best and sb else None, "goal": ""})
        out.append({"what": "CPU ms per registration: load / SIPp",
                    "ours": ob and round(ob["cpu_ms_per_registration"], 3),
                    "peer": sb and round(sb["cpu_ms_per_registration"], 3), "ratio": reg.get("cpu_ratio"), "goal": ""})
    calls = _load("load_calls")
    media = _load("media_calls")
    if calls:
        bound = media["max_streams_ok"] // 2 if media and media.get("max_streams_ok") else None
        higher = " (no step failed)" if calls.get("ceiling_higher") else ""
        out.append({"what": f"concurrent calls < 1 % late (load vs SIPp echo){higher} / in-process stream pairs",
                    "ours": calls.get("max_calls"), "peer": bound,
                    "ratio": (calls["max_calls"] / bound) if calls.get("max_calls") and bound else None, "goal": ""})
        far = calls.get("far_end_cpu_ratio")
        if far:
            out.append({"what": f"echoing far end CPU/call-s, {far['calls']} calls: load answer / SIPp", "ours": far["skinnysip_ms"], "peer": far["sipp_ms"], "ratio": far["ratio"],
                        "goal": ""})
    probe = _load("sip_probe")
    if probe and probe.get("cli_over_bare_import") is not None:
        out.append({"what": "CLI start-up: skinnysip sip options / python -c 'import asyncio, ssl, json'",
                    "ours": None, "peer": None, "ratio": probe["cli_over_bare_import"], "goal": "<= 1.3"})
        for what, ratio in (probe.get("library_floors_over_bare_import") or {}).items():
            out.append({"what": f"  floor: {what} / the bare import",
                        "ours": None, "peer": None, "ratio": ratio, "goal": ""})
    uas = _load("sip_uas")
    if uas and uas.get("ratio_ours_vs"):
        clean = uas.get("highest_clean_rate") or {}
        for peer, ratio in uas["ratio_ours_vs"].items():
            out.append({"what": f"UAS OPTIONS clean rate: ours / {peer}", "ours": clean.get("skinnysip"),
                        "peer": clean.get(peer), "ratio": ratio, "goal": ""})
    return out


def main() -> int:
    table = rows()
    print(f"{'benchmark':<96} {'ours':>9} {'peer':>9} {'ratio':>7}  goal")
    for r in table:
        print(f"{r['what'][:96]:<96} {r['ours'] if r['ours'] is not None else '-':>9} "
              f"{r['peer'] if r['peer'] is not None else '-':>9} {_fmt(r['ratio']):>7}  {r['goal']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps({"rows": table, "time": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
