"""Every GPU path once, in one table: what benchmarks/gpu_check.sh runs (read it first).

Parts, in order (each prints "skipped: why" when it cannot run, so one missing package costs one row):
  qlora_7b     benchmarks/gpu_qlora.py: QLoRA steps in bf16 on Mistral-7B's real configuration (random
               weights), the original's method against ours (tokens/s, peak memory)
  train        train.py on the tiny model with the demo's recipe, padding-free (FlashAttention-2's
               varlen kernel when flash_attn imports, else SDPA per example)
  fsdp         FSDP/train.py under torchrun, one process (NCCL on a GPU, gloo on the CPU)
  merge        convert_weights.py: the tiny adapter merged, for the two vLLM parts
  vllm_eval    evaluate.py --backend vllm on the merged model (held-out sample rows)
  vllm_serve   `vllm serve` with the glaive tool-parser plugin, one streamed chat request with tools

--cpu runs the same parts at toy size on the CPU, so the script cannot rot while no GPU is lent:
vLLM runs no model without a GPU, so there vllm_eval runs evaluate.py's transformers backend and
vllm_serve sends its streamed request to serve.py, which speaks the same API.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.common import free_port, running_process_server  # noqa: E402

HELD_OUT = REPO / "data" / "sample_heldout.jsonl"


class Skipped(Exception):
    """A part that cannot run here; its message says why."""


class Failed(Exception):
    """A part that ran and failed; its message is the end of what it printed."""


@dataclass
class Check:
    """Where the parts run: toy sizes on the CPU (``cpu``) or the real ones on a GPU."""

    cpu: bool
    work: Path
    python: str = sys.executable

    @property
    def gpu(self) -> bool:
        return not self.cpu

    def run(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        """A step of a part, in the repository; Failed (its output's tail) unless it exits 0."""
        try:
            result = subprocess.run([self.python, *args], cwd=REPO, capture_output=True, text=True,
                                    timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise Failed(f"over {timeout:.0f} s: {' '.join(args[:2])}") from e
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise Failed(f"rc {result.returncode}: {lines[-1] if lines else '(no output)'}")
        return result


def needs(module: str, why: str = "") -> None:
    if importlib.util.find_spec(module) is None:
        raise Skipped(f"{module} is not installed{why}")


def qlora_7b(c: Check) -> str:
    needs("bitsandbytes")
    args = ["--tiny", "--steps", "1"] if c.cpu else ["--steps", "4", "--seq", "2048"]
    out = c.run("benchmarks/gpu_qlora.py", *args, timeout=300).stdout
    original, ours, ratio = json.loads(out[out.index("{"):])["results"]
    return (f"seq {ratio['seq']}: original {original['tokens_per_s']} tok/s {original['peak_gib']} GiB; "
            f"{ours['setup']} {ours['tokens_per_s']} tok/s {ours['peak_gib']} GiB; "
            f"speedup {ratio['speedup']}x, memory {ratio['memory_ratio']}x")


def train(c: Check) -> str:
    tiny = c.work / "tiny"
    c.run("-m", "fcmistral.demo.tiny", "--out_dir", str(tiny), timeout=120)
    quantized = importlib.util.find_spec("bitsandbytes") is not None
    # The demo's full 600 steps ran over 300 s on an H200 (2026-12-04): the GPU check runs 100 of them.
    steps = ["2", "1"] if c.cpu else ["100", "50"]
    toy = ["--max_steps", steps[0], "--eval_steps", steps[1], "--save_steps", steps[1]]
    result = c.run("train.py", "--config", "configs/demo_qlora.yaml", "--model_path", str(tiny),
                   "--output_dir", str(c.work / "adapter"), "--report_to", "none",
                   *([] if quantized else ["--no_load_in_4bit"]), *toy, timeout=300)
    attention = re.search(r"padding-free: \d+ examples, (\S+) attention", result.stderr)
    summary = json.loads((c.work / "adapter" / "train_summary.json").read_text())
    losses = [h["eval_loss"] for h in summary["eval_history"]]
    return (f"{'QLoRA' if quantized else 'LoRA (no bitsandbytes)'}, {attention[1] if attention else '?'} attention, "
            f"{summary['global_step']} steps in {summary['train_metrics'].get('train_runtime', 0):.0f} s, "
            f"eval loss {losses[0]:.2f} -> {min(losses):.2f}")


def fsdp(c: Check) -> str:
    out = c.work / "fsdp"
    c.run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "FSDP/train.py",
          "--model_path", str(c.work / "tiny"), "--data_path", "data/sample_train.jsonl", "--output_dir", str(out),
          "--max_steps", "2" if c.cpu else "20", "--eval_steps", "1" if c.cpu else "10", "--learning_rate", "1e-3",
          "--compute_dtype", "fp32" if c.cpu else "bf16", "--report_to", "none", timeout=300)
    summary = json.loads((out / "summary.json").read_text())
    return f"{'gloo' if c.cpu else 'NCCL'}, {summary['steps']} steps, best eval loss {summary['best_eval_loss']:.2f}"


def merge(c: Check) -> str:
    c.run("convert_weights.py", "--model_path", str(c.work / "tiny"), "--adapter_path", str(c.work / "adapter"),
          "--save_path", str(c.work / "merged"), timeout=180)
    return "merged model written"


def vllm_eval(c: Check) -> str:
    if c.gpu:
        needs("vllm", " (the GPU machine has no package index, and vLLM's wheel, 336 MB, is over what a call carries)")
    backend = "hf" if c.cpu else "vllm"
    out = c.work / "eval"
    c.run("evaluate.py", "--backend", backend, "--model_path", str(c.work / "merged"), "--dataset", str(HELD_OUT),
          "--output_dir", str(out), "--max_new_tokens", "96", *(["--limit", "3"] if c.cpu else []), timeout=300)
    summary = json.loads((out / "summary.json").read_text())
    declines = summary["declines"]  # held-out rows whose right reply calls nothing, scored apart
    return (f"{backend} backend{' (dry: vLLM needs a GPU)' if c.cpu else ''}: {summary['n'] + declines['n']} held-out "
            f"prompts, calls: name accuracy {summary['name_accuracy']:.0%}, exact {summary['exact_match']:.0%}; "
            f"{declines['n']} declining, {declines['accuracy']:.0%} declined")


def streamed_tool_request(base_url: str, model: str) -> tuple[str, list[dict]]:
    """One streamed chat request with the first held-out row's tools; the text and the calls
    assembled from the deltas, as an OpenAI client assembles them (by ``index``)."""
    from fcmistral.format.glaive import parse_row

    row = next(parse_row(json.loads(line)) for line in HELD_OUT.open() if "functioncall" in line)
    body = {"model": model, "stream": True, "max_tokens": 96, "temperature": 0,
            "messages": [{"role": "user", "content": row.turns[0].content}],
            "tools": [{"type": "function", "function": f} for f in row.functions]}
    request = urllib.request.Request(f"{base_url}/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    text, calls = "", {}
    with urllib.request.urlopen(request, timeout=120) as response:
        for line in response:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:])["choices"]:
                delta = choice["delta"]
                text += delta.get("content") or ""
                for call in delta.get("tool_calls") or []:
                    into = calls.setdefault(call["index"], {"name": "", "arguments": ""})
                    into["name"] += (call.get("function") or {}).get("name") or ""
                    into["arguments"] += (call.get("function") or {}).get("arguments") or ""
    return text, [calls[i] for i in sorted(calls)]


