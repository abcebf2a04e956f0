"""Benchmark of chunk-wise WAM inference: ms per chunk, as ratios within one run.

CPU (default, ``tiny``): one context of 4 chunks per repeat, KV cache vs recomputing the whole
context at every DiT call, and the official 8-of-16 DiT schedule vs all 16 steps.

GPU (``--device cuda --config dreamzero_14b``): random bf16 weights built directly on the GPU
(meta-device init, no CPU copy), standard inference (UniPC 16 steps, 8 DiT evaluations, CFG 5 as
batched conditional/unconditional rows) and Flash (Euler 1 step, no CFG), peak GPU memory, with
``--compile`` to torch.compile the DiT forward (dynamic shapes: the cached context grows per chunk).

Usage:
    python bench/model_bench.py                                   # CPU ratios, tiny
    python bench/model_bench.py --latent 16x32                    # CPU, 128 tokens per latent frame
    python bench/model_bench.py --device cuda --config dreamzero_14b --dtype bfloat16 [--compile]
Figures measured go to bench/RESULTS.md together with the command.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass

import torch

from dreamzero_model import FLASH_SAMPLER, SamplerConfig, WamSession, build_dit, get_config


@dataclass(frozen=True)
class Case:
    name: str
    sampler: SamplerConfig
    use_kv_cache: bool = True


CPU_CASES = (
    Case("kv_cache+official_8_of_16", SamplerConfig()),
    Case("recompute+official_8_of_16", SamplerConfig(), use_kv_cache=False),
    Case("kv_cache+all_16", SamplerConfig(cache_schedule="all")),
    Case("kv_cache+flash_1_step", FLASH_SAMPLER),
)
GPU_CASES = (
    Case("standard(unipc16,8 evals,cfg5)", SamplerConfig()),
    Case("flash(euler1,no cfg)", FLASH_SAMPLER),
)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_case(model: torch.nn.Module, case: Case, repeats: int, device: torch.device, dtype: torch.dtype) -> dict:
    """Median ms per chunk over ``repeats`` contexts of 4 chunks (first context is warm-up)."""
    config = model.config
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    text, negative = randn(1, config.text_len, config.text_dim), randn(1, config.text_len, config.text_dim)
    image = randn(1, config.num_image_tokens, config.clip_dim)
    first = randn(1, config.out_dim, 1, config.latent_height, config.latent_width)
    observed = randn(1, config.out_dim, config.num_frame_per_block, config.latent_height, config.latent_width)
    state = randn(1, config.max_state_dim)
    session = WamSession(model, case.sampler, use_kv_cache=case.use_kv_cache)
    per_chunk, reset_ms = [], []
    for repeat in range(repeats + 1):
        _synchronize(device)
        started = time.perf_counter()
        session.reset(text, image, first, negative_text_context=negative)
        _synchronize(device)
        reset_time = time.perf_counter() - started
        for chunk in range(config.max_chunk_size):
            started = time.perf_counter()
            session.step(None if chunk == 0 else observed, state)
            _synchronize(device)
            if repeat:  # repeat 0 warms up kernels and compilation
                per_chunk.append((time.perf_counter() - started) * 1e3)
        if repeat:
            reset_ms.append(reset_time * 1e3)
    return {"case": case.name, "ms_per_chunk": statistics.median(per_chunk), "ms_reset": statistics.median(reset_ms),
            "chunks_timed": len(per_chunk)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tiny", help="model config (tiny, dreamzero_14b, dreamzero_5b)")
    parser.add_argument("--latent", default=None, metavar="HxW",
                        help="override the latent grid, e.g. 16x32 (more tokens per frame on CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=5, help="timed contexts of 4 chunks per case")
    parser.add_argument("--compile", action="store_true", help="torch.compile the DiT forward")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    overrides = {}
    if args.latent:
        height, width = (int(v) for v in args.latent.lower().split("x"))
        overrides = {"latent_height": height, "latent_width": width}
    config = get_config(args.config, **overrides)
    torch.manual_seed(0)
    model = build_dit(config, device=device, dtype=dtype).eval()
    if args.compile:
        model.compile(dynamic=True)
    cases = GPU_CASES if device.type == "cuda" else CPU_CASES
    results = []
    for case in cases:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        result = time_case(model, case, args.repeats, device, dtype)
        if device.type == "cuda":
            result["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        results.append(result)
    base = results[0]["ms_per_chunk"]
    for result in results:
        result["ratio_to_first"] = result["ms_per_chunk"] / base
    header = {"config": config.name, "latent": f"{config.latent_height}x{config.latent_width}",
              "tokens_per_frame": config.frame_seqlen, "device": str(device), "dtype": args.dtype, "compile": args.compile,
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    if args.json:
        print(json.dumps({"setup": header, "results": results}, indent=2))
        return
    print(" ".join(f"{k}={v}" for k, v in header.items()))
    for r in results:
        memory = f"  peak {r['peak_gib']:.1f} GiB" if "peak_gib" in r else ""
        print(f"{r['case']:<32} {r['ms_per_chunk']:10.1f} ms/chunk  x{r['ratio_to_first']:.2f}  "
              f"reset {r['ms_reset']:8.1f} ms{memory}")


if __name__ == "__main__":
    main()
