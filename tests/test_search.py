"""Search decisions, checked with a scripted judge: ENOUGH iff the prefix holds k >= t units."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palign_cli.backends.base import Backend, Capabilities, Prompt, Sample, SamplingParams
from palign_cli.errors import InputError, UsageError
from palign_cli.records import Shard, StageIO
from palign_cli.stages.search import (
    BinarySearch,
    LinearSearch,
    RatioSearch,
    max_binary_probes,
    parse_strategy,
)
from palign_cli.stages.truncate import TruncateConfig, is_enough, p_enough, run_truncate

# ----- the pure state machines ----------------------------------------------------------


def drive(search, verdict) -> list[int]:
    probes = []
    while not search.done:
        k = search.next_probe()
        probes.append(k)
        search.feed(k, verdict(k))
    return probes


def paper_loop(m: int, verdict) -> tuple[int | None, list[int]]:
    """The reference's sequential loop, transcribed: the oracle for the state machine."""
    lo, hi, best, probes = 1, m, None, []
    while lo <= hi:
        mid = (lo + hi) // 2
        probes.append(mid)
        if verdict(mid):
            best, hi = mid, mid - 1
        else:
            lo = mid + 1
    return best, probes


@settings(max_examples=400, deadline=None)
@given(data=st.data(), m=st.integers(1, 5000))
def test_binary_search_finds_t_within_log_probes(data, m):
    t = data.draw(st.integers(1, m + 1))  # t = m + 1: no prefix is enough
    search = BinarySearch(m)
    probes = drive(search, lambda k: k >= t)
    assert len(probes) <= max_binary_probes(m) == math.ceil(math.log2(m + 1))
    outcome = search.outcome()
    if t <= m:
        assert (outcome.k, outcome.is_sufficient) == (t, True)
    else:
        assert (outcome.k, outcome.is_sufficient) == (m, False)


@settings(max_examples=200, deadline=None)
@given(verdicts=st.lists(st.booleans(), min_size=1, max_size=200))
def test_binary_search_matches_the_paper_loop_on_any_verdicts(verdicts):
    m = len(verdicts)
    search = BinarySearch(m)
    probes = drive(search, lambda k: verdicts[k - 1])
    best, expected = paper_loop(m, lambda k: verdicts[k - 1])
    assert probes == expected
    assert search.outcome().k == (best if best is not None else m)


@settings(max_examples=200, deadline=None)
@given(verdicts=st.lists(st.booleans(), min_size=1, max_size=200))
def test_reach_bounds_every_later_probe(verdicts):
    """An engine may drop its cache beyond `reach`: no later probe of the search goes there."""
    for search in (BinarySearch(len(verdicts)), LinearSearch(len(verdicts))):
        reaches = []
        while not search.done:
            reaches.append(search.reach)
            assert all(search.next_probe() <= r for r in reaches)
            k = search.next_probe()
            search.feed(k, verdicts[k - 1])
        assert search.reach == 0


def test_scheduler_reports_each_verdict_to_after_verdict():
    from palign_cli.stages.search import schedule

    class P:
        def __init__(self, m):
            self.search, self.trace = BinarySearch(m), []

    class Never:
        def judge(self, probes):
            return [{"k": k, "verdict": "NOT_ENOUGH"} for _, k in probes]

    seen = []
    problems = [P(7), P(3)]
    done = [p for batch in schedule(problems, Never(), 2, seen.append) for p in batch]
    assert done == problems
    assert len(seen) == sum(len(p.trace) for p in problems) == 3 + 2


def test_binary_search_fallback_uses_the_whole_cot_when_bounded():
    search = BinarySearch(5, total=9)  # only 5 of 9 units fit the judge's context
    probes = drive(search, lambda k: False)
    assert max(probes) <= 5
    assert (search.outcome().k, search.outcome().is_sufficient) == (9, False)


def test_binary_search_over_nothing_is_done_at_once():
    search = BinarySearch(0, total=4)
    assert search.done and search.outcome().k == 4 and search.outcome().is_sufficient is False


