"""When and how anomalies happen: per-instrument schedules and the effect each anomaly has at a moment."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from service.ingest.simulator.definitions import DAY_MS, AnomalySpec, InstrumentSpec, LabelType, SimConfig

if TYPE_CHECKING:
    pass


# ------------------------------------------------------------------------------------------------ schedule


def seeded_rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *stream])))


def plan_anomaly(
    kind: LabelType,
    start_ms: int,
    instruments: Sequence[InstrumentSpec],
    seed: int,
    time_scale: float = 1.0,
) -> AnomalySpec | None:
    """Draw one anomaly of `kind` starting at `start_ms` (None when no instrument fits, e.g. no USDC pair)."""
    r = seeded_rng(seed, 1000)

    def dur(lo_s: float, hi_s: float) -> int:
        return max(1000, int(r.uniform(lo_s, hi_s) * 1000 * time_scale))

    def pick(cands: Sequence[InstrumentSpec]) -> InstrumentSpec | None:
        return cands[int(r.integers(len(cands)))] if cands else None

    if kind == "pump_and_dump":
        inst = pick([i for i in instruments if i.pump_target]) or pick(list(instruments))
        if inst is None:
            return None
        onset = start_ms + dur(600, 1800)
        peak = onset + dur(60, 180)
        end = peak + dur(600, 1200)
        return AnomalySpec(kind, (inst.key,), start_ms, onset, end, float(r.uniform(0.3, 1.5)), seed, peak_ms=peak)
    if kind == "flash_crash":
        inst = pick([i for i in instruments if not i.pump_target]) or pick(list(instruments))
        if inst is None:
            return None
        bottom = start_ms + dur(20, 90)
        end = bottom + dur(300, 900)
        return AnomalySpec(kind, (inst.key,), start_ms, start_ms, end, float(r.uniform(0.05, 0.12)), seed, bottom)
    if kind == "wash_trading":
        inst = pick(list(instruments))
        if inst is None:
            return None
        end = start_ms + dur(180, 600)
        return AnomalySpec(kind, (inst.key,), start_ms, start_ms, end, float(r.uniform(5.0, 15.0)), seed)
    if kind == "spoofing_like":
        inst = pick([i for i in instruments if not i.pump_target]) or pick(list(instruments))
        if inst is None:
            return None
        walls: list[tuple[int, int]] = []
        t = start_ms
        end = start_ms + dur(120, 400)
        while t < end:
            on = t + int(r.uniform(1, 4) * 1000 * time_scale)
            off = on + max(1000, int(r.uniform(3, 15) * 1000 * time_scale))
            walls.append((on, min(off, end)))
            t = off
        side: Literal["bid", "ask"] = "bid" if r.random() < 0.5 else "ask"
        return AnomalySpec(
            kind, (inst.key,), start_ms, walls[0][0], end, float(r.uniform(20, 50)), seed, walls=tuple(walls), side=side
        )
    if kind == "depeg":
        usdc = [i.key for i in instruments if i.peg == "USDC"]
        if not usdc:
            return None
        end = start_ms + dur(1200, 3600)
        return AnomalySpec(kind, tuple(usdc), start_ms, start_ms, end, float(r.uniform(0.03, 0.10)), seed, peg="USDC")
    raise ValueError(f"unknown anomaly kind {kind!r}")


class AnomalySchedule:
    """The automatic plan: one anomaly every `every_s` (jittered), cycling through the kinds; endless and lazy."""

    def __init__(self, cfg: SimConfig) -> None:
        self._cfg = cfg
        self.seeded_rng = seeded_rng(cfg.seed, 1)
        self._next_ms = cfg.start_ms + int(cfg.first_anomaly_s * 1000)
        self._n = 0

    def until(self, t_ms: int) -> list[AnomalySpec]:
        """Anomalies whose start is at or before `t_ms` that were not returned yet."""
        out: list[AnomalySpec] = []
        kinds = self._cfg.anomaly_kinds
        while kinds and self._next_ms <= t_ms:
            kind = kinds[self._n % len(kinds)]
            spec = plan_anomaly(
                kind,
                self._next_ms,
                self._cfg.instruments,
                seed=self._cfg.seed * 1_000_003 + self._n,
                time_scale=self._cfg.anomaly_time_scale,
            )
            if spec is not None:
                out.append(spec)
            self._n += 1
            jitter = float(self.seeded_rng.uniform(-0.1, 0.1))
            self._next_ms += int(self._cfg.anomaly_every_s * 1000 * (1 + jitter))
        return out


# -------------------------------------------------------------------------------------------------- effects


@dataclass(slots=True)
class Effect:
    log_offset: float = 0.0
    rate_mult: float = 1.0
    buy_shift: float = 0.0
    sweep_mean: float = 1.2  # levels one taker order fills on average; > 1 gives same-millisecond trade bursts
    wash_hz: float = 0.0
    wash_mult: float = 0.0
    wall: tuple[str, int, float] | None = None  # (side, level, size multiple)
    tag: str = ""


def apply_effect(spec: AnomalySpec, t: int, eff: Effect) -> None:
    """Add the effect of `spec` at time `t` (ms) to `eff`. Price offsets persist after the anomaly ends."""
    if t < spec.start_ms:
        return
    active = t < spec.end_ms
    if spec.kind == "pump_and_dump":
        acc_gain, final = 0.03, -0.03
        peak_off = math.log1p(spec.magnitude)
        if t < spec.onset_ms:
            u = (t - spec.start_ms) / max(1, spec.onset_ms - spec.start_ms)
            eff.log_offset += acc_gain * u
            eff.rate_mult *= 1 + 2.5 * u
            eff.buy_shift += 0.15
            eff.tag = eff.tag or "pump_accumulation"
        elif t < spec.peak_ms:
            u = (t - spec.onset_ms) / max(1, spec.peak_ms - spec.onset_ms)
            eff.log_offset += acc_gain + (peak_off - acc_gain) * (1 - (1 - u) ** 2)
            eff.rate_mult *= 40 + 110 * (1 - u)
            eff.buy_shift += 0.42
            eff.sweep_mean = max(eff.sweep_mean, 4.0)
            eff.tag = "pump_and_dump"
        elif active:
            u = (t - spec.peak_ms) / max(1, spec.end_ms - spec.peak_ms)
            e4 = math.exp(-4.0)
            eff.log_offset += final + (peak_off - final) * (math.exp(-4 * u) - e4) / (1 - e4)
            eff.rate_mult *= 1 + 30 * math.exp(-3 * u)
            eff.buy_shift -= 0.3
            eff.sweep_mean = max(eff.sweep_mean, 2.5)
            eff.tag = "pump_and_dump"
        else:
            eff.log_offset += final
    elif spec.kind == "flash_crash":
        bottom = math.log(1 - spec.magnitude)
        rec = 0.85
        if t < spec.peak_ms:
            u = (t - spec.start_ms) / max(1, spec.peak_ms - spec.start_ms)
            eff.log_offset += bottom * u**0.7
            eff.rate_mult *= 25
            eff.buy_shift -= 0.38
            eff.sweep_mean = max(eff.sweep_mean, 3.0)
            eff.tag = "flash_crash"
        elif active:
            u = (t - spec.peak_ms) / max(1, spec.end_ms - spec.peak_ms)
            e3 = math.exp(-3.0)
            eff.log_offset += bottom * (1 - rec * (1 - math.exp(-3 * u)) / (1 - e3))
            eff.rate_mult *= 1 + 10 * math.exp(-3 * u)
            eff.buy_shift += 0.12
            eff.tag = "flash_crash"
        else:
            eff.log_offset += bottom * (1 - rec)
    elif spec.kind == "wash_trading":
        if active:
            eff.wash_hz += 1.2
            eff.wash_mult = max(eff.wash_mult, spec.magnitude)
            eff.tag = eff.tag or "wash_trading"
    elif spec.kind == "spoofing_like":
        drift = 0.003 if spec.side == "bid" else -0.003
        if active:
            u = (t - spec.start_ms) / max(1, spec.end_ms - spec.start_ms)
            eff.log_offset += drift * u
            for on, off in spec.walls:
                if on <= t < off:
                    eff.wall = (spec.side, 3, spec.magnitude)
                    break
            eff.tag = eff.tag or "spoofing_like"
        else:
            eff.log_offset += drift
    elif spec.kind == "depeg" and active:
        eff.rate_mult *= 3.0
        eff.tag = eff.tag or "depeg"


def depeg_level(spec: AnomalySpec, t: int) -> float:
    """How far the pegged currency is below 1 at `t` (a fraction); ramps in, holds, recovers."""
    if not spec.start_ms <= t < spec.end_ms:
        return 0.0
    u = (t - spec.start_ms) / max(1, spec.end_ms - spec.start_ms)
    shape = u / 0.2 if u < 0.2 else 1.0 if u < 0.7 else 1 - (u - 0.7) / 0.3
    return spec.magnitude * shape


def intraday_factor(t_ms: int) -> float:
    """Relative trade intensity by UTC time: quiet Asian night, EU open, a larger US-session peak; weekends lower."""
    h = (t_ms % DAY_MS) / 3_600_000
    f = 1.0 + 0.7 * math.exp(-(((h - 14.5) / 2.5) ** 2)) + 0.3 * math.exp(-(((h - 8.0) / 2.0) ** 2))
    f -= 0.35 * math.exp(-(((h - 4.0) / 2.5) ** 2))
    weekday = (t_ms // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday; 5, 6 = Saturday, Sunday
    return f * (0.7 if weekday >= 5 else 1.0) / 1.25
