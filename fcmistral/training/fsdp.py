"""Components of the FSDP2 full fine-tune (FSDP/train.py): process group, sharding, optimizer
groups, token-weighted losses, and checkpoints (sharded for resuming, full HF folders for use)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from fcmistral.data.labels import IGNORE_INDEX
from fcmistral.errors import UserError
from fcmistral.modeling import load_model
from fcmistral.outputs import written_aside


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistEnv:
    """Join the process group torchrun set up: global rank from RANK (multi-node safe), NCCL on
    GPUs, gloo on CPU."""
    # torch's own state-dict helpers call an API torch deprecated (twice per rank and load);
    # users cannot act on it.
    warnings.filterwarnings("ignore", message=".*_get_pg_default_device.*", category=UserWarning)
    warnings.filterwarnings("ignore", message="Multiple backends are registered with this ProcessGroup",
                            category=UserWarning)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")  # a plain `python FSDP/train.py` is one process
        os.environ.setdefault("MASTER_PORT", "29511")
        dist.init_process_group(backend, rank=rank, world_size=world)
    return DistEnv(rank, world, local_rank, device)


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if dist.is_initialized():
        dist.barrier()


def shutdown(code: int = 0) -> None:
    """End cleanly: gloo can abort at interpreter exit after a successful run (rc 1 from torchrun)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def shard(model: torch.nn.Module, compute_dtype: torch.dtype = torch.float32) -> None:
    """FSDP2: one unit per decoder layer (the classes HF lists in ``_no_split_modules``) + the root.

    A compute dtype below fp32 is mixed precision: parameters cast to it for compute, fp32
    gradient reduction, and the sharded fp32 parameters the optimizer updates are the master weights.
    """
    policy = MixedPrecisionPolicy() if compute_dtype == torch.float32 \
        else MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    layer_classes = tuple(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    if not layers:
        raise ValueError(f"no decoder layer of types {layer_classes} found to shard")
    for layer in layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def load_sharded(model_path: str, tokenizer, env: DistEnv, compute_dtype: torch.dtype,
                 activation_checkpointing: bool) -> tuple[torch.nn.Module, set[str]]:
    """The fp32 model sharded over the ranks, its weights read from the checkpoint by rank 0 only;
    also the names of the parameters without weight decay (see no_decay_names).

    If every rank loaded the checkpoint, each would hold a full fp32 copy in host memory (28 GB for
    Mistral-7B, times the GPUs of a node). Instead the other ranks build the model with parameters
    on the meta device (buffers such as the rotary frequencies are computed as usual) from rank 0's
    config, every rank shards it, and rank 0 broadcasts its weights into the shards one tensor at a
    time. Models with tied embeddings are loaded by every rank (assigning shards one key at a time
    would untie them), and a single process just shards the model it loaded.
    """
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    loaded, message = None, [None]
    if env.is_main:
        try:
            loaded = load_model(model_path, load_in_4bit=False, tokenizer=tokenizer, dtype=torch.float32)
            message = [loaded.config]
        except UserError as err:  # told to every rank, so that none waits forever for the weights
            message = [str(err)]
    dist.broadcast_object_list(message, src=0)
    if isinstance(message[0], str):
        raise UserError(message[0])
    config = message[0]
    full_state = None
    if config.tie_word_embeddings or env.world_size == 1:
        model = loaded or load_model(model_path, load_in_4bit=False, tokenizer=tokenizer, dtype=torch.float32)
    else:
        with init_empty_weights():  # parameters on meta, buffers real
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        full_state = loaded.state_dict() if loaded is not None else {}
    model.config.use_cache = False
    if activation_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    no_decay = no_decay_names(model)
    shard(model, compute_dtype)
    if full_state is not None:
        set_model_state_dict(model, full_state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        del full_state
    model.to(env.device)
    return model, no_decay


def no_decay_names(model: torch.nn.Module) -> set[str]:
    """Parameters without weight decay: biases and norm weights (every parameter with ndim < 2).

    Decided from shapes before sharding: after it every parameter is a flat DTensor shard.
    """
    return {name for name, p in model.named_parameters() if p.ndim < 2}


def optimizer_groups(model: torch.nn.Module, no_decay: set[str], weight_decay: float) -> list[dict[str, Any]]:
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in params if n not in no_decay], "weight_decay": weight_decay},
        {"params": [p for n, p in params if n in no_decay], "weight_decay": 0.0},
    ]


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A collated batch on ``device`` (packed batches also carry plain values, such as use_cache)."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def supervised_tokens(batches: Iterable[dict[str, torch.Tensor]]) -> int:
    """Tokens that carry loss (labels shifted by one, as the model's loss shifts them)."""
    return sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)


