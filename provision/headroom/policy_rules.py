"""The three headroom policies: each turns the observed load into the pool size it wants.

- `containers` (Clocker): possible = containers_per_host x hosts, available = possible -
  used; HOT (add) while reserve > available, COLD (remove) while available > reserve +
  containers_per_host.
- `utilization` (cluster-autoscaler): mean CPU / memory above their thresholds adds hosts
  (enough to bring the mean back under); hosts below `scale_down_utilization` on both for
  `scale_down_cooldown` are removable while the rest stay under the thresholds.
- `predictive` (Stratos): each load factor is predicted as
  average + gradient*t + 1/2*curvature*t^2 over the recorded history, a boot (and the pass
  the scale-up window waits) ahead, plus a margin of the load's observed noise; containers
  need their slots and the reserve, CPU and memory the hosts' capacity, so a rising ramp is
  met before it arrives without utilization's idle band.

Pure functions; `policy.decide` combines their needs.
"""
from __future__ import annotations

import math
import statistics
from itertools import repeat
from typing import Callable, Mapping, Sequence

from ..spec.model import Reserve
from .policy_model import (MIN_PREDICT_SAMPLES, PREDICT_AHEAD, PREDICT_WINDOW, READY, TREND_COVER, HostLoad, Need,
                           Sample, Settings)
from .policy_trend import SLOW_WINDOW, fit_quality, slope, slow_predict

def containers_hosts_needed(used: float, per_host: int, reserve: Reserve, limit: int) -> int:
    """Smallest host count whose free slots cover `reserve` (Clocker not HOT); `limit` + 1
    when even `limit` hosts are not enough."""
    m = max(0, math.ceil(used / per_host)) if per_host else 0
    if m > limit:
        return limit + 1
    return first_true(m, limit + 1, lambda k: per_host * k - used >= reserve.slots(per_host * k),
                      reserve_is_monotone(reserve))


def reserve_is_monotone(reserve: Reserve) -> bool:
    """True when free slots beyond the reserve never fall as hosts are added (a reserve of at
    most 100%): the searches over pool sizes may then bisect instead of stepping host by host."""
    return reserve.percent is None or reserve.percent <= 100


def first_true(low: int, high: int, test: Callable[[int], bool], monotone: bool = True) -> int:
    """The smallest k in low..high-1 for which `test(k)` holds, else `high`. With `monotone`
    (once true, true for every larger k) by bisection: a decision over 50,000 hosts must not
    step through thousands of sizes (P5, issue 11)."""
    if not monotone:
        return next((k for k in range(low, high) if test(k)), high)
    while low < high:
        mid = (low + high) // 2
        if test(mid):
            high = mid
        else:
            low = mid + 1
    return low


def containers_policy(s: Settings, hosts: int, used: float) -> Need:
    """Clocker's ContainerHeadroomEnricher as a wanted size for `hosts` ready hosts."""
    per = s.containers_per_host
    possible = per * hosts
    available = possible - used
    headroom = s.reserve.slots(possible)
    if headroom > available:
        want = containers_hosts_needed(used, per, s.reserve, max(s.max_count, hosts))
        return Need("containers", want, f"HOT: {available:g} free of {possible} slots, reserve {s.reserve} "
                                        f"needs {headroom}; {want} hosts keep the reserve")
    slots = s.reserve.slots

    def cold(size: int) -> bool:
        # COLD while a whole host's worth of slots remains above the reserve.
        smaller = per * (size - 1)
        return per * size - used > slots(per * size) + per and smaller - used >= slots(smaller)

    # One host less while COLD: down to just below the smallest size from which every size up
    # to `hosts` is COLD.
    want = hosts
    if reserve_is_monotone(s.reserve):
        lowest_cold = first_true(1, hosts + 1, cold)
        want = lowest_cold - 1 if lowest_cold <= hosts else hosts
    else:
        while want > 0 and cold(want):
            want -= 1
    if want == 1 and used == 0 and slots(0) == 0:
        want = 0  # no work and nothing to keep free: min 0 is reachable
    if want < hosts:
        return Need("containers", want, f"COLD: {available:g} free of {possible} slots, reserve {headroom}; "
                                        f"{want} hosts still keep the reserve")
    return Need("containers", hosts, f"OK: {available:g} free of {possible} slots, reserve {headroom}")


def hosts_for_load(total: float, threshold: float) -> int:
    """Hosts needed to carry `total` host-units of load with each at most `threshold` busy."""
    return max(0, math.ceil(round(total / threshold, 9)))


