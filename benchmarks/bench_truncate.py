"""`palign truncate` against the reference loop and the floor, on the 40 real CoTs.

    .venv/bin/python benchmarks/bench_truncate.py                     # tiny model, CPU
    python3 benchmarks/bench_truncate.py --shape qwen2.5-7b --dtype bfloat16   # GPU, random 7B

Every run uses the same model object, the same machine and the same 40 problems:
- reference: the reference's loop (one problem, one probe at a time, transformers `generate`,
  batch 1, sampling with the model's generation config), its `". "` units, each reply forced
  to 5 tokens (min = max = 5 new tokens) as an instruct student's "[ENOUGH]" would be; a
  random model never stops, so an unforced run would time its 256-token cap instead (that
  cap's cost per probe is timed once, apart). Its 0.5 s sleep per probe is added as
  probes x 0.5 s rather than slept.
- floor: one batched prefill of every full judge prompt (k = m); the lower of two ways is
  taken: left-padded batches under the token budget, and one prompt at a time unpadded.
- palign: the real stage (StageIO, scheduler, judges) with --backend hf, generate (5-token
  replies) and logprob, both as short probes on each problem's lazily read KV cache; with
  vLLM too where it is installed (its prefix cache emptied before each timed run, and a vLLM
  floor of its own: one prefill of every full judge prompt, max_tokens=1).
Each palign row reports the judge-prompt tokens it read against the floor's (`cot/floor`),
its probe tokens (tails, replies, decode steps), engine calls and model forwards.
Decisions of a random model are noise, so the agreement of chosen prefix lengths with the
reference is measured apart, under a scripted judge (sufficient once the prefix holds a
per-problem share of the CoT's characters), for the reference's units and for sentences.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from palign_cli.backends.base import Backend, BackendOptions, Prompt, Sample  # noqa: E402
from palign_cli.prompts import JUDGE_PROMPT, judge_prompt  # noqa: E402
from palign_cli.units import split_units  # noqa: E402

SLEEP = 0.5
QWEN25_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rope_theta=1e6)
QWEN25_1_5B = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                   num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6)
DEBUG = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=2, vocab_size=32000, max_position_embeddings=16384)  # tries the path on CPU
SHAPES = {"qwen2.5-7b": QWEN25_7B, "qwen2.5-1.5b": QWEN25_1_5B, "debug": DEBUG}


@dataclass
class Row:
    name: str
    seconds: float
    judge_calls: int = 0
    backend_calls: int = 0
    tokens: int = 0  # judge-prompt tokens read (the CoTs and their prompts)
    probe_tokens: int = 0
    floor_tokens: int = 0
    forwards: int = 0
    extra: dict = field(default_factory=dict)


def load(path: Path, limit: int | None) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]
    return recs[:limit] if limit else recs


def sync(backend) -> None:
    if str(backend.device).startswith("cuda"):
        backend.torch.cuda.synchronize()


# ----- the model ------------------------------------------------------------------------


def trained_tokenizer(texts: list[str], vocab: int):
    """A Qwen-style byte-level BPE trained on the CoTs, so token counts look like a real model's."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from palign_cli.tiny_model import CHAT_TEMPLATE, SPECIAL_TOKENS

    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL_TOKENS + ["<think>", "</think>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # the prompt's own words too, so "[ENOUGH]" and "assistant" are a few tokens, as in Qwen's
    fixed = [JUDGE_PROMPT, "<|im_start|>assistant\n", "[ENOUGH]", "[NOT_ENOUGH]"] * 200
    tok.train_from_iterator(texts + fixed, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def random_backend(shape: str, dtype: str, tokenizer, token_budget: int):
    """An HFBackend around a random-init model of a real model's shape, built on the device."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from palign_cli.backends.hf import HFBackend, _resolve_dtype
    from palign_cli.backends.template import ChatRenderer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = Qwen2Config(**SHAPES[shape], tie_word_embeddings=False, attn_implementation="sdpa",
                      eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                      pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    torch_dtype = _resolve_dtype(torch, dtype, device)
    torch.set_default_dtype(torch_dtype)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)  # random init on the device: no 15 GB file to write
    torch.set_default_dtype(torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id,
                                               do_sample=True, temperature=0.7, top_p=0.8, top_k=20,
                                               repetition_penalty=1.05)
    model.eval()
    # HFBackend loads from a path; fill in the same fields around the model built here.
    b = HFBackend.__new__(HFBackend)
    b.torch, b.device, b.tokenizer, b.model = torch, device, tokenizer, model
    b.options = BackendOptions(model=shape, dtype=dtype, token_budget=token_budget)
    b.renderer = ChatRenderer(tokenizer)
    b.pad_id = cfg.pad_token_id
    b.stop_ids = b._stop_ids()
    b.max_len = cfg.max_position_embeddings
    return b


# ----- the reference loop, the floor ----------------------------------------------------


def reference_prompt_ids(backend, question: str, prefix: str) -> list[int]:
    return backend.renderer.encode_prompt(Prompt.user(judge_prompt(question, prefix), enable_thinking=False))


def reference_loop(backend, recs: list[dict], new_tokens: int = 5) -> Row:
    """One problem, one probe at a time: HF generate, batch 1, the model's sampling config."""
    torch = backend.torch
    probes = tokens = 0
    sync(backend)
    start = time.perf_counter()
    for rec in recs:
        units = split_units(rec["long_cot"], "reference")
        lo, hi = 1, len(units)
        while lo <= hi:
            mid = (lo + hi) // 2
            ids = reference_prompt_ids(backend, rec["question"], units.prefix(mid))
            x = torch.tensor([ids], device=backend.device)
            with torch.inference_mode():
                out = backend.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens,
                                             min_new_tokens=new_tokens)
            reply = backend.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
            probes, tokens = probes + 1, tokens + len(ids)
            if "[ENOUGH]" in reply or reply.strip() == "ENOUGH":
                hi = mid - 1
            else:
                lo = mid + 1
    sync(backend)
    return Row("reference", time.perf_counter() - start, probes, probes, tokens)


def one_capped_probe(backend, rec: dict, cap: int = 256) -> float:
    """Seconds of one reference probe whose reply runs to its cap (a random model never stops)."""
    torch = backend.torch
    units = split_units(rec["long_cot"], "reference")
    ids = reference_prompt_ids(backend, rec["question"], units.prefix(max(1, len(units) // 2)))
    x = torch.tensor([ids], device=backend.device)
    sync(backend)
    start = time.perf_counter()
    with torch.inference_mode():
        backend.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=cap, min_new_tokens=cap)
    sync(backend)
    return time.perf_counter() - start


def full_prompts(backend, recs: list[dict]) -> list[list[int]]:
    return [reference_prompt_ids(backend, r["question"], r["long_cot"]) for r in recs]


def floor_batched(backend, seqs: list[list[int]]) -> Row:
    """Left-padded batches under the token budget, longest first; only the last logit kept."""
    torch = backend.torch
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    batches, current = [], []
    for i in order:
        if current and len(seqs[current[0]]) * (len(current) + 1) > backend.options.token_budget:
            batches.append(current)
            current = []
        current.append(i)
    batches.append(current)
    sync(backend)
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            ids, mask = backend._left_pad([seqs[i] for i in batch])
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            backend.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1)
    sync(backend)
    return Row("floor (batched, padded)", time.perf_counter() - start, len(seqs), len(batches), sum(map(len, seqs)))


def floor_single(backend, seqs: list[list[int]]) -> Row:
    """One prompt per forward, no padding (the causal fast path)."""
    torch = backend.torch
    sync(backend)
    start = time.perf_counter()
    with torch.inference_mode():
        for s in seqs:
            backend.model(input_ids=torch.tensor([s], device=backend.device), logits_to_keep=1)
    sync(backend)
    return Row("floor (batch 1, unpadded)", time.perf_counter() - start, len(seqs), len(seqs), sum(map(len, seqs)))


# ----- palign ---------------------------------------------------------------------------


def run_stage(backend, recs: list[dict], name: str, **cfg) -> tuple[Row, list[dict]]:
    from palign_cli.records import StageIO
    from palign_cli.stages.truncate import TruncateConfig, run_truncate

    config = TruncateConfig.make(model="bench", backend=getattr(backend, "name", "scripted"), **cfg)
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        inp.write_text("".join(json.dumps({k: r[k] for k in ("id", "question", "long_cot")}) + "\n" for r in recs))
        if hasattr(backend, "llm"):
            backend.llm.reset_prefix_cache()  # each run starts cold: nothing from the last one
        sync(backend) if hasattr(backend, "device") else None
        start = time.perf_counter()
        with StageIO(str(inp), str(out), stage="truncate", config=config.fingerprint(),
                     required={"question": ("question",), "cot": ("long_cot",)}) as io:
            stats = run_truncate(io, backend, config, max_active=64)
        sync(backend) if hasattr(backend, "device") else None
        seconds = time.perf_counter() - start
        records = [json.loads(x) for x in out.read_text().splitlines()]
    cot = stats.cot_tokens - stats.cache_hits  # vLLM: what its prefix cache did not already hold
    return Row(name, seconds, stats.judge_calls, stats.backend_calls, cot, stats.probe_tokens,
               stats.floor_tokens, stats.forwards), records


# ----- agreement under a scripted judge ------------------------------------------------------


def share(rec: dict) -> float:
    """The scripted judge's per-problem threshold: a share of the CoT, 0.15..0.85."""
    return 0.15 + 0.7 * (zlib.crc32(rec["id"].encode()) % 1000) / 1000


class CharShareJudge(Backend):
    """ENOUGH once the partial reasoning holds the problem's share of the CoT's characters."""

    name = "scripted"

    def __init__(self, recs: list[dict]):
        # keyed by the CoT's opening: several CoTs answer the same question (different models)
        self.need = {r["long_cot"][:200]: share(r) * len(r["long_cot"]) for r in recs}
        assert len(self.need) == len(recs), "CoT openings must tell the problems apart"

    def _enough(self, prompt: Prompt) -> bool:
        reasoning = prompt.messages[0][1].split("Partial reasoning:\n", 1)[1][:-1]  # template's last "\n"
        needs = [n for key, n in self.need.items() if (reasoning + key[len(reasoning):]).startswith(key)]
        assert len(needs) == 1, "a prefix too short to tell its CoT apart"
        return len(reasoning) >= needs[0]

    def _generate(self, prompts, params):
        return [[Sample("[ENOUGH]" if self._enough(p) else "[NOT_ENOUGH]", "stop", 3)] for p in prompts]

    def score(self, prompts, candidates):
        return [[0.0, -5.0] if self._enough(p) else [-5.0, 0.0] for p in prompts]


def reference_choice(rec: dict) -> int:
    """The reference's loop under the scripted judge, on its own glued-together prefix text."""
    sents = rec["long_cot"].split(". ")
    need = share(rec) * len(rec["long_cot"])
    lo, hi, best = 1, len(sents), None
    while lo <= hi:
        mid = (lo + hi) // 2
        prefix = ". ".join(sents[:mid]) + "."
        if len(prefix) >= need:
            best, hi = mid, mid - 1
        else:
            lo = mid + 1
    return len(". ".join(sents[: best or len(sents)]))


def agreement(recs: list[dict]) -> dict:
    judge = CharShareJudge(recs)
    ref = [reference_choice(r) for r in recs]
    out = {}
    for unit in ("reference", "sentence"):
        _, records = run_stage(judge, recs, f"scripted {unit}", unit=unit)
        chars = [len(r["prefix"]) for r in records]
        same = sum(abs(a - b) <= 1 for a, b in zip(chars, ref, strict=True))  # the glued "." aside
        gap = [abs(a - b) / len(r["long_cot"]) for a, b, r in zip(chars, ref, recs, strict=True)]
        out[unit] = {"same_prefix": f"{same}/{len(recs)}", "mean_abs_gap_share": round(sum(gap) / len(gap), 4)}
    return out


# ----- main -----------------------------------------------------------------------------


def table(rows: list[Row], ref: Row, floor: Row) -> None:
    print(f"{'run':44} {'wall s':>8} {'judge':>6} {'calls':>6} {'fwds':>6} {'cot tok':>9} {'cot/floor':>9} "
          f"{'probe tok':>9} {'ref/x':>7} {'x/floor':>8}")
    rows = [r for r in rows if r.name != "warm-up"]
    for r in rows:
        base = r.extra.get("floor_seconds", floor.seconds)
        share = f"{r.tokens / r.floor_tokens:9.2f}" if r.floor_tokens else f"{'':9}"
        print(f"{r.name:44} {r.seconds:8.2f} {r.judge_calls:6d} {r.backend_calls:6d} {r.forwards:6d} {r.tokens:9d} "
              f"{share} {r.probe_tokens:9d} {ref.seconds / r.seconds:7.2f} {r.seconds / base:8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "tests" / "fixtures" / "teacher_cots_sample.jsonl"))
    ap.add_argument("--model", help="model path (default: build the tiny test model)")
    ap.add_argument("--shape", choices=sorted(SHAPES), help="random-init model of this shape (GPU)")
    ap.add_argument("--vocab", type=int, default=32000, help="--shape: BPE trained on the CoTs, this many tokens")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--token-budget", type=int, default=16384)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--skip-generate", action="store_true")
    ap.add_argument("--units", default="sentence", help="comma list of unit kinds to time palign on")
    ap.add_argument("--threads", type=int, help="torch CPU threads (and vLLM's OpenMP cores 0..N-1); default torch's")
    ap.add_argument("--floor-again", action="store_true", help="time the floor again at the end; keep the lower")
    ap.add_argument("--tail-tokens", default="", help="comma list: also time logprob with these hf_cuts tail budgets")
    ap.add_argument("--check", type=int, default=0, help="compare one-pass with per-probe scores on N problems")
    ap.add_argument("--json", help="write the numbers here too")
    args = ap.parse_args()
    recs = load(Path(args.data), args.limit)
    if args.threads:
        # On a CPU shared with other work, each of the many small ops of a probe waits at an
        # OpenMP barrier for a preempted thread; one thread per process avoids that.
        import torch

        torch.set_num_threads(args.threads)
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{args.threads - 1}" if args.threads > 1 else "0")

    if args.shape:
        tok = trained_tokenizer([r["long_cot"] for r in recs] + [r["question"] for r in recs], args.vocab)
        backend = random_backend(args.shape, args.dtype, tok, args.token_budget)
        label = f"random {args.shape}, {args.dtype}"
    else:
        from palign_cli.backends import make_backend
        from palign_cli.tiny_model import build_tiny_model

        model = args.model or str(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny"))
        backend = make_backend("hf", BackendOptions(model=model, dtype=args.dtype, token_budget=args.token_budget))
        label = f"tiny model, {args.dtype}"
    print(f"# {len(recs)} problems; {label}; device {backend.device}; torch threads "
          f"{backend.torch.get_num_threads()}; load {os.getloadavg()[0]:.2f}", flush=True)

    seqs = full_prompts(backend, recs)
    floor_single(backend, seqs[:2])  # warm-up
    floors = [floor_batched(backend, seqs), floor_single(backend, seqs)]
    floor = min(floors, key=lambda r: r.seconds)
    rows: list[Row] = list(floors)
    print(f"# mean full judge prompt: {sum(map(len, seqs)) / len(seqs):.0f} tokens; floors: "
          + ", ".join(f"{r.name} {r.seconds:.2f} s" for r in floors), flush=True)

    if args.skip_reference:
        ref = Row("reference (skipped)", float("nan"))
    else:
        ref = reference_loop(backend, recs)
        capped = one_capped_probe(backend, recs[len(recs) // 2])
        ref_sleep = Row("reference + its 0.5 s sleep (added)", ref.seconds + SLEEP * ref.judge_calls,
                        ref.judge_calls, ref.backend_calls, ref.tokens)
        rows += [ref, ref_sleep]
        print(f"# reference: {ref.seconds:.2f} s for {ref.judge_calls} probes", flush=True)
        print(f"# one reference probe with a 256-token reply: {capped:.2f} s "
              f"(vs {ref.seconds / ref.judge_calls:.3f} s per 5-token probe)", flush=True)

    run_stage(backend, recs[:2], "warm-up", judge="logprob")  # first masked-attention kernels
    for unit in args.units.split(","):
        if not args.skip_generate:
            row, _ = run_stage(backend, recs, f"palign hf generate ({unit} units)", unit=unit, max_tokens=5)
            rows.append(row)
            print(f"# {row.name}: {row.seconds:.2f} s", flush=True)
        row, _ = run_stage(backend, recs, f"palign hf logprob ({unit} units)", unit=unit, judge="logprob")
        rows.append(row)
        print(f"# {row.name}: {row.seconds:.2f} s", flush=True)

    for budget in filter(None, args.tail_tokens.split(",")):
        from palign_cli.backends import hf_cuts

        hf_cuts.TAIL_TOKENS, saved = int(budget), backend.options  # CPU reads the first, GPU the second
        backend.options = BackendOptions(model=saved.model, dtype=saved.dtype, token_budget=int(budget))
        row, _ = run_stage(backend, recs, f"palign hf logprob (reference, tails {budget})", unit="reference",
                           judge="logprob")
        backend.options, hf_cuts.TAIL_TOKENS = saved, 512
        rows.append(row)
        print(f"# {row.name}: {row.seconds:.2f} s", flush=True)
    check = onepass_check(backend, recs[: args.check]) if args.check else None
    if args.floor_again:  # GPU allocator and clocks warm up over a run: time the floor at its end too
        again = [floor_batched(backend, seqs), floor_single(backend, seqs)]
        print("# floors again: " + ", ".join(f"{r.name} {r.seconds:.2f} s" for r in again), flush=True)
        floor = min([floor, *again], key=lambda r: r.seconds)

    if not args.skip_vllm and not args.shape:
        rows += vllm_rows(recs, backend.options.model, args.dtype, args.units.split(","))

    print()
    table(rows, ref, floor)
    agree = agreement(recs)
    print(f"\nagreement with the reference's choices under a scripted judge: {agree}")
    if check:
        print(f"one-pass vs per-probe scoring: {check}")
    if args.json:
        Path(args.json).write_text(json.dumps({"label": label, "rows": [r.__dict__ for r in rows],
                                               "floor": floor.name, "agreement": agree, "check": check}, indent=2))


def onepass_check(backend, recs: list[dict]) -> dict:
    """Max |difference| of log-probabilities, one pass vs each probe alone, and verdict agreement."""
    from palign_cli.backends.base import CUT
    from palign_cli.backends.hf_cuts import score_cuts_onepass
    from palign_cli.prompts import ENOUGH, NOT_ENOUGH
    from palign_cli.stages.truncate import TruncateConfig, judge_prompt_for, p_enough

    cfg = TruncateConfig(model="bench", backend="hf")
    worst, same, total = 0.0, 0, 0
    for rec in recs:
        units = split_units(rec["long_cot"], "reference")
        head = judge_prompt_for(rec["question"], CUT, cfg)
        cuts = list(units.ends)
        one = score_cuts_onepass(backend, head, units.text, cuts, [ENOUGH, NOT_ENOUGH]).logprobs
        ref = Backend.score_cuts(backend, head, units.text, cuts, [ENOUGH, NOT_ENOUGH]).logprobs
        for a, b in zip(one, ref, strict=True):
            worst = max(worst, abs(a[0] - b[0]), abs(a[1] - b[1]))
            same += (p_enough(*a) >= 0.5) == (p_enough(*b) >= 0.5)
            total += 1
    return {"max_abs_logprob_diff": round(worst, 5), "same_verdict": f"{same}/{total}"}


def vllm_floor(engine, recs: list[dict]) -> Row:
    """vLLM's own floor: one prefill of every full judge prompt (max_tokens=1), cache emptied."""
    prompts = [Prompt.user(judge_prompt(r["question"], r["long_cot"]), enable_thinking=False) for r in recs]
    ids = [{"prompt_token_ids": engine.renderer.encode_prompt(p)} for p in prompts]
    sp = engine.vllm.SamplingParams(max_tokens=1, temperature=0.0)
    engine.llm.reset_prefix_cache()
    start = time.perf_counter()
    engine.llm.generate(ids, sampling_params=sp, use_tqdm=False)
    seconds = time.perf_counter() - start
    tokens = sum(len(x["prompt_token_ids"]) for x in ids)
    return Row("vllm floor (one prefill of every prompt)", seconds, len(ids), 1, tokens, 0, tokens)


def vllm_rows(recs: list[dict], model: str, dtype: str, units: list[str]) -> list[Row]:
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means: not here
        print(f"# vLLM not run: {exc}")
        return []
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from palign_cli.backends import make_backend

    start = time.perf_counter()
    engine = make_backend("vllm", BackendOptions(model=model, dtype=dtype, max_model_len=16384))
    print(f"# vLLM engine start: {time.perf_counter() - start:.1f} s (not counted)", flush=True)
    rows = []
    try:
        vllm_floor(engine, recs[:2])  # warm-up
        floor = min((vllm_floor(engine, recs) for _ in range(2)), key=lambda r: r.seconds)
        rows.append(floor)
        print(f"# {floor.name}: {floor.seconds:.2f} s", flush=True)
        for unit in units:
            for judge in ("generate", "logprob"):
                row, _ = run_stage(engine, recs, f"palign vllm {judge} ({unit} units)", unit=unit,
                                   judge=judge, max_tokens=5)
                row.extra["floor_seconds"] = floor.seconds  # vLLM rows: against vLLM's own floor
                rows.append(row)
                print(f"# {row.name}: {row.seconds:.2f} s", flush=True)
    finally:
        engine.close()
    return rows


if __name__ == "__main__":
    main()