def all_reduce_sum(value: float, device: torch.device) -> float:
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item())


@torch.no_grad()
def evaluate(model, batches: list[dict[str, torch.Tensor]], env: DistEnv) -> float:
    """Dev loss weighted by tokens over all ranks: sum of token losses / supervised tokens.

    Every rank must run the same number of forwards (FSDP gathers inside them): the caller gives
    each rank the same number of batches, padding with batches whose labels are all -100.
    """
    model.eval()
    loss_sum = 0.0
    for batch in batches:
        loss_sum += float(model(**to_device(batch, env.device), num_items_in_batch=1).loss)  # num_items 1: the sum
    model.train()
    tokens = all_reduce_sum(supervised_tokens(batches), env.device)
    return all_reduce_sum(loss_sum, env.device) / max(tokens, 1)


def save_hf_folder(model, tokenizer, path: Path, dtype: torch.dtype, env: DistEnv) -> None:
    """A full Hugging Face model folder (safetensors + tokenizer) written by rank 0."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)  # collective: every rank takes part
    if env.is_main:
        with written_aside(path) as staging:  # the previous best model stays whole until replaced
            model.save_pretrained(staging, state_dict={k: v.to(dtype) for k, v in state.items()})
            tokenizer.save_pretrained(staging)
    dist.barrier()


def _rng_state() -> dict[str, Any]:
    # numpy's state as plain lists and numbers: the file is read back with torch.load(weights_only=True),
    # which unpickles tensors and containers only (a checkpoint folder from elsewhere runs no code).
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [name, keys.tolist(), position, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete sharded checkpoint under ``root`` (None when there is none). The pointer
    names a ``step-N`` folder of ``root`` itself; anything else (a path elsewhere, ``..``) is refused."""
    pointer = root / "latest.json"
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["path"]
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{pointer} is not a checkpoint pointer ({err}): remove it or the output folder") from None
    if not isinstance(name, str) or not re.fullmatch(r"step-\d+", name) or not (root / name).is_dir():
        raise UserError(f"{pointer} names {name!r}, which is not a step-N folder beside it")
    return root / name


def save_checkpoint(root: Path, model, optimizer, trainer_state: dict[str, Any], env: DistEnv) -> None:
    """A sharded (distributed) checkpoint: model and optimizer shards, plus per rank the
    scheduler, position and RNG state, in ``root/step-N``. ``root/latest.json`` is replaced
    atomically once the folder is complete and only then are older folders deleted, so a kill at
    any moment leaves a complete checkpoint behind."""
    name = f"step-{trainer_state['step']}"
    path = root / name
    if env.is_main:
        shutil.rmtree(path, ignore_errors=True)
    dist.barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(path))
    torch.save({**trainer_state, "rng": _rng_state()}, path / f"trainer_state_rank{env.rank}.pt")
    dist.barrier()
    if env.is_main:
        staging = root / "latest.json.tmp"
        staging.write_text(json.dumps({"step": trainer_state["step"], "path": name}))
        os.replace(staging, root / "latest.json")
        for old in root.glob("step-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def load_checkpoint(path: Path, model, optimizer, env: DistEnv) -> dict[str, Any]:
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    trainer_state = torch.load(path / f"trainer_state_rank{env.rank}.pt", weights_only=True)
    _set_rng_state(trainer_state.pop("rng"))
    return trainer_state