def vllm_serve(c: Check) -> str:
    merged, port = str(c.work / "merged"), free_port()
    if c.cpu:  # dry: the same client against serve.py
        command = [c.python, "serve.py", "--model_path", merged, "--port", str(port)]
    else:
        needs("vllm", " (see vllm_eval)")
        command = [c.python, "-m", "vllm.entrypoints.cli.main", "serve", merged, "--port", str(port), "--enforce-eager",
                   "--gpu-memory-utilization", "0.2", "--enable-auto-tool-choice", "--tool-call-parser", "glaive",
                   "--tool-parser-plugin", str(REPO / "fcmistral/serving/vllm_tool_parser.py")]
    base = f"http://127.0.0.1:{port}/v1"
    try:
        with running_process_server(command, f"{base}/models", c.work / "serve.log"):
            model = json.load(urllib.request.urlopen(f"{base}/models", timeout=5))["data"][0]["id"]
            text, calls = streamed_tool_request(base, model)
    except SystemExit as err:  # the server exited or never answered: this part fails, the table goes on
        raise Failed(str(err).strip().splitlines()[-1]) from None
    return f"{'serve.py (dry: vLLM needs a GPU)' if c.cpu else 'vllm serve'}: " + (
        f"{len(calls)} streamed call(s): {calls[0]['name']}({calls[0]['arguments'][:60]})" if calls
        else f"no call, text {text[:60]!r}")


PARTS: list[tuple[str, Callable[[Check], str]]] = [
    ("qlora_7b", qlora_7b), ("train", train), ("fsdp", fsdp), ("merge", merge),
    ("vllm_eval", vllm_eval), ("vllm_serve", vllm_serve),
]
DEPENDS = {"fsdp": "train", "merge": "train", "vllm_eval": "merge", "vllm_serve": "merge"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="the same parts at toy size on the CPU (a dry run)")
    parser.add_argument("--only", default="", help="comma-separated parts to run (default: all)")
    parser.add_argument("--json", help="also write the table as JSON to this file")
    args = parser.parse_args()
    import torch

    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("error: no GPU is visible: run with --cpu for the dry run")
    only = set(filter(None, args.only.split(",")))
    if unknown := only - {name for name, _ in PARTS}:
        raise SystemExit(f"error: --only: unknown part(s) {sorted(unknown)}")
    device = "cpu (dry run, toy sizes)" if args.cpu else torch.cuda.get_device_name()
    rows, done = [], set()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        check = Check(cpu=args.cpu, work=Path(work))
        for name, part in PARTS:
            if only and name not in only:
                continue
            start = time.perf_counter()
            try:
                if name in DEPENDS and DEPENDS[name] not in done:
                    raise Skipped(f"needs {DEPENDS[name]}, which did not run")
                result, figures = "ok", part(check)
                done.add(name)
            except Skipped as e:
                result, figures = "skipped", str(e)
            except Failed as e:
                result, figures = "FAILED", str(e)
            except Exception as e:  # a bug in a part: the other parts and the table still come
                result, figures = "FAILED", f"{type(e).__name__}: {e}"
            rows.append({"part": name, "result": result, "figures": figures,
                         "seconds": round(time.perf_counter() - start, 1)})
            print(f"{name}: {result} ({rows[-1]['seconds']} s) {figures}", file=sys.stderr, flush=True)
    print(f"gpu_check on {device}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n")
    print("| part | result | figures | s |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['part']} | {row['result']} | {row['figures']} | {row['seconds']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "rows": rows}, indent=2))
    sys.exit(1 if any(row["result"] == "FAILED" for row in rows) else 0)


if __name__ == "__main__":
    main()
