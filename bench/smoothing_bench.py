"""Choose the Savitzky-Golay window and order of ``smooth_chunk`` by measurement (facts §4: unpublished).

Synthetic chunks, because no recorded DreamZero chunks are in the repository:

* clean motion per dimension: a sum of 3 sinusoids, frequencies 0.1-0.8 Hz, amplitudes 0.03-0.15 rad
  (arm-like motion, typical speed about 0.3 rad/s: an ASSUMPTION, not measured on a robot);
* consecutive chunks of H = 24 steps (facts §1.3) at 15 Hz (DROID) and 30 Hz (AgiBot G1, YAM),
  executed back to back; each chunk is the clean motion plus its own constant offset (boundary jumps
  between chunks, sigma ``--jump``) plus white noise per step (sigma ``--noise``);
* each chunk is smoothed with the last ``history_steps`` executed commands as history, as the adapter
  does.

Reported per (window, polyorder), upsample 2:

* jerk = third difference of the executed sequence (rad per step^3), RMS over all dimensions,
  "within" chunks (all 4 samples in one chunk) and "boundary" (straddling a chunk switch), and the
  factor by which smoothing lowers it (raw RMS / smoothed RMS);
* lag (steps) of the smoothed sequence vs the clean reference (clean + offsets): the shift minimising
  the mean squared difference, refined by a parabola through the best three integer shifts;
* step lag (steps): how much later a noise-free unit step inside a chunk reaches 90 % after smoothing
  than before (the filter is zero phase, so it crosses 50 % on time and starts rising early: the
  delay that matters is reaching the new target); rise (steps): its 10-90 % rise time after smoothing
  (the raw step, linearly interpolated, rises in 0.8 steps);
* distortion (rad): RMS of smooth(clean) - clean, no noise and no offsets: how much real motion the
  filter removes;
* RMSE (rad): smoothed noisy sequence vs the clean reference (raw: about the noise sigma).

Selection rule (printed with the choice): among windows/orders whose |lag| <= 1 step at both rates
and whose step lag is <= 1 step and whose distortion at 15 Hz (the coarser rate, where a window spans the
most time) is at most ``--max-distortion`` (default 20 % of the noise sigma: the filter must remove
far less motion than noise), take the one with the largest within-chunk jerk reduction at 15 Hz.

Usage:
    PYTHONPATH=embodiments .venv/bin/python bench/smoothing_bench.py [--noise 0.005] [--jump 0.02] [--chunks 60]
Results go to bench/RESULTS.md ("Smoothing (bench/smoothing_bench.py)") with the command.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from dreamzero_embodiments.smoothing import SmoothingConfig, smooth_chunk

HORIZON = 24  # actions per chunk, facts §1.3
RATES_HZ = (15.0, 30.0)  # DROID; AgiBot G1 and YAM (facts §1.4-1.6)
DIMS = 8  # DROID's action width (facts §1.4); dimensions are independent
UPSAMPLE = 2  # facts §4 (project page: 2x upsampling)
WINDOWS = tuple(range(5, 43, 2))  # upsampled samples: spans 2..20 action steps
POLYORDERS = (1, 2, 3, 4, 5)
SEED = 20261122


@dataclass(frozen=True)
class Metrics:
    jerk_within: float
    jerk_boundary: float
    lag: float
    step_lag: float
    rise: float
    distortion: float
    rmse: float


def clean_motion(rate_hz: float, steps: int, rng: np.random.Generator) -> np.ndarray:
    """float64[steps, DIMS] rad: a sum of 3 sinusoids per dimension (see module docstring)."""
    t = np.arange(steps)[:, None, None] / rate_hz  # steps, 1, 1
    freq = rng.uniform(0.1, 0.8, size=(1, 3, DIMS))  # Hz, assumed arm-like
    amp = rng.uniform(0.03, 0.15, size=(1, 3, DIMS))  # rad, assumed arm-like
    phase = rng.uniform(0, 2 * np.pi, size=(1, 3, DIMS))
    return (amp * np.sin(2 * np.pi * freq * t + phase)).sum(axis=1)


def execute(chunks: list[np.ndarray], config: SmoothingConfig | None) -> np.ndarray:
    """Chunks executed back to back, each smoothed with the executed history (None: raw)."""
    executed: list[np.ndarray] = []
    for chunk in chunks:
        if config is None:
            executed.append(chunk)
            continue
        k = config.history_steps
        history = np.concatenate(executed)[-k:] if executed and k else None
        executed.append(smooth_chunk(chunk, config, history=history))
    return np.concatenate(executed)


def jerk_rms(sequence: np.ndarray) -> tuple[float, float]:
    """RMS third difference within chunks and across chunk switches (rad / step^3)."""
    jerk = np.diff(sequence, n=3, axis=0)
    chunk_of = np.arange(len(sequence)) // HORIZON
    within = chunk_of[:-3] == chunk_of[3:]
    return float(np.sqrt(np.mean(jerk[within] ** 2))), float(np.sqrt(np.mean(jerk[~within] ** 2)))


def lag_steps(signal: np.ndarray, reference: np.ndarray, max_shift: int = 4) -> float:
    """Shift (steps, > 0 = ``signal`` behind) minimising the mean squared difference, parabola-refined."""
    shifts = np.arange(-max_shift, max_shift + 1)
    core = slice(max_shift, len(signal) - max_shift)
    errors = np.array([np.mean((signal[core] - np.roll(reference, s, axis=0)[core]) ** 2) for s in shifts])
    best = int(np.argmin(errors))
    if 0 < best < len(shifts) - 1:
        left, mid, right = errors[best - 1:best + 2]
        curvature = left - 2 * mid + right
        offset = 0.5 * (left - right) / curvature if curvature > 0 else 0.0
        return float(shifts[best] + offset)
    return float(shifts[best])


def crossing(sequence: np.ndarray, level: float) -> float:
    """First fractional index where a rising 1-D sequence reaches ``level`` (linear interpolation)."""
    above = np.nonzero(sequence >= level)[0][0]
    lower, upper = sequence[above - 1], sequence[above]
    return float(above - 1 + (level - lower) / (upper - lower))


def step_response(config: SmoothingConfig) -> tuple[float, float]:
    """(90 % delay, 10-90 % rise) in steps of a unit step at step 12 of a chunk, history of zeros."""
    chunk = np.zeros((HORIZON, 1))
    chunk[HORIZON // 2:] = 1.0
    history = np.zeros((config.history_steps, 1))
    smoothed = smooth_chunk(chunk, config, history=history)[:, 0]
    raw_90 = crossing(chunk[:, 0], 0.9)  # the raw step, linearly interpolated: 11.9
    # Savitzky-Golay rings (over/undershoot) for orders >= 2; the first crossings count.
    return crossing(smoothed, 0.9) - raw_90, crossing(smoothed, 0.9) - crossing(smoothed, 0.1)


def measure(config: SmoothingConfig | None, rate_hz: float, noise: float, jump: float, n_chunks: int) -> Metrics:
    rng = np.random.default_rng(SEED)  # same motion, noise and jumps for every config
    clean = clean_motion(rate_hz, n_chunks * HORIZON, rng)
    offsets = np.repeat(rng.normal(0.0, jump, size=(n_chunks, DIMS)), HORIZON, axis=0)
    noisy = clean + offsets + rng.normal(0.0, noise, size=clean.shape)
    reference = clean + offsets
    split = lambda x: [x[i:i + HORIZON] for i in range(0, len(x), HORIZON)]  # noqa: E731
    executed = execute(split(noisy), config)
    within, boundary = jerk_rms(executed)
    delay, rise = step_response(config) if config is not None else (0.0, 0.8)
    distortion = float(np.sqrt(np.mean((execute(split(clean), config) - clean) ** 2)))
    return Metrics(jerk_within=within, jerk_boundary=boundary, lag=lag_steps(executed, reference),
                   step_lag=delay, rise=rise, distortion=distortion,
                   rmse=float(np.sqrt(np.mean((executed - reference) ** 2))))


def time_per_chunk_us(config: SmoothingConfig, dims: int, repeats: int = 2000) -> float:
    rng = np.random.default_rng(0)
    chunk, history = rng.normal(size=(HORIZON, dims)), rng.normal(size=(config.history_steps, dims))
    smooth_chunk(chunk, config, history=history)
    start = time.perf_counter()
    for _ in range(repeats):
        smooth_chunk(chunk, config, history=history)
    return (time.perf_counter() - start) / repeats * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=0.005, help="white noise sigma per step, rad (assumed)")
    parser.add_argument("--jump", type=float, default=0.02, help="per-chunk offset sigma, rad (assumed)")
    parser.add_argument("--chunks", type=int, default=60, help="consecutive chunks per rate")
    parser.add_argument("--max-distortion", type=float, default=None,
                        help="distortion bound at 15 Hz, rad (default 0.2 x noise)")
    parser.add_argument("--all", action="store_true", help="print every window/order, not only the admissible ones")
    args = parser.parse_args()
    max_distortion = 0.2 * args.noise if args.max_distortion is None else args.max_distortion

    raw = {rate: measure(None, rate, args.noise, args.jump, args.chunks) for rate in RATES_HZ}
    print(f"noise {args.noise} rad, jump {args.jump} rad, {args.chunks} chunks x {HORIZON} steps, upsample {UPSAMPLE}")
    for rate, m in raw.items():
        print(f"raw @ {rate:.0f} Hz: jerk within {m.jerk_within:.5f}, boundary {m.jerk_boundary:.5f} rad/step^3, "
              f"RMSE {m.rmse:.5f} rad")
    header = ("window order | step lag  rise | 15 Hz: jerk within /  boundary /  lag  distortion  RMSE | "
              "30 Hz: jerk within /  boundary /  lag  distortion  RMSE | ok")
    print(header)
    best: tuple[float, SmoothingConfig] | None = None
    for window in WINDOWS:
        for order in (p for p in POLYORDERS if p < window):
            config = SmoothingConfig(upsample=UPSAMPLE, window=window, polyorder=order)
            m = {rate: measure(config, rate, args.noise, args.jump, args.chunks) for rate in RATES_HZ}
            ok = (all(abs(m[r].lag) <= 1 for r in RATES_HZ) and m[15.0].step_lag <= 1
                  and m[15.0].distortion <= max_distortion)
            gain = {r: (raw[r].jerk_within / m[r].jerk_within, raw[r].jerk_boundary / m[r].jerk_boundary)
                    for r in RATES_HZ}
            if ok or args.all:
                a, b = m[15.0], m[30.0]
                print(f"{window:6d} {order:5d} | {a.step_lag:8.2f}  {a.rise:4.2f} | {gain[15.0][0]:19.1f}  "
                      f"{gain[15.0][1]:10.1f}  {a.lag:+.2f}  {a.distortion:10.5f}  {a.rmse:.5f} | "
                      f"{gain[30.0][0]:19.1f}  {gain[30.0][1]:10.1f}  {b.lag:+.2f}  {b.distortion:10.5f}  "
                      f"{b.rmse:.5f} | {'yes' if ok else 'no'}")
            if ok and (best is None or gain[15.0][0] > best[0]):
                best = (gain[15.0][0], config)
    if best is None:
        print("no window/order meets the rule")
        return
    config = best[1]
    print(f"\nchosen (largest 15 Hz within-chunk jerk reduction with |lag| <= 1, step lag <= 1, "
          f"distortion <= {max_distortion:.4f} rad): window {config.window}, polyorder {config.polyorder}, "
          f"history_steps {config.history_steps}")
    for noise in (args.noise / 2, args.noise, args.noise * 2):
        for rate in RATES_HZ:
            r, m = measure(None, rate, noise, args.jump, args.chunks), measure(config, rate, noise, args.jump,
                                                                                 args.chunks)
            print(f"  noise {noise:.4f} @ {rate:.0f} Hz: jerk within / {r.jerk_within / m.jerk_within:.1f}, "
                  f"boundary / {r.jerk_boundary / m.jerk_boundary:.1f}, lag {m.lag:+.2f}, RMSE {r.rmse:.5f} -> "
                  f"{m.rmse:.5f}")
    no_history = SmoothingConfig(upsample=UPSAMPLE, window=config.window, polyorder=config.polyorder)
    rng = np.random.default_rng(SEED)
    chunks = [rng.normal(size=(HORIZON, DIMS)) * args.noise for _ in range(args.chunks)]
    for chunk, offset in zip(chunks, rng.normal(0.0, args.jump, size=(args.chunks, DIMS))):
        chunk += offset
    executed_without = np.concatenate([smooth_chunk(c, no_history) for c in chunks])
    print(f"  boundary jerk with history {jerk_rms(execute(chunks, config))[1]:.5f} vs without "
          f"{jerk_rms(executed_without)[1]:.5f} rad/step^3 (noise + jumps only)")
    for dims in (DIMS, 22):
        print(f"  time per chunk, D={dims}: {time_per_chunk_us(config, dims):.0f} us")


if __name__ == "__main__":
    main()
