"""CFG parallelism (facts §3.2): 2 gloo CPU processes, one CFG branch each, give the one-process chunks.

Each scenario runs in 2 processes forked from this one (as DataLoader workers are), so they inherit
the imports: a fresh Python spends ~11 s of CPU importing torch, transformers and the model, which
on CI's 2 shared cores would take most of the time budget. Each process joins a gloo group through
the torchrun environment variables (a free port on 127.0.0.1), writes what it computed to
``rank<r>.pt``, and the tests compare it with the same calls made here in one process.
"""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing

from checkpoint_fixtures import synthetic_metadata
from dreamzero_model import SamplerConfig, WamSession
from dreamzero_model.policy import WamPolicy
from dreamzero_model.serving.distributed import DistributedEngine
from dreamzero_model.serving.engine import Engine, ModelCall

ROBOT = synthetic_metadata("oxe_droid")
SAMPLER = SamplerConfig()  # the official sampler: UniPC, 16 steps, DiT at 8 of them, cfg_scale 5 (facts §2.7-2.9)
PROMPT = "Put the cup in the sink."
CALLS = 3  # a context's first call and 2 continuations
SESSION_BATCH = 2  # robots per session in the session-level run
# Split vs one process, float32 on CPU: measured <= 1.7e-6 on values up to 3.6 (about 7 ulps). Not
# bitwise: the one-process DiT multiplies 2B rows where each rank multiplies B, and CPU GEMM kernels
# for few rows sum in another order (first seen at 1e-7 in the state encoder); CFG scale 5 and 8 DiT
# calls amplify it. A wrong branch or formula moves values by O(1).
ATOL = 1e-5
TIMEOUT_S = 240.0  # both processes together, on a loaded 2-core machine


def _policy(cfg_group: dist.ProcessGroup | None = None) -> WamPolicy:
    """The tiny policy with every weight random (the zero-initialised heads would hide video errors)."""
    tiny = WamPolicy.random_tiny(ROBOT, seed=0, sampler=SAMPLER)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in tiny.model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return WamPolicy(tiny.model, ROBOT, tiny.tokenizer, SAMPLER, decode_video=False, cfg_group=cfg_group)


def _observations() -> list[tuple[np.ndarray, np.ndarray]]:
    """(video uint8[T, 32, 64, 3], state float64[8]) of CALLS calls: 1 frame, then the 9 of the chunk executed."""
    rng = np.random.default_rng(2)
    return [(rng.integers(0, 256, (1 if i == 0 else 9, 32, 64, 3), dtype=np.uint8),
             rng.uniform(-1.0, 1.0, ROBOT.state_dim)) for i in range(CALLS)]


def _policy_calls(policy: WamPolicy) -> list[np.ndarray]:
    """De-normalised actions of the CALLS observations (the predicted latents: :func:`_session_calls`)."""
    policy.reset(PROMPT)
    return [policy.infer(video, state).actions for video, state in _observations()]


def _session_calls(session: WamSession) -> dict[str, list[torch.Tensor]]:
    """Normalized actions and predicted latents of CALLS steps of SESSION_BATCH robots on random features."""
    config, g = session.config, torch.Generator().manual_seed(3)
    latent = (config.out_dim, 1, config.latent_height, config.latent_width)
    session.reset(torch.randn(SESSION_BATCH, config.text_len, config.text_dim, generator=g),
                  torch.randn(SESSION_BATCH, config.num_image_tokens, config.clip_dim, generator=g),
                  torch.randn(SESSION_BATCH, *latent, generator=g),
                  negative_text_context=torch.randn(1, config.text_len, config.text_dim, generator=g))
    results = []
    for i in range(CALLS):
        observed = None if i == 0 else torch.randn(SESSION_BATCH, config.out_dim, 2, *latent[2:], generator=g)
        results.append(session.step(observed, torch.randn(SESSION_BATCH, config.max_state_dim, generator=g)))
    return {"actions": [r.actions for r in results], "latents": [r.latents for r in results]}


def _engine_calls() -> list[ModelCall]:
    """Two sessions' first calls, then their continuations, interleaved (rank 0 runs each pair as one batch)."""
    observations = _observations()
    return [ModelCall(key, ROBOT.tag, *observations[i], PROMPT) for i in range(2) for key in ("a", "b")]


# ------------------------------------------------------------------------------- the 2 processes
def _split_scenario() -> dict:
    """One rank: session- and policy-level calls with the world as CFG group, its branch, cache rows, guards."""
    dist.init_process_group("gloo")
    policy = _policy(cfg_group=dist.group.WORLD)
    session = WamSession(policy.model.action_head.model, SAMPLER, cfg_group=dist.group.WORLD)
    result = {"session": _session_calls(session), "policy": _policy_calls(policy), "branch": session.branch,
              "cache_rows": session._cache.k.shape[1]}
    singles = [dist.new_group([rank]) for rank in range(2)]  # every rank creates every group
    guards = []
    for sampler, group in ((SAMPLER, singles[dist.get_rank()]), (SamplerConfig(cfg_scale=1.0), dist.group.WORLD)):
        try:
            WamSession(policy.model.action_head.model, sampler, cfg_group=group)
            guards.append("accepted")
        except ValueError as error:
            guards.append(str(error))
    dist.barrier()  # rank 0 hosts the store: it must not leave before rank 1 has made its groups
    dist.destroy_process_group()
    return {**result, "guards": guards}


