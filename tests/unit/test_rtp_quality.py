"""ITU-T G.107 E-model: the default-parameter R of 93.2, MOS (Annex B), loss and delay effects."""

from __future__ import annotations

import pytest

from skinnysip.rtp.quality import CODEC_IMPAIRMENT, QualityEstimate, estimate, mos_from_r, r_factor


def test_clean_g711_call():
    r = r_factor()
    assert r == pytest.approx(93.2, abs=0.05)  # G.107: all defaults give R = 93.2
    assert mos_from_r(r) == pytest.approx(4.41, abs=0.01)


def test_mos_from_r_annex_b():
    assert mos_from_r(-5) == 1.0 and mos_from_r(0) == 1.0
    assert mos_from_r(100) == 4.5 and mos_from_r(120) == 4.5
    assert mos_from_r(50) == pytest.approx(1 + 1.75 + 50 * -10 * 50 * 7e-6)
    assert mos_from_r(80) == pytest.approx(4.024, abs=1e-3)
    values = [mos_from_r(r / 10) for r in range(-100, 1200)]
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    assert min(values) == 1.0 and max(values) == 4.5


def test_ie_eff_formula():
    # With no delay, R drops by exactly Ie,eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl).
    base = r_factor()
    for ie, bpl, loss, burst in [(0, 25.1, 0.02, 1.0), (11, 19.0, 0.05, 2.0), (15, 16.1, 0.0, 1.0)]:
        ppl = 100 * loss
        ie_eff = ie + (95 - ie) * ppl / (ppl / burst + bpl)
        assert base - r_factor(ie=ie, bpl=bpl, loss=loss, burst_ratio=burst) == pytest.approx(ie_eff)
    # 1 % random loss on G.711 with PLC costs about 3.6
    assert r_factor(loss=0.01) == pytest.approx(93.2 - 95 / 26.1, abs=0.05)


def test_r_decreases_with_loss_delay_and_burstiness():
    losses = [r_factor(loss=x / 100) for x in range(0, 31)]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False))
    delays = [r_factor(delay_ms=float(d)) for d in range(0, 600, 10)]
    assert all(b < a for a, b in zip(delays, delays[1:], strict=False))
    assert r_factor(delay_ms=150) > 85 > r_factor(delay_ms=250)  # the Idd knee at Ta = 100 ms
    assert r_factor(loss=0.05, burst_ratio=2.0) < r_factor(loss=0.05)
    mos = [mos_from_r(r) for r in losses]
    assert all(b <= a for a, b in zip(mos, mos[1:], strict=False))
    with pytest.raises(ValueError):
        r_factor(loss=1.5)
    with pytest.raises(ValueError):
        r_factor(delay_ms=-1)


def test_estimate():
    q = estimate("pcmu", 0.0, 5.0, 40.0, 60.0)
    assert isinstance(q, QualityEstimate)
    assert q.delay_ms == pytest.approx(20 + 60 + 20)
    assert q.r == pytest.approx(r_factor(delay_ms=100.0))
    assert q.mos == pytest.approx(mos_from_r(q.r))
    assert q.params["codec"] == "PCMU" and q.params["jitter_ms"] == 5.0 and q.params["Tr_ms"] == 200.0
    assert estimate("PCMA", 0.0, 0.0, None, 0.0, ptime_ms=0.0).r == pytest.approx(93.2, abs=0.05)
    g729 = estimate("G729", 0.01, 0.0, None, 40.0)
    assert g729.r < estimate("PCMU", 0.01, 0.0, None, 40.0).r
    assert set(CODEC_IMPAIRMENT) >= {"PCMU", "PCMA"}
    with pytest.raises(ValueError):
        estimate("speex", 0.0, 0.0, None, 0.0)