@pytest.mark.parametrize("m,t", [(1, 1), (7, 3), (7, 7), (7, 8), (50, 1)])
def test_linear_search(m, t):
    search = LinearSearch(m)
    probes = drive(search, lambda k: k >= t)
    assert probes == list(range(1, min(t, m) + 1))
    assert search.outcome().k == (t if t <= m else m)
    assert search.outcome().is_sufficient is (t <= m)


@pytest.mark.parametrize("m,ratio,k", [(10, 0.5, 5), (10, 0.3, 3), (7, 0.5, 4), (3, 0.01, 1), (9, 1.0, 9)])
def test_ratio_search(m, ratio, k):
    search = RatioSearch(m, ratio=ratio)
    assert search.done
    assert search.outcome().k == k and search.outcome().is_sufficient is None


def test_feeding_the_wrong_k_is_refused():
    search = BinarySearch(10)
    with pytest.raises(ValueError, match="asked for k=5"):
        search.feed(3, True)


@pytest.mark.parametrize("text", ["", "ratio", "ratio:0", "ratio:1.5", "ratio:x", "bisect"])
def test_bad_strategies(text):
    with pytest.raises(UsageError):
        parse_strategy(text)


@pytest.mark.parametrize(
    "reply,enough",
    [
        ("[ENOUGH]", True),
        ("  [ENOUGH]\n", True),
        ("ENOUGH", True),
        (" ENOUGH \n", True),
        ("The prefix is [ENOUGH].", True),
        ("[NOT_ENOUGH]", False),
        ("NOT_ENOUGH", False),
        ("ENOUGH.", False),
        ("enough", False),
        ("[enough]", False),
        ("", False),
    ],
)
def test_verdict_rule_of_the_reference(reply, enough):
    assert is_enough(reply) is enough


def test_p_enough():
    assert p_enough(-3.0, -3.0) == 0.5
    assert p_enough(0.0, -math.log(3)) == pytest.approx(0.75)
    assert p_enough(-1e6, 0.0) == pytest.approx(0.0) and p_enough(0.0, -1e6) == pytest.approx(1.0)


# ----- the stage with a scripted judge ----------------------------------------------------


class ScriptedJudge(Backend):
    """Judges like a monotone student: ENOUGH iff the prefix holds at least t steps.

    t comes from the question ("threshold 7"); k is the number of "Step i." sentences in the
    prompt's partial reasoning. Records every engine call, like llm's MockModel.
    """

    name = "scripted"

    def __init__(self):
        self.calls: list[tuple[str, int]] = []

    @staticmethod
    def enough(prompt: Prompt) -> bool:
        text = prompt.messages[0][1]
        t = int(re.search(r"threshold (\d+)", text).group(1))
        reasoning = text.split("Partial reasoning:", 1)[1]
        return len(re.findall(r"Step \d+\.", reasoning)) >= t

    def _generate(self, prompts: Sequence[Prompt], params: Sequence[SamplingParams]):
        self.calls.append(("generate", len(prompts)))
        return [[Sample("[ENOUGH]" if self.enough(p) else "[NOT_ENOUGH]", "stop", 3)] for p in prompts]

    def score(self, prompts: Sequence[Prompt], candidates: Sequence[str]):
        self.calls.append(("score", len(prompts)))
        return [[-0.1, -4.0] if self.enough(p) else [-4.0, -0.1] for p in prompts]


def write_problems(path, specs: list[tuple[int, int]]) -> None:
    """specs: (m steps, threshold t) per problem."""
    with open(path, "w") as f:
        for i, (m, t) in enumerate(specs):
            cot = " ".join(f"Step {j}." for j in range(1, m + 1))
            f.write(json.dumps({"id": f"p{i}", "question": f"Problem {i}, threshold {t}", "long_cot": cot}) + "\n")