def low_hosts(s: Settings, ready: Sequence[HostLoad]) -> list[HostLoad]:
    """The hosts of `ready` below `scale_down_utilization` on both CPU and memory now, in
    order: the only hosts the utilization policy may ever let go."""
    low = s.scale_down_utilization
    return [h for h in ready if h.cpu < low and h.memory < low]


def utilization_policy(s: Settings, pool: Sequence[HostLoad], pending_cpu: float, pending_memory: float,
                       low_since: Mapping[str, float], now: float, *, ready: Sequence[HostLoad] | None = None,
                       load: tuple[float, float] | None = None,
                       below: Sequence[HostLoad] | None = None) -> tuple[Need, dict[str, float]]:
    """cluster-autoscaler style sizing on CPU and memory; returns the need and the updated
    map of hosts that have been below `scale_down_utilization` and since when.

    When the caller has them already, it may give `ready` (the ready hosts of `pool`, in its
    order), `load` (their CPU and memory sums, added in that order, as `policy_hosts.pool_view`
    does) and `below` (`low_hosts` of them): the policy then makes no pass over the pool of
    its own (P5, issue 11)."""
    if ready is None:
        ready = [h for h in pool if h.status == READY]
    if load is None:
        load = (sum([h.cpu for h in ready]), sum([h.memory for h in ready]))
    n = len(ready)
    cpu = load[0] + pending_cpu
    mem = load[1] + pending_memory
    low_now = [h.name for h in (low_hosts(s, ready) if below is None else below)]
    # since when each low host has been low: remembered, or now. One C-level lookup per low
    # host: cheaper than intersecting the key sets of two maps of thousands of hosts.
    new_low = dict(zip(low_now, map(low_since.get, low_now, repeat(now))))
    if n == 0:
        want = max(hosts_for_load(cpu, s.cpu_threshold), hosts_for_load(mem, s.memory_threshold))
        return Need("utilization", want, f"no ready host; load of {cpu:.2f} CPU / {mem:.2f} memory hosts"), new_low
    mean_cpu, mean_mem = cpu / n, mem / n
    figures = f"mean CPU {mean_cpu:.2f} (threshold {s.cpu_threshold:g}), memory {mean_mem:.2f} " \
              f"(threshold {s.memory_threshold:g})"
    if mean_cpu > s.cpu_threshold or mean_mem > s.memory_threshold:
        want = max(n + 1, hosts_for_load(cpu, s.cpu_threshold), hosts_for_load(mem, s.memory_threshold))
        return Need("utilization", want, f"busy: {figures}; {want} hosts bring it under"), new_low
    # Hosts low now whose load the others can take; the scale-down window (see `decide`)
    # makes this last, and only hosts low for that whole window are removal candidates.
    def others_carry(k: int) -> bool:
        rest = n - k - 1
        return (rest > 0 and cpu / rest <= s.cpu_threshold and mem / rest <= s.memory_threshold) or \
            (rest == 0 and cpu == 0 and mem == 0)

    # The most low hosts the others can take over: true for k, true for every smaller k.
    k = first_true(0, min(len(new_low), n), lambda k: not others_carry(k))
    if k:
        return Need("utilization", n - k, f"{k} host(s) below {s.scale_down_utilization:g}; {figures}"), new_low
    return Need("utilization", n, f"OK: {figures}"), new_low


def predict(history: Sequence[Sample], attribute: str, ahead: float = PREDICT_AHEAD) -> float | None:
    """Stratos: average + gradient*t + 1/2*curvature*t^2, with t counted from the middle of
    the history to `ahead` seconds past its newest sample; None without enough history."""
    if len(history) < MIN_PREDICT_SAMPLES:
        return None
    ts = [h.at for h in history]
    vs = [getattr(h, attribute) for h in history]
    n = len(ts)
    t_mean = sum(ts) / n
    average = sum(vs) / n
    gradient = slope(ts, vs)  # 0 when every sample has the same time: then only the average counts
    # Curvature: the change of the gradient between the older and the newer half.
    half = n // 2
    curvature = 0.0
    if half >= 2 and n - half >= 2:
        g_old = slope(ts[:half], vs[:half])
        g_new = slope(ts[half:], vs[half:])
        dt = (sum(ts[half:]) / (n - half)) - (sum(ts[:half]) / half)
        if dt > 0:
            curvature = (g_new - g_old) / dt
    t = (ts[-1] - t_mean) + ahead
    # A parabola holds only about as far as the samples it was fitted on: past their span the
    # bend grows linearly (a ramp's start, extrapolated a slow boot ahead, overshot by hosts).
    span = ts[-1] - ts[0]
    bend = 0.5 * curvature * t * min(t, BEND_SPAN * span)
    # The curvature term is noisy on short histories: it may at most double the linear trend.
    limit = abs(gradient * t)
    # Noise is no trend: the trend counts as much as the straight line explains the samples
    # (R^2), so a steady noisy load predicts its average and a clean ramp its extrapolation.
    trust = fit_quality(ts, vs, gradient)
    return max(0.0, average + trust * (gradient * t + max(-limit, min(limit, bend))))


