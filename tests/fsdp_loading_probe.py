"""``torchrun`` entry for tests/model/test_train_distributed.py: ``dreamzero train`` with probes of FSDP loading.

``python -m torch.distributed.run ... tests/fsdp_loading_probe.py REPORT_DIR RUNS_JSON`` runs the real
command line (:func:`dreamzero_model.training.cli.main`) in every rank, once per argument list of
RUNS_JSON (a JSON list of lists; one process start and one process group serve several runs). The
probes wrap, never replace, three functions and record run i into ``REPORT_DIR/<i>/rank_<r>.json``:

* ``read``: the tensor names this rank read from safetensors files (``TensorReader.get``);
* ``devices_before_sharding``: the device types of the DiT's parameters when ``wrap`` is entered;
* ``shards``: per DiT parameter, [local shard elements, full elements, rows] after ``load_full_state``;
and rank 0 writes ``REPORT_DIR/<i>/loaded.safetensors``: the full state dict gathered right after loading.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from dreamzero_model import checkpoint
from dreamzero_model.training import cli, distributed, trainer


def probed_run(train_args: list[str], report_dir: Path) -> int:
    """One ``dreamzero train`` under the probes (module docstring)."""
    record: dict = {"read": [], "devices_before_sharding": [], "shards": {}}
    read, wrap, load_full_state = checkpoint.TensorReader.get, trainer.wrap, trainer.load_full_state

    def probed_read(self, name):
        record["read"].append(name)
        return read(self, name)

    def probed_wrap(module, parallel, info):
        record["devices_before_sharding"] = sorted({p.device.type for p in module.dit.parameters()})
        return wrap(module, parallel, info)

    def probed_load(module, state, info):
        load_full_state(module, state, info)
        record["shards"] = {name: [p.to_local().numel(), p.numel(), p.shape[0]]
                            for name, p in module.dit.named_parameters()}
        full = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if info.is_main:
            save_file({name: tensor.contiguous() for name, tensor in full.items()},
                      str(report_dir / "loaded.safetensors"))

    checkpoint.TensorReader.get = probed_read
    trainer.wrap, trainer.load_full_state = probed_wrap, probed_load
    try:
        status = cli.main(train_args)
    finally:
        checkpoint.TensorReader.get = read
        trainer.wrap, trainer.load_full_state = wrap, load_full_state
    (report_dir / f"rank_{os.environ['RANK']}.json").write_text(json.dumps(record))
    return status


def main(argv: list[str]) -> int:
    report_dir, runs = Path(argv[0]), json.loads(argv[1])
    close = distributed.close_processes
    for number, train_args in enumerate(runs):
        folder = report_dir / str(number)
        folder.mkdir(parents=True, exist_ok=True)
        # The process group outlives all runs but the last: creating it again under torchrun hangs.
        distributed.close_processes = close if number == len(runs) - 1 else (lambda: None)
        status = probed_run(train_args, folder)
        if status:
            close()
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