def run(tmp_path, specs, name="out", backend=None, max_active=8, **cfg) -> tuple[list[dict], ScriptedJudge]:
    inp = tmp_path / "in.jsonl"
    write_problems(inp, specs)
    out = tmp_path / f"{name}.jsonl"
    backend = backend or ScriptedJudge()
    config = TruncateConfig.make(model="scripted", backend="scripted", **cfg)
    with StageIO(str(inp), str(out), stage="truncate", config=config.fingerprint(),
                 required={"question": ("question",), "cot": ("long_cot",)}, overwrite=True, shard=Shard()) as io:
        run_truncate(io, backend, config, max_active=max_active)
    return [json.loads(line) for line in out.read_text().splitlines()], backend


SPECS = [(13, 5), (1, 1), (40, 41), (7, 7), (100, 37), (2, 3), (64, 1), (9, 4), (33, 20), (5, 2), (21, 21)]


def expected_k(m: int, t: int) -> int:
    return t if t <= m else m


@pytest.mark.parametrize("judge", ["generate", "logprob"])
def test_stage_binary_search_finds_each_threshold(tmp_path, judge):
    records, backend = run(tmp_path, SPECS, judge=judge)
    assert [r["id"] for r in records] == [f"p{i}" for i in range(len(SPECS))]  # input order
    for r, (m, t) in zip(records, SPECS, strict=True):
        assert r["prefix_units"] == expected_k(m, t)
        assert r["total_units"] == m
        assert r["is_sufficient"] is (t <= m)
        assert r["prefix"] == " ".join(f"Step {j}." for j in range(1, expected_k(m, t) + 1))
        assert r["prefix_ratio"] == round(expected_k(m, t) / m, 6)
        assert r["search"] == "binary"
        assert r["judge_calls"] == len(r["trace"]) <= max_binary_probes(m)
        for entry in r["trace"]:
            assert entry["verdict"] == ("ENOUGH" if entry["k"] >= t else "NOT_ENOUGH")
            assert ("reply" in entry) is (judge == "generate")
            assert ("p_enough" in entry) is (judge == "logprob")


def test_batched_scheduler_equals_one_at_a_time(tmp_path):
    batched, b1 = run(tmp_path, SPECS, name="batched", max_active=4)
    single, b2 = run(tmp_path, SPECS, name="single", max_active=1)
    assert batched == single
    assert max(n for _, n in b1.calls) == 4 and max(n for _, n in b2.calls) == 1
    assert len(b1.calls) < len(b2.calls) == sum(len(r["trace"]) for r in single)


def test_one_probe_of_every_active_search_per_engine_call(tmp_path):
    specs = [(1000, 1)] * 6  # every search takes the same 9 probes: 500, 250, ..., 3, 1
    records, backend = run(tmp_path, specs, max_active=6)
    assert [e["k"] for e in records[0]["trace"]] == [500, 250, 125, 62, 31, 15, 7, 3, 1]
    assert backend.calls == [("generate", 6)] * 9


def test_logprob_curve_replays_the_sequential_decisions(tmp_path):
    gen, _ = run(tmp_path, SPECS, name="gen", judge="generate")
    lp, backend = run(tmp_path, SPECS, name="lp", judge="logprob", save_curve=True)
    for g, c in zip(gen, lp, strict=True):
        assert [(e["k"], e["verdict"]) for e in g["trace"]] == [(e["k"], e["verdict"]) for e in c["trace"]]
        assert len(c["curve"]) == c["total_units"]
        assert all(e["p_enough"] == c["curve"][e["k"] - 1] for e in c["trace"])
    # one curve per problem, every boundary scored in it (the base class's per-probe path)
    assert [n for _, n in backend.calls] == [m for m, _ in SPECS]