def trusted(history: Sequence[Sample], attribute: str) -> bool:
    """Whether the least-squares line over `history` explains enough of it (TREND_FIT)."""
    ts = [h.at for h in history]
    vs = [getattr(h, attribute) for h in history]
    return fit_quality(ts, vs, slope(ts, vs)) > 0


def predict_window(ahead: float) -> float:
    """History the predictive policy fits: PREDICT_WINDOW, or `ahead` when that is longer."""
    return max(PREDICT_WINDOW, ahead)


def load_factor(predicted: float, hosts: int, threshold: float, low: float) -> int:
    """Hosts for a predicted load: more when the mean would pass `threshold`; fewer only when
    it would fall below `low` (the gap between the two keeps the pool from flapping)."""
    if hosts == 0 or predicted / hosts > threshold:
        return hosts_for_load(predicted, threshold)
    if predicted / hosts < low:
        return min(hosts, max(1, hosts_for_load(predicted, threshold)))
    return hosts


# The predictive policy grows when the prediction plus GROW_MARGIN standard deviations of
# the load's observed noise does not fit, and shrinks only to a size that still fits it plus
# SHRINK_MARGIN of them: the band between the two, sized to the noise, keeps a noisy load
# from flapping (the reactive policies' fixed thresholds do that blind to the noise). With the
# slow fit, 1.5/2.5 met 28 of the 40 trace cells but flapped on a noisy steady day (60 and
# 420 s boot), 1.5/3.5 met 26 (other cells than 1/3), 1.5/3.0 27 with one such flap.
GROW_MARGIN = 1.0
SHRINK_MARGIN = 3.0
# While only the slow fit sees a rise (a day's morning), the pool grows at RISING_MARGIN
# deviations: such a rise in noise is met late at 1 (3/2/6/7 minutes below demand on the
# noisy day at 60/180/420/900 s boot), at 1.7 it is met throughout; a steady load keeps 1.
RISING_MARGIN = 1.7
# The noise is measured over this much history (twenty one-minute samples: a five-sample
# estimate swings by a third from one minute to the next, and so would the pool).
NOISE_WINDOW = 1200.0
JUMP = 4.0
# A trend not trusted over the fit's window is fitted again over this many of them (a
# longer fit pulls a ramp out of 10% noise; not longer: it overshoots the ramp's end).
LONG_FIT = 3.0
BEND_SPAN = 1.2
# At a turning point (a ramp ending) the newest TURN_SAMPLES samples rise clearly slower
# than the fitted line (by more than TURNED_BY standard errors of their own slope): the
# prediction is damped to their pace, so the pool does not keep growing past the ramp's end.
TURN_SAMPLES = 4
TURNED_BY = 2.0


def damped_at_turn(history: Sequence[Sample], attribute: str, at: float, spread: float) -> float | None:
    """`attribute` at `at` on the newest TURN_SAMPLES samples' own line when the load rose
    over `history` but those samples rise clearly slower (a ramp's end); None otherwise."""
    if len(history) < 2 * TURN_SAMPLES:
        return None
    ts = [h.at for h in history]
    vs = [getattr(h, attribute) for h in history]
    gradient = slope(ts, vs)
    recent_ts, recent_vs = ts[-TURN_SAMPLES:], vs[-TURN_SAMPLES:]
    recent = slope(recent_ts, recent_vs)
    tm = sum(recent_ts) / TURN_SAMPLES
    error = spread / math.sqrt(sum((t - tm) ** 2 for t in recent_ts) or 1.0)
    if gradient <= 0 or gradient - recent <= TURNED_BY * error:
        return None
    return max(0.0, sum(recent_vs) / TURN_SAMPLES + max(0.0, recent) * (at - tm))


def history_window(ahead: float) -> float:
    """History `decide` keeps for the predictive policy: the slow fit's, which is longer than
    the trend's fit and the noise's (two hours: 120 one-minute samples)."""
    return max(fit_window(ahead), SLOW_WINDOW)


