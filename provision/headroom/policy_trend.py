"""Trend fits for the predictive policy: the least-squares line, how well it explains the
samples, and the slow fit over two hours of five-minute means that finds a day's rise in
noise the short fits cannot see through. Pure functions over `Sample`s."""
from __future__ import annotations

import math
from typing import Sequence

from .policy_model import TREND_FIT, Sample

# A slow trend (a day's rise: about 0.2 containers a minute against a noise of 4) is no trend
# over twenty minutes; over two hours of five-minute means (the noise of a mean shrinks with
# the square root of its samples) it is. Needs SLOW_MIN_BUCKETS of them.
SLOW_WINDOW = 7200.0
SLOW_BUCKET = 300.0
SLOW_MIN_BUCKETS = 6
# The slow line is not extrapolated while the newest bucket's samples lie more than this many
# standard errors of their mean behind it (the load turned: a ramp ended).
TURNED = 2.0
# Only a slow line: one rising more than STEEP noise deviations over STEEP_OVER seconds would
# show in the shorter fits, so when they do not trust it the load has turned (a ramp ended)
# and the two-hour line would overshoot.
STEEP = 2.0
STEEP_OVER = 1200.0


def fit_quality(ts: Sequence[float], vs: Sequence[float], gradient: float) -> float:
    """R^2 of the least-squares line: 1 for a clean trend, near 0 for noise around a level."""
    n = len(ts)
    tm, vm = sum(ts) / n, sum(vs) / n
    total = sum((v - vm) ** 2 for v in vs)
    if total == 0:
        return 1.0
    residual = sum((v - (vm + gradient * (t - tm))) ** 2 for t, v in zip(ts, vs))
    r2 = max(0.0, min(1.0, 1 - residual / total))
    # Six noisy samples can line up by chance; below TREND_FIT a line explains too little.
    return r2 if r2 >= TREND_FIT else 0.0


def slope(ts: Sequence[float], vs: Sequence[float]) -> float:
    n = len(ts)
    tm, vm = sum(ts) / n, sum(vs) / n
    sxx = sum((t - tm) ** 2 for t in ts)
    return sum((t - tm) * (v - vm) for t, v in zip(ts, vs)) / sxx if sxx else 0.0


def bucket_means(history: Sequence[Sample], bucket: float) -> list[Sample]:
    """Means of `history` per `bucket` seconds (aligned on multiples of it), oldest first;
    `history` is sorted by time."""
    groups: dict[int, list[Sample]] = {}
    for h in history:
        groups.setdefault(int(h.at // bucket), []).append(h)
    out = []
    for g in groups.values():
        n = len(g)
        out.append(Sample(sum(x.at for x in g) / n, sum(x.containers for x in g) / n, sum(x.cpu for x in g) / n,
                          sum(x.memory for x in g) / n))
    return out


def slow_predict(history: Sequence[Sample], attribute: str, at: float, spread: float) -> float | None:
    """`attribute` at time `at` on the least-squares line through the SLOW_BUCKET means of
    `history`; None when the line is not trusted (R^2 under TREND_FIT), when there are too few
    means, or when the newest samples have turned away from it by more than TURNED standard
    errors (`spread` is the noise of one sample), or when it is too steep to be slow (STEEP).
    Past a bend the newer half of the means
    sets the level and the flatter of the two halves' slopes is extrapolated (damped: a rise
    that is slowing is not carried on at its old pace)."""
    means = bucket_means(history, SLOW_BUCKET)
    if len(means) < SLOW_MIN_BUCKETS:
        return None
    ts = [m.at for m in means]
    vs = [getattr(m, attribute) for m in means]
    gradient = slope(ts, vs)
    if not fit_quality(ts, vs, gradient):
        return None
    if abs(gradient) * STEEP_OVER > STEEP * spread:
        return None
    recent = [h for h in history if h.at > history[-1].at - SLOW_BUCKET]
    recent_at = sum(h.at for h in recent) / len(recent)
    recent_level = sum(getattr(h, attribute) for h in recent) / len(recent)
    on_line = sum(vs) / len(vs) + gradient * (recent_at - sum(ts) / len(ts))
    behind = (on_line - recent_level) if gradient > 0 else (recent_level - on_line)
    if behind > TURNED * spread / math.sqrt(len(recent)):
        return None
    half = len(ts) // 2
    ts, vs = ts[half:], vs[half:]
    newer = slope(ts, vs)
    gradient = min(gradient, newer) if gradient > 0 else max(gradient, newer)
    return max(0.0, sum(vs) / len(vs) + gradient * (at - sum(ts) / len(ts)))


def compact(history: Sequence[Sample], now: float, raw_keep: float) -> tuple[Sample, ...]:
    """`history` (sorted by time) with the samples older than `raw_keep` seconds before `now`
    replaced by their SLOW_BUCKET means, so the memory a loop keeps does not grow with its
    frequency (a pass every 10 s kept 720 samples of two hours; now at most the raw tail and
    24 means). Only whole buckets are merged and the slow fit means each bucket anyway, so it
    sees the same means; the shorter fits and the noise read only the raw tail."""
    cut = math.floor((now - raw_keep) / SLOW_BUCKET) * SLOW_BUCKET  # buckets wholly before it
    old = [h for h in history if h.at < cut]
    if not old:
        return tuple(history)
    return tuple(bucket_means(old, SLOW_BUCKET)) + tuple(h for h in history if h.at >= cut)