def test_logprob_probes_per_round_where_the_engine_has_no_one_pass_curve(tmp_path):
    """The scripted engine scores each cut as its own prompt (like vLLM, whose prefix cache
    is skipped for prompt log-probabilities): then only the probes the search asks are scored."""
    gen, _ = run(tmp_path, SPECS, name="gen", judge="generate", max_active=4)
    lp, backend = run(tmp_path, SPECS, name="lp", judge="logprob", max_active=4)
    assert {kind for kind, _ in backend.calls} == {"score"}
    assert max(n for _, n in backend.calls) == 4
    assert sum(n for _, n in backend.calls) == sum(r["judge_calls"] for r in lp)
    for g, c in zip(gen, lp, strict=True):
        assert [(e["k"], e["verdict"]) for e in g["trace"]] == [(e["k"], e["verdict"]) for e in c["trace"]]


class OnePassJudge(ScriptedJudge):
    """An engine with its own score_cuts (as hf's one pass): the stage takes the whole curve."""

    capabilities = Capabilities(curve_in_one_pass=True)

    def score_cuts(self, head, text, cuts, candidates):
        self.calls.append(("score_cuts", len(cuts)))
        return Backend.score_cuts(self, head, text, cuts, candidates)


def test_logprob_takes_the_curve_where_the_engine_reads_it_in_one_pass(tmp_path):
    records, backend = run(tmp_path, SPECS, backend=OnePassJudge(), judge="logprob")
    assert [c for c in backend.calls if c[0] == "score_cuts"] == [("score_cuts", m) for m, _ in SPECS]
    assert [r["prefix_units"] for r in records] == [expected_k(m, t) for m, t in SPECS]


@pytest.mark.parametrize("judge", ["generate", "logprob"])
def test_linear_search_in_the_stage(tmp_path, judge):
    records, _ = run(tmp_path, SPECS, judge=judge, search="linear")
    for r, (m, t) in zip(records, SPECS, strict=True):
        assert r["prefix_units"] == expected_k(m, t)
        assert [e["k"] for e in r["trace"]] == list(range(1, min(t, m) + 1))
        assert r["search"] == "linear"


def test_ratio_needs_no_judge(tmp_path):
    records, _ = run(tmp_path, SPECS, backend=None, search="ratio:0.25")
    for r, (m, _) in zip(records, SPECS, strict=True):
        assert r["prefix_units"] == max(1, math.ceil(0.25 * m))
        assert r["is_sufficient"] is None and r["trace"] == [] and r["judge_calls"] == 0
        assert r["search"] == "ratio:0.25"


def test_threshold_moves_the_logprob_decision(tmp_path):
    # the scripted P(ENOUGH) is 0.98 where k >= t, else 0.02: a threshold of 0.99 rejects all
    records, _ = run(tmp_path, SPECS, judge="logprob", threshold=0.99)
    assert all(r["is_sufficient"] is False and r["prefix_units"] == r["total_units"] for r in records)


def test_bad_record_stops_the_run_after_writing_what_was_finished(tmp_path):
    inp = tmp_path / "in.jsonl"
    write_problems(inp, [(9, 3)] * 5)
    with open(inp, "a") as f:
        f.write('{"id": "bad", "question": "threshold 1"}\n')
        f.write(json.dumps({"id": "late", "question": "threshold 1", "long_cot": "Step 1."}) + "\n")
    out = tmp_path / "out.jsonl"
    config = TruncateConfig(model="scripted", backend="scripted")
    with pytest.raises(InputError, match="in.jsonl:6: field 'long_cot' is missing"):
        with StageIO(str(inp), str(out), stage="truncate", config=config.fingerprint(),
                     required={"question": ("question",), "cot": ("long_cot",)}) as io:
            run_truncate(io, ScriptedJudge(), config, max_active=2)
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [f"p{i}" for i in range(5)]


@settings(max_examples=25, deadline=None)
@given(specs=st.lists(st.tuples(st.integers(1, 300), st.integers(1, 301)), min_size=1, max_size=12),
       max_active=st.integers(1, 5))
def test_stage_property(tmp_path_factory, specs, max_active):
    tmp = tmp_path_factory.mktemp("prop")
    records, backend = run(tmp, specs, max_active=max_active)
    assert [r["prefix_units"] for r in records] == [expected_k(m, t) for m, t in specs]
    assert all(n <= max_active for _, n in backend.calls)