def fit_window(ahead: float) -> float:
    """History the trend's fits (short and LONG_FIT) and the noise are measured over."""
    return max(predict_window(ahead), NOISE_WINDOW)


def noise_spread(history: Sequence[Sample], attribute: str) -> float:
    """Standard deviation of the load's noise, from the differences of successive samples: a
    trend, and a slow bend of it, moves every difference alike and drops out, and the median
    of their deviations ignores a few jumps (a spike starting or ending is a change of level,
    not noise). A clean ramp or day has next to none, a noisy steady load its whole spread."""
    diffs = differences(history, attribute)
    if len(diffs) < 2:
        return 0.0
    middle, scale = robust_centre(diffs)
    kept = [d for d in diffs if abs(d - middle) <= JUMP * scale]
    if len(kept) < 2:
        return 0.0
    mean = sum(kept) / len(kept)
    # a difference of two samples has twice the variance of one
    return math.sqrt(sum((d - mean) ** 2 for d in kept) / (len(kept) - 1) / 2)


def differences(history: Sequence[Sample], attribute: str) -> list[float]:
    vs = [getattr(h, attribute) for h in history]
    return [b - a for a, b in zip(vs, vs[1:])]


def robust_centre(diffs: Sequence[float]) -> tuple[float, float]:
    """Median and robust standard deviation (scaled median absolute deviation) of `diffs`;
    differences more than JUMP of these deviations off the median are changes of level."""
    middle = statistics.median(diffs)
    return middle, 1.4826 * statistics.median(abs(d - middle) for d in diffs)


def stepped_down(history: Sequence[Sample]) -> bool:
    """Whether the containers fell by a change of level (a spike ending) within `history`: a
    fall more than JUMP robust deviations of the differences, and at least JUMP containers
    (a clean record has no deviation), below their median. What stepped up once may step up
    again, so the pool keeps its size until the step has left the fit's window: removing as
    soon as the stabilisation allows reversed the add that met the spike within the flap
    window."""
    diffs = differences(history, "containers")
    if len(diffs) < 2:
        return False
    middle, scale = robust_centre(diffs)
    return any(d - middle < -JUMP * max(scale, 1.0) for d in diffs)


def first_known(value: float | None, otherwise: float) -> float:
    return otherwise if value is None else value