def _engine_scenario(checkpoint: Path) -> dict:
    """Rank 0 runs the calls in batches of 2 (aligned: denoised together on both ranks), drops session a, sends a
    call the policy refuses, stops; rank 1 serves."""
    engine = DistributedEngine.from_checkpoint(checkpoint, sampler=SAMPLER, progress=False)
    result = {"kv_bytes": engine.kv_cache_bytes_per_session()}
    if not engine.serves_socket:
        return {**result, "calls": engine.serve_forever(), "live": engine.live_contexts}
    calls = _engine_calls()
    predictions = [p for start in range(0, len(calls), 2)
                   for p in engine.complete([engine.prepare(call) for call in calls[start:start + 2]])]
    actions, batch_sizes = [p.actions for p in predictions], [p.batch_size for p in predictions]
    engine.drop("a")
    with pytest.raises(ValueError, match="state must be 8 finite values"):
        engine.run(ModelCall("b", ROBOT.tag, _observations()[2][0], np.zeros(3), PROMPT))
    live = engine.live_contexts
    engine.stop()
    return {**result, "actions": actions, "batch_sizes": batch_sizes, "live": live}


def _process(rank: int, port: int, output: Path, scenario: Callable[..., dict], args: tuple) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.save(scenario(*args), output / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _two_processes(output: Path, scenario: Callable[..., dict], *args) -> list[dict]:
    """``scenario(*args)`` on ranks 0 and 1; what each returned (index = rank)."""
    context = torch.multiprocessing.start_processes(_process, (_free_port(), output, scenario, args), nprocs=2,
                                                    join=False, start_method="fork")
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1.0):  # raises with the child's traceback when one fails
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the 2 processes did not finish within {TIMEOUT_S} s")
    return [torch.load(output / f"rank{rank}.pt", weights_only=False) for rank in range(2)]


# ------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def one_process() -> dict:
    """The same calls in this process, both branches as batch rows."""
    policy = _policy()
    return {"session": _session_calls(WamSession(policy.model.action_head.model, SAMPLER)),
            "policy": _policy_calls(policy)}


@pytest.fixture(scope="module")
def split(one_process, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """What each rank computed (index = rank); forked after ``one_process`` has imported everything."""
    return _two_processes(tmp_path_factory.mktemp("split"), _split_scenario)


def test_rank_0_computes_the_conditional_branch_and_rank_1_the_unconditional_with_half_the_cache(split) -> None:
    assert [r["branch"] for r in split] == ["conditional", "unconditional"]
    assert [r["cache_rows"] for r in split] == [SESSION_BATCH, SESSION_BATCH]  # one process: 2 x SESSION_BATCH


def test_both_ranks_give_identical_chunks(split) -> None:
    for key in ("actions", "latents"):
        for call, (rank0, rank1) in enumerate(zip(split[0]["session"][key], split[1]["session"][key])):
            assert torch.equal(rank0, rank1), f"session call {call} {key}"
    for call, (rank0, rank1) in enumerate(zip(split[0]["policy"], split[1]["policy"])):
        assert np.array_equal(rank0, rank1), f"policy call {call}"


def test_split_branches_give_the_one_process_actions_and_latents(split, one_process) -> None:
    for key in ("actions", "latents"):
        for call, (ours, reference) in enumerate(zip(split[0]["session"][key], one_process["session"][key])):
            assert torch.allclose(ours, reference, rtol=0.0, atol=ATOL), f"call {call} {key}"
    assert one_process["session"]["latents"][1].abs().max() > 0.1, "the test must exercise a non-trivial video"


def test_split_policy_gives_the_one_process_chunks(split, one_process) -> None:
    for call, (ours, reference) in enumerate(zip(split[0]["policy"], one_process["policy"])):
        assert np.allclose(ours, reference, rtol=0.0, atol=ATOL), f"call {call}"


def test_a_group_of_one_rank_or_no_guidance_is_refused_with_the_reason(split) -> None:
    for result in split:
        size_error, scale_error = result["guards"]
        assert "cfg_group must hold 2 ranks" in size_error and "got size 1" in size_error
        assert "cfg_scale is 1.0" in scale_error


def test_distributed_engine_batches_two_sessions_as_one_process_runs_them_and_rank_1_mirrors_until_stopped(
        tmp_path) -> None:
    _policy().save_pretrained(tmp_path / "checkpoint")
    reference = Engine.from_checkpoint(tmp_path / "checkpoint", sampler=SAMPLER, progress=False)  # before the fork:
    ranks = _two_processes(tmp_path, _engine_scenario, tmp_path / "checkpoint")  # the loaders are imported once
    for call, ours in zip(_engine_calls(), ranks[0]["actions"]):
        assert np.allclose(ours, reference.run(call).actions, rtol=0.0, atol=ATOL), call.session_key
    assert ranks[0]["batch_sizes"] == [2] * len(_engine_calls())
    assert ranks[1]["calls"] == len(_engine_calls()) + 1  # the refused call was made (and refused) there too
    assert [r["live"] for r in ranks] == [1, 1]  # session a dropped on both ranks
    assert [r["kv_bytes"] for r in ranks] == [reference.kv_cache_bytes_per_session() // 2] * 2
