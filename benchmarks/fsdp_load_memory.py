"""FSDP model loading: host memory of each rank when every rank reads the checkpoint (before)
against rank 0 reading it and broadcasting into meta-initialised shards (FSDP/train.py now).

    python benchmarks/fsdp_load_memory.py            # a 570M-parameter random Mistral (2.3 GB fp32), 2 ranks
    python benchmarks/fsdp_load_memory.py --tiny     # a smoke run

Each way runs under torchrun on CPU (gloo) and reports every rank's peak resident memory (VmHWM)
once its shard is loaded. On GPUs the shards live in GPU memory, so the host then holds one full
copy on rank 0 instead of one per rank.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES = {"default": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 12},
         "tiny": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2}}


def build_model(folder: Path, size: dict) -> int:
    """A random Mistral of the given size with the tiny model's tokenizer; returns its parameters."""
    from transformers import AutoModelForCausalLM, MistralConfig

    from fcmistral.demo.tiny import build_tiny_model

    tokenizer_dir = build_tiny_model(folder / "tiny")
    config = MistralConfig(vocab_size=MistralConfig.from_pretrained(tokenizer_dir).vocab_size, num_attention_heads=8,
                           num_key_value_heads=4, tie_word_embeddings=False, **size)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder / "model")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / "model" / name).write_bytes((tokenizer_dir / name).read_bytes())
    return sum(p.numel() for p in model.parameters())


def worker(mode: str, model_path: str, out_dir: str) -> None:
    """One rank: load and shard the model one way, then write its peak memory to a JSON file (the
    ranks share one stdout, where their lines could interleave)."""
    import torch

    from fcmistral.modeling import load_model, load_tokenizer
    from fcmistral.training import fsdp

    env = fsdp.init_distributed()
    tokenizer = load_tokenizer(model_path)
    if mode == "every_rank_reads":
        model = load_model(model_path, load_in_4bit=False, tokenizer=tokenizer, dtype=torch.float32)
        fsdp.shard(model)
        model.to(env.device)
    else:
        fsdp.load_sharded(model_path, tokenizer, env, compute_dtype=torch.float32, activation_checkpointing=False)
    status = Path("/proc/self/status").read_text()
    peak = int(status.split("VmHWM:")[1].split()[0]) // 1024
    Path(out_dir, f"{mode}-{env.rank}.json").write_text(json.dumps({"rank": env.rank, "peak_rss_mib": peak}))
    fsdp.shutdown(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model (smoke run)")
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    with tempfile.TemporaryDirectory() as tmp:
        parameters = build_model(Path(tmp), SIZES["tiny" if args.tiny else "default"])
        report = {"parameters_m": round(parameters / 1e6), "fp32_gib": round(parameters * 4 / 2**30, 2)}
        for mode in ("every_rank_reads", "rank0_broadcasts"):
            result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                     "--nproc_per_node=2", __file__, "--worker", mode, f"{tmp}/model", tmp],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                sys.exit(f"{mode} failed:\n{result.stderr[-3000:]}")
            ranks = sorted((json.loads(p.read_text()) for p in Path(tmp).glob(f"{mode}-*.json")),
                           key=lambda r: r["rank"])
            report[mode] = {f"rank{r['rank']}_peak_rss_mib": r["peak_rss_mib"] for r in ranks}
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