def predictive_policy(s: Settings, history: Sequence[Sample], hosts: int, pending: float = 0, booting: int = 0) -> Need:
    """Stratos: size for the demand predicted `predict_ahead` seconds on (about a boot: what
    is added now serves then), plus GROW_MARGIN (to grow) or SHRINK_MARGIN (to shrink) standard deviations of the observed noise;
    the largest factor wins. Containers need their slots and the reserve; CPU and memory need
    room at the hosts' capacity (the prediction and its margin are the headroom that the
    reactive thresholds stand in for). No hysteresis here: `decide` stabilises the size (it
    shrinks only to the largest size wanted during the scale-down window). A prediction never
    falls below the newest sample (after a turning point the fitted curve lags what is used
    now), and with too little history the newest sample is the prediction, so pending work
    is met. A trend too noisy to trust over the fit's window is fitted over LONG_FIT of them,
    and failing that over two hours of five-minute means (`slow_predict`; while that finds a
    rise the others do not, the pool grows at RISING_MARGIN deviations);
    while a step down (a spike ending) is inside the fit's window the pool does not shrink.
    At a turning point (`damped_at_turn`: the newest samples rise clearly slower than the
    line) the prediction is damped to their pace. With work pending and no trusted trend, or
    while learning with no host of `booting` on its way, the pool grows at least as far as
    the utilization policy would."""
    newest = history[-1] if history else Sample(0.0, float(pending), 0.0, 0.0)
    window = predict_window(s.predict_ahead)
    fitted = [h for h in history if newest.at - h.at <= window]
    covered = len(fitted) >= MIN_PREDICT_SAMPLES and fitted[0].at <= newest.at - TREND_COVER * window
    attributes = ("containers", "cpu", "memory")
    # `decide` grows only once growth was wanted through the scale-up window: one pass later
    # than wanted first; what is added then serves a boot after that.
    interval = newest.at - history[-2].at if len(history) >= 2 and s.scale_up_cooldown > 0 else 0.0
    ahead = s.predict_ahead + interval
    predicted = [predict(fitted, a, ahead) if covered else None for a in attributes]
    # A noisy record hides a trend the short fit does not trust (R^2 under TREND_FIT); over
    # LONG_FIT times the window (as far as the record kept for the noise reaches) the trend
    # has moved further against the same noise: that fit is extrapolated if it is trusted.
    long_window = min(LONG_FIT * window, fit_window(s.predict_ahead))
    longer = [h for h in history if newest.at - h.at <= long_window]
    long_trusted = [False] * 3
    if covered and long_window > window and longer[0].at <= newest.at - TREND_COVER * long_window:
        long_trusted = [trusted(longer, a) for a in attributes]
        predicted = [predict(longer, a, ahead) if not trusted(fitted, a) and lt else p
                     for p, a, lt in zip(predicted, attributes, long_trusted)]
    noisy = [h for h in history if newest.at - h.at <= NOISE_WINDOW]
    spread = [noise_spread(noisy, a) for a in attributes]
    short = list(predicted)
    # Neither fit trusts a trend: the slow fit over two hours of means may (a day's rise).
    if covered and history[0].at <= newest.at - TREND_COVER * SLOW_WINDOW:
        slow = [h for h in history if newest.at - h.at <= SLOW_WINDOW]
        predicted = [p if p is None or lt or trusted(fitted, a) else
                     first_known(slow_predict(slow, a, newest.at + ahead, sd), p)
                     for p, a, lt, sd in zip(predicted, attributes, long_trusted, spread)]
    turned = [damped_at_turn(longer, a, newest.at + ahead, sd) if covered else None
              for a, sd in zip(attributes, spread)]
    predicted = [p if p is None or d is None else min(p, d) for p, d in zip(predicted, turned)]
    learning = predicted[0] is None
    # the slow fit predicts more than the shorter fits: a slow rise is under way
    rising = predicted[0] is not None and short[0] is not None and predicted[0] > short[0]
    limit = max(s.max_count, hosts)

    def size(margin: float) -> tuple[int, str]:
        if learning:
            pc, pcpu, pmem = newest.containers, newest.cpu, newest.memory
        else:
            # all three are predicted once the record covers the window (same samples, same test)
            guess_c, guess_cpu, guess_mem = (0.0 if p is None else p for p in predicted)
            pc = max(newest.containers, guess_c + margin * spread[0])
            pcpu = max(newest.cpu, guess_cpu + margin * spread[1])
            pmem = max(newest.memory, guess_mem + margin * spread[2])
        by_containers = containers_hosts_needed(pc, s.containers_per_host, s.reserve, limit)
        by_cpu = hosts_for_load(pcpu, 1.0)
        by_mem = hosts_for_load(pmem, 1.0)
        return max(by_containers, by_cpu, by_mem), (f"{pc:.1f} containers ({by_containers} hosts), {pcpu:.2f} CPU "
                                                    f"({by_cpu}), {pmem:.2f} memory ({by_mem})")

    grow, grow_why = size(RISING_MARGIN if rising else GROW_MARGIN)
    # No trend yet (learning, nothing booting) or work waits and no fit trusts one (a step in
    # noise): grow at least as the utilization policy would (its thresholds are headroom). Not
    # on noise alone (steady: 1.8x idle), nor learning with hosts booting (900 s boot flapped).
    untrusted = pending and not trusted(fitted, "containers") and not long_trusted[0]
    if learning and not booting or not learning and untrusted:
        busy = max(hosts_for_load(newest.cpu, s.cpu_threshold), hosts_for_load(newest.memory, s.memory_threshold))
        if busy > grow:
            grow, grow_why = busy, f"{grow_why}; no trusted trend: utilization's {busy} hosts"
    shrink, shrink_why = size(SHRINK_MARGIN)
    if grow > hosts:
        want, sized = grow, grow_why
    elif shrink < hosts and (learning or not stepped_down(fitted)):
        want, sized = shrink, shrink_why
    else:
        want, sized = hosts, f"{grow_why} to grow, {shrink_why} to shrink"
    if learning:
        return Need("predictive", want, f"learning ({len(fitted)} samples, a trend needs {MIN_PREDICT_SAMPLES} over "
                                        f"{TREND_COVER * window:.0f}s): sized for now: {sized}")
    return Need("predictive", want, f"predicted in {ahead:g}s, noise {spread[0]:.1f} containers "
                                    f"(margins {RISING_MARGIN if rising else GROW_MARGIN:g}/{SHRINK_MARGIN:g} "
                                    f"standard deviations to grow/shrink{', slow rise' if rising else ''}): "
                                    f"{sized}")
