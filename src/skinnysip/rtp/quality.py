"""Call quality from network measurements: the ITU-T G.107 E-model (06/2015), sans-IO.

:func:`r_factor` computes the transmission rating R = Ro - Is - Id - Ie,eff + A (G.107 §7.1)
with every parameter at its G.107 Table 3 default except the ones a VoIP endpoint can measure:
the codec's equipment impairment Ie and packet-loss robustness Bpl (G.113 Appendix I), the
packet-loss probability and burst ratio, and the one-way mouth-to-ear delay.
:func:`mos_from_r` maps R to an estimated MOS (G.107 Annex B); :func:`estimate` puts it together
from RTCP-style figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["r_factor", "mos_from_r", "estimate", "QualityEstimate", "CODEC_IMPAIRMENT", "G107_DEFAULTS"]

#: G.107 Table 3 default values (dB, ms, dB(A), dBm0p as in the Recommendation).
G107_DEFAULTS: dict[str, float] = {
    "SLR": 8.0, "RLR": 2.0, "STMR": 15.0, "LSTR": 18.0, "Ds": 3.0, "Dr": 3.0, "TELR": 65.0,
    "WEPL": 110.0, "qdu": 1.0, "Nc": -70.0, "Nfor": -64.0, "Ps": 35.0, "Pr": 35.0, "A": 0.0,
    "mT": 100.0, "sT": 1.0,
}

#: ``(Ie, Bpl)`` by RTP encoding name: ITU-T G.113 Appendix I (Tables I.1 and I.3).  G.711 is
#: with packet-loss concealment (Appendix I of G.711); G.729 is G.729A with VAD; G.723 is
#: G.723.1 at 6.3 kbit/s with VAD.
CODEC_IMPAIRMENT: dict[str, tuple[float, float]] = {
    "PCMU": (0.0, 25.1),
    "PCMA": (0.0, 25.1),
    "G729": (11.0, 19.0),
    "G723": (15.0, 16.1),
}


def _lg(x: float) -> float:
    return math.log10(x)


def r_factor(*, ie: float = 0.0, bpl: float = 25.1, loss: float = 0.0, burst_ratio: float = 1.0,
             delay_ms: float = 0.0) -> float:
    """The E-model rating R (ITU-T G.107 (06/2015) §7).

    ``ie``: equipment impairment factor of the codec; ``bpl``: its packet-loss robustness;
    ``loss``: packet-loss probability as a fraction 0..1 (Ppl = 100·loss percent);
    ``burst_ratio``: BurstR (1 = random loss, >1 bursty); ``delay_ms``: one-way mouth-to-ear
    delay in ms, used as T = Ta = delay and Tr = 2·delay (no echo path beyond the default TELR).
    All other parameters are the G.107 Table 3 defaults (:data:`G107_DEFAULTS`), which give
    R ≈ 93.2 for a clean call.  Ie,eff = Ie + (95 - Ie)·Ppl/(Ppl/BurstR + Bpl) (§7.4).
    ``ValueError`` for ``loss`` outside 0..1, ``burst_ratio`` or ``bpl`` not positive, or a
    negative delay.
    """
    if not 0.0 <= loss <= 1.0 or not burst_ratio > 0 or not bpl > 0 or not delay_ms >= 0:
        raise ValueError("loss must be 0..1, burst_ratio > 0, bpl > 0, delay_ms >= 0")
    d = G107_DEFAULTS
    slr, rlr, stmr, lstr = d["SLR"], d["RLR"], d["STMR"], d["LSTR"]
    ds, telr, wepl, qdu = d["Ds"], d["TELR"], d["WEPL"], d["qdu"]
    t = ta = delay_ms
    tr = 2.0 * delay_ms

    # §7.2 basic signal-to-noise ratio Ro
    olr = slr + rlr
    nfo = d["Nfor"] + rlr
    pre = d["Pr"] + 10 * _lg(1 + 10 ** ((10 - lstr) / 10))
    nor = rlr - 121 + pre + 0.008 * (pre - 35) ** 2
    nos = d["Ps"] - slr - ds - 100 + 0.004 * (d["Ps"] - olr - ds - 14) ** 2
    no = 10 * _lg(10 ** (d["Nc"] / 10) + 10 ** (nos / 10) + 10 ** (nor / 10) + 10 ** (nfo / 10))
    ro = 15 - 1.5 * (slr + no)

    # §7.3 simultaneous impairment Is = Iolr + Ist + Iq
    xolr = olr + 0.2 * (64 + no - rlr)
    iolr = 20 * ((1 + (xolr / 8) ** 8) ** (1 / 8) - xolr / 8)
    stmro = -10 * _lg(10 ** (-stmr / 10) + math.exp(-t / 4) * 10 ** (-telr / 10))
    ist = (12 * (1 + ((stmro - 13) / 6) ** 8) ** (1 / 8) - 28 * (1 + ((stmro + 1) / 19.4) ** 35) ** (1 / 35)
           - 13 * (1 + ((stmro - 3) / 33) ** 13) ** (1 / 13) + 29)
    q = 37 - 15 * _lg(qdu)
    g = 1.07 + 0.258 * q + 0.0602 * q * q
    y = (ro - 100) / 15 + 46 / 8.4 - g / 9
    z = 46 / 30 - g / 40
    iq = 15 * _lg(1 + 10 ** y + 10 ** z)
    is_ = iolr + ist + iq

    # §7.4 delay impairment Id = Idte + Idle + Idd
    roe = -1.5 * (no - rlr)
    terv = telr - 40 * _lg((1 + t / 10) / (1 + t / 150)) + 6 * math.exp(-0.3 * t * t)
    if stmr < 9:
        terv += ist / 2
    re = 80 + 2.5 * (terv - 14)
    idte = ((roe - re) / 2 + math.sqrt((roe - re) ** 2 / 4 + 100) - 1) * (1 - math.exp(-t))
    rle = 10.5 * (wepl + 7) * (tr + 1) ** -0.25
    idle = (ro - rle) / 2 + math.sqrt((ro - rle) ** 2 / 4 + 169)
    idd = 0.0
    if ta > d["mT"]:
        x = _lg(ta / d["mT"]) / _lg(2)
        s6 = 6 * d["sT"]
        idd = 25 * ((1 + x ** s6) ** (1 / s6) - 3 * (1 + (x / 3) ** s6) ** (1 / s6) + 2)
    id_ = idte + idle + idd

    # §7.5 effective equipment impairment
    ppl = 100.0 * loss
    ie_eff = ie + (95 - ie) * ppl / (ppl / burst_ratio + bpl)
    return ro - is_ - id_ - ie_eff + d["A"]


def mos_from_r(r: float) -> float:
    """Estimated MOS (conversational quality, 1..4.5) from R (G.107 Annex B, eq. B-4):
    1 for R < 0, 4.5 for R > 100, else 1 + 0.035R + R(R-60)(100-R)·7e-6, clamped to 1..4.5."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return min(4.5, max(1.0, 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6))


@dataclass(frozen=True)
class QualityEstimate:
    """R, the MOS estimate, the one-way delay (ms) used, and every parameter that went in."""

    r: float
    mos: float
    delay_ms: float
    params: dict[str, Any] = field(default_factory=dict)


def estimate(codec: str, loss: float, jitter_ms: float, rtt_ms: float | None, jitter_buffer_ms: float,
             *, ptime_ms: float = 20.0, burst_ratio: float = 1.0) -> QualityEstimate:
    """E-model estimate of a call leg from what RTP/RTCP tell us.

    Parameters used: ``codec`` (RTP encoding name, case-insensitive) selects Ie and Bpl from
    :data:`CODEC_IMPAIRMENT` (``ValueError`` if unknown); ``loss`` (fraction 0..1) is Ppl —
    include packets the jitter buffer discarded as late; ``burst_ratio`` is BurstR.  The one-way
    mouth-to-ear delay is ``rtt_ms / 2`` (0 when no RTT is known) + ``jitter_buffer_ms`` +
    ``ptime_ms`` (packetisation); codec look-ahead and device audio paths are not counted.
    ``jitter_ms`` is recorded in ``params`` but does not enter R: its effect is in the jitter
    buffer delay and its discards.  Everything else is at the G.107 defaults (see
    :func:`r_factor`).
    """
    try:
        ie, bpl = CODEC_IMPAIRMENT[codec.upper()]
    except KeyError:
        raise ValueError(f"no G.113 impairment values for codec {codec!r}") from None
    delay = (rtt_ms / 2 if rtt_ms is not None else 0.0) + jitter_buffer_ms + ptime_ms
    r = r_factor(ie=ie, bpl=bpl, loss=loss, burst_ratio=burst_ratio, delay_ms=delay)
    params: dict[str, Any] = {
        "codec": codec.upper(), "ie": ie, "bpl": bpl, "ppl_percent": 100.0 * loss, "burst_ratio": burst_ratio,
        "rtt_ms": rtt_ms, "jitter_ms": jitter_ms, "jitter_buffer_ms": jitter_buffer_ms, "ptime_ms": ptime_ms,
        "T_ms": delay, "Ta_ms": delay, "Tr_ms": 2 * delay, "defaults": "ITU-T G.107 Table 3",
    }
    return QualityEstimate(r, mos_from_r(r), delay, params)
