"""`palign run`: the pipeline checked whole before any stage runs, and an incremental build.

A step's key covers its options, its inputs (an earlier step's key for a file that step
made, the content for a data file) and its model; a changed key reruns that step from
scratch and everything downstream. The end-to-end tests check the records each stage wrote,
not only the log lines. Stages run for real (hf backend, tiny model), on a few records.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from typer.testing import CliRunner

from palign_cli.cli import app
from palign_cli.commands.run import stage_commands
from palign_cli.errors import UsageError
from palign_cli.pipeline import plan, select
from palign_cli.pipeline_spec import load, options_of, render

runner = CliRunner()


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def write_pipeline(tmp_path, spec=None, **extra) -> Path:
    if spec is None:
        spec = {"run_dir": "run", "model": "m", "backend": "hf",
                "data": {"cots": str(ROOT / "data/demo/cots.jsonl"),
                         "benchmarks": {"aime24": str(ROOT / "data/demo/aime24.jsonl"),
                                        "amc23": str(ROOT / "data/demo/amc23.jsonl")}}}
    if not isinstance(spec, str):
        spec = {**spec, **extra}
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(spec) if not isinstance(spec, str) else spec)
    return p


@pytest.mark.parametrize(
    "stage,key,value,expected",
    [
        ("infer", "max_tokens", 64, ("--max-tokens", "64")),
        ("truncate", "save_curve", True, ("--save-curve",)),
        ("truncate", "save_curve", False, ()),
        ("train", "set", ["a=1", "b=2"], ("--set", "a=1", "--set", "b=2")),
        ("truncate", "search", "ratio:0.5", ("--search", "ratio:0.5")),
        ("align", "no_verify", True, ("--no-verify",)),
        ("align", "verify", False, ("--no-verify",)),
        ("align", "no_verify", False, ("--verify",)),
        ("infer", "enable_thinking", False, ("--disable-thinking",)),
        ("infer", "temperature", 0.6, ("--temperature", "0.6")),
        ("infer", "max_tokens", None, ()),
    ],
)
def test_yaml_values_become_the_commands_flags(stage, key, value, expected):
    assert render(options_of(stage_commands()[stage])[key], value) == expected


def test_plan_orders_stages_and_wires_files(tmp_path):
    spec, problems = load(str(write_pipeline(tmp_path, infer={"n": 2})), stage_commands())
    assert problems == []
    steps = plan(spec)
    assert [s.name for s in steps] == ["truncate", "align", "train", "infer:aime24", "infer:amc23", "eval"]
    run = tmp_path / "run"
    assert steps[1].argv[2] == str(run / "truncate.jsonl")
    infer = steps[3].argv
    assert infer[infer.index("--model") + 1] == str(run / "train" / "model")
    assert "--n" in infer and "2" in infer
    assert [s.name for s in select(steps, "infer", None)] == ["infer:aime24", "infer:amc23", "eval"]
    assert [s.name for s in select(steps, None, "align")] == ["truncate", "align"]
    with pytest.raises(UsageError, match="--from/--until"):
        select(steps, "distill", None)


def test_unknown_top_level_key_is_an_error(tmp_path):
    p = write_pipeline(tmp_path, trian={"epochs": 3})
    result = runner.invoke(app, ["run", str(p)])
    assert result.exit_code == 2
    assert "unknown key 'trian'" in result.output


# ------------------------------------------------------------------ checked before any stage

GOOD = {"run_dir": "run", "model": "m", "backend": "hf",
        "data": {"benchmarks": {"aime24": str(ROOT / "data/demo/aime24.jsonl")}}}


def _with(**changes):
    spec = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        spec[key] = value
    return spec


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("- a\n- b\n", "expected a mapping of pipeline keys (run_dir, model, data, ...), got a list"),
        ("hello\n", "expected a mapping of pipeline keys (run_dir, model, data, ...), got a string"),
        ("5\n", "expected a mapping of pipeline keys (run_dir, model, data, ...), got an integer"),
        ("", "is empty"),
        ("a: [\n", "not valid YAML"),
        (_with(data=["a.jsonl"]), "data: expected a mapping (cots, benchmarks), got a list"),
        (_with(data={"benchmarks": ["a.jsonl"]}), "data.benchmarks: expected a mapping of name: file, got a list"),
        (_with(data={"benchmarks": {"a": 5}}), "data.benchmarks.a: expected a file path or hf: spec, got an integer"),
        (_with(data={"benchmarks": {"a/b": str(ROOT / "data/demo/aime24.jsonl")}}), "data.benchmarks: name 'a/b'"),
        (_with(data={"cots": ["x"]}), "data.cots: expected a file path or hf: spec, got a list"),
        (_with(data={"cot": "x"}), "data: unknown key 'cot'"),
        (_with(data={}), "nothing to run: data has no cots and no benchmarks"),
        (_with(infer=5), "infer: expected a mapping of palign infer's options, got an integer"),
        (_with(infer=["n", 2]), "infer: expected a mapping of palign infer's options, got a list"),
        (_with(engine="float32"), "engine: expected a mapping of engine options, got a string"),
        (_with(run_dir=5), "run_dir: expected a directory path, got an integer"),
        (_with(model=["a"]), "model: expected a model path or name, got a list"),
        (_with(backend="gpu"), "backend: 'gpu' is not one of"),
        (_with(infer={"max_tokenz": 8}), "infer.max_tokenz: not an option of palign infer"),
        (_with(eval={"k": "1", "timout": 3}), "eval.timout: not an option of palign eval"),
        (_with(infer={"max_tokens": "many"}), "infer.max_tokens: Input should be a valid integer, unable to parse string as an integer (got 'many')"),
        (_with(infer={"max_tokens": 0}), "infer.max_tokens: Input should be greater than or equal to 1 (got '0')"),
        (_with(infer={"n": True}), "infer.n: --n takes a value, not true/false"),
        (_with(infer={"n": [1, 2]}), "infer.n: --n takes one value, got a list"),
        (_with(truncate={"save_curve": 3}, data={"cots": str(ROOT / "data/demo/cots.jsonl")}),
         "truncate.save_curve: --save-curve is a switch: true or false"),
        (_with(infer={"output": "x.jsonl"}), "infer.output: set by palign run"),
        (_with(eval={"overwrite": True}), "eval.overwrite: set by palign run"),
        (_with(engine={"dtyp": "float32"}), "engine.dtyp: not an option of palign infer"),
        (_with(data={"benchmarks": {"a": "nope.jsonl"}}), "data.benchmarks.a: no such file"),
        (_with(data={"cots": str(ROOT / "data/demo/cots.jsonl"), "benchmarks": GOOD["data"]["benchmarks"]},
               train={"merge": False}), "train.merge: false leaves no model in run_dir/train/model"),
        (_with(model="./no-model-here"), "model: no such model directory"),
        (_with(data={"cots": "missing_cots.jsonl"}), "data.cots: no such file"),
    ],
)
def test_pipeline_problems_are_one_line_each_exit_2(tmp_path, spec, expected):
    p = write_pipeline(tmp_path, spec)
    for extra in ([], ["--dry-run"]):
        result = runner.invoke(app, ["run", str(p), *extra])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert any(expected in line and str(p) in line for line in errors), result.output
    assert not (tmp_path / "run").exists()  # nothing ran, nothing was made


def test_dry_run_reports_every_problem_at_once(tmp_path):
    spec = _with(infer={"max_tokenz": 8, "n": "x"}, eval={"timout": 1},
                 data={"cots": "gone.jsonl", "benchmarks": {"a": "nope.jsonl"}})
    result = runner.invoke(app, ["run", str(write_pipeline(tmp_path, spec)), "--dry-run"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    for part in ("infer.max_tokenz", "infer.n", "eval.timout", "data.cots: no such file", "data.benchmarks.a: no such file"):
        assert sum(part in line for line in errors) == 1, result.output


def test_engine_and_flag_keys_follow_the_real_commands(tmp_path):
    """Keys are checked against each stage's own click command: a key that one engine stage
    lacks is named with that stage; a --x/--no-x switch takes false as --no-x."""
    spec = _with(engine={"dtype": "float32", "token_budget": 4096},
                 infer={"enable_thinking": False, "max_tokens": 8})
    result = runner.invoke(app, ["run", str(write_pipeline(tmp_path, spec)), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "--disable-thinking" in result.output and "--token-budget 4096" in result.output


def test_a_missing_data_file_fails_before_the_first_stage(tiny_model, tmp_path):
    spec = {"run_dir": "run", "model": tiny_model, "backend": "hf", "engine": {"dtype": "float32"},
            "data": {"cots": "cots.jsonl", "benchmarks": {"a": "gone.jsonl"}},
            "truncate": {"search": "ratio:0.5"}}
    (tmp_path / "cots.jsonl").write_text(json.dumps({"id": "c", "question": "q", "answer": "1", "long_cot": "A. B."}) + "\n")
    result = runner.invoke(app, ["run", str(write_pipeline(tmp_path, spec))])
    assert result.exit_code == 2
    assert "data.benchmarks.a: no such file" in result.output
    assert not (tmp_path / "run" / "truncate.jsonl").exists()


def test_from_and_until_that_select_nothing_is_an_error(tmp_path):
    result = runner.invoke(app, ["run", str(write_pipeline(tmp_path, GOOD)), "--until", "align"])
    assert result.exit_code == 2
    assert "nothing to run" in result.output


# ------------------------------------------------------------------ the incremental build

def palign_run(pipeline: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "palign_cli", "run", str(pipeline), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def decisions(stderr: str) -> dict[str, str]:
    """`== NAME: run: why` / `== NAME: skipped (...)` lines of `palign run`, as NAME -> 'run: why' / 'skip'."""
    found = {}
    for m in re.finditer(r"^== (\S+): (?:run: (.*)|skipped)", stderr, re.M):
        found[m.group(1)] = f"run: {m.group(2)}" if m.group(2) is not None else "skip"
    return found


def mini_cots(path: Path, n: int = 3) -> None:
    """A few real CoTs cut to their first paragraphs: truncation has units to choose from, fast."""
    rows = [json.loads(x) for x in (ROOT / "data/demo/cots.jsonl").read_text().splitlines()[:n]]
    with open(path, "w") as f:
        for r in rows:
            cot = "\n\n".join(r["long_cot"].split("\n\n")[:4])
            f.write(json.dumps({"id": r["id"], "question": r["question"], "answer": r["answer"], "long_cot": cot}) + "\n")


def mini_bench(path: Path, name: str, n: int = 2) -> None:
    rows = [json.loads(x) for x in (ROOT / f"data/demo/{name}.jsonl").read_text().splitlines()[:n]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_truncate_option_change_redoes_align_from_scratch(tiny_model, tmp_path):
    """Issue 10, defect 1: align used to resume on the old prefixes after truncate was redone."""
    mini_cots(tmp_path / "cots.jsonl")
    spec = {"run_dir": "run", "model": tiny_model, "backend": "hf", "engine": {"dtype": "float32"},
            "data": {"cots": "cots.jsonl"},
            "truncate": {"search": "ratio:0.3"},
            "align": {"n": 1, "max_tokens": 4, "no_verify": True}}
    p = write_pipeline(tmp_path, spec)
    palign_run(p, "--until", "align")
    run = tmp_path / "run"
    first = {r["id"]: r["prefix"] for r in lines(run / "truncate.jsonl")}
    spec["truncate"]["search"] = "ratio:0.6"
    p = write_pipeline(tmp_path, spec)
    proc = palign_run(p, "--until", "align")
    trunc = {r["id"]: r["prefix"] for r in lines(run / "truncate.jsonl")}
    aligned = lines(run / "align.jsonl")
    assert all(trunc[i] != first[i] for i in trunc)  # the change took effect
    assert sorted(r["id"] for r in aligned) == sorted(trunc)
    assert all(r["prefix"] == trunc[r["id"]] for r in aligned)  # align redone, not resumed
    assert decisions(proc.stderr) == {"truncate": "run: options changed (--search)",
                                      "align": "run: upstream step truncate redone"}
    again = palign_run(p, "--until", "align")
    assert decisions(again.stderr) == {"truncate": "skip", "align": "skip"}
    spec["align"]["max_tokens"] = 5
    dry = runner.invoke(app, ["run", str(write_pipeline(tmp_path, spec)), "--until", "align", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "truncate: skip\n" in dry.output and "align: run: options changed (--max-tokens)\n" in dry.output
    spec["truncate"]["search"] = "ratio:0.3"
    dry = runner.invoke(app, ["run", str(write_pipeline(tmp_path, spec)), "--until", "align", "--dry-run"])
    assert "truncate: run: options changed (--search)\n" in dry.output
    assert "align: run: options changed (--max-tokens); upstream step truncate redone\n" in dry.output
    assert dry.output.count("--overwrite") == 2  # both from scratch


@pytest.fixture
def bench_pipeline(tiny_model, tmp_path):
    """Two benchmarks, no CoTs (infer + eval only), on a copy of the tiny model we may rebuild."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    mini_bench(tmp_path / "a.jsonl", "aime24")
    mini_bench(tmp_path / "b.jsonl", "amc23")
    spec = {"run_dir": "run", "model": "./model", "backend": "hf", "engine": {"dtype": "float32"},
            "data": {"benchmarks": {"a": "a.jsonl", "b": "b.jsonl"}},
            "infer": {"n": 1, "max_tokens": 4, "batch_size": 1, "temperature": 1.0},
            "eval": {"k": "1", "workers": 1}}
    return tmp_path, spec


def outputs_of(path: Path) -> dict[str, list[str]]:
    return {r["id"]: r["outputs"] for r in lines(path)}


def test_incremental_build_reruns_exactly_the_changed_step_and_downstream(bench_pipeline):
    tmp_path, spec = bench_pipeline
    run = tmp_path / "run"
    p = write_pipeline(tmp_path, spec)

    palign_run(p)
    graded = lines(run / "graded.jsonl")
    assert len(graded) == 4

    # an infer option: both infer steps from scratch, eval follows
    spec["infer"]["max_tokens"] = 6
    p = write_pipeline(tmp_path, spec)
    proc = palign_run(p)
    assert decisions(proc.stderr) == {"infer:a": "run: options changed (--max-tokens)",
                                      "infer:b": "run: options changed (--max-tokens)",
                                      "eval": "run: upstream step infer:a redone; upstream step infer:b redone"}
    new_a, new_b = lines(run / "infer" / "a.jsonl"), lines(run / "infer" / "b.jsonl")
    tokens = [t for r in new_a + new_b for t in r["output_tokens"]]
    assert max(tokens) == 6 and all(t <= 6 for t in tokens)  # the old samples stopped at 4
    graded = {(g["source_file"], g["id"]): g["outputs"] for g in lines(run / "graded.jsonl")}
    infer_now = {(str(run / "infer" / f"{x}.jsonl"), i): o
                 for x in "ab" for i, o in outputs_of(run / "infer" / f"{x}.jsonl").items()}
    assert graded == infer_now  # eval graded the new samples, not the old ones

    # a data file: only its infer and eval
    a_before = (run / "infer" / "a.jsonl").stat().st_mtime_ns
    rows = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    rows[0]["question"] = "What is 2+2?"
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = palign_run(p)
    assert decisions(proc.stderr) == {"infer:a": "skip", "infer:b": f"run: input {tmp_path / 'b.jsonl'} changed",
                                      "eval": "run: upstream step infer:b redone"}
    assert (run / "infer" / "a.jsonl").stat().st_mtime_ns == a_before
    assert lines(run / "infer" / "b.jsonl")[0]["question"] == "What is 2+2?"
    assert {g["question"] for g in lines(run / "graded.jsonl")} >= {"What is 2+2?"}
    assert len(lines(run / "graded.jsonl")) == 4

    # an eval option: eval alone
    infer_files = {x: (run / "infer" / f"{x}.jsonl").read_bytes() for x in "ab"}
    spec["eval"]["k"] = "1,2"
    p = write_pipeline(tmp_path, spec)
    proc = palign_run(p)
    assert decisions(proc.stderr) == {"infer:a": "skip", "infer:b": "skip", "eval": "run: options changed (--k)"}
    assert {x: (run / "infer" / f"{x}.jsonl").read_bytes() for x in "ab"} == infer_files

    # the model rebuilt at the same path: every step that reads it, and downstream
    result = runner.invoke(app, ["tiny-model", str(tmp_path / "model"), "--seed", "7"])
    assert result.exit_code == 0, result.output
    before = {x: outputs_of(run / "infer" / f"{x}.jsonl") for x in "ab"}
    proc = palign_run(p)
    assert decisions(proc.stderr) == {"infer:a": "run: model changed", "infer:b": "run: model changed",
                                      "eval": "run: upstream step infer:a redone; upstream step infer:b redone"}
    after = {x: outputs_of(run / "infer" / f"{x}.jsonl") for x in "ab"}
    assert after != before and all(after[x].keys() == before[x].keys() for x in "ab")
    graded = {g["id"]: g["outputs"] for g in lines(run / "graded.jsonl")}
    assert graded == {**after["a"], **after["b"]}

    # nothing left: every step skipped, and still the table and the report
    proc = palign_run(p)
    assert decisions(proc.stderr) == {"infer:a": "skip", "infer:b": "skip", "eval": "skip"}
    assert "pass@1" in proc.stderr and "pass@2" in proc.stderr
    assert f"report: {run / 'report.html'}" in proc.stderr
    dry = runner.invoke(app, ["run", str(p), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.count(": skip\n") == 3



def test_an_interrupted_step_resumes_and_the_steps_after_it_run(bench_pipeline):
    """Ctrl-C in the middle of infer: the rerun resumes infer (its key is unchanged), keeps
    every finished record once, and then runs eval, which never ran."""
    tmp_path, spec = bench_pipeline
    mini_bench(tmp_path / "a.jsonl", "aime24", n=8)
    spec["data"]["benchmarks"] = {"a": "a.jsonl"}
    p = write_pipeline(tmp_path, spec)
    out = tmp_path / "run" / "infer" / "a.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "palign_cli", "run", str(p)], start_new_session=True,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 300
    while not (out.exists() and out.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C does: palign run and its stage
    assert proc.wait(timeout=60) == 130
    done = len(lines(out))
    assert 1 <= done < 8
    again = palign_run(p)
    assert decisions(again.stderr) == {"infer:a": "run: not finished", "eval": "run: never run"}
    assert f"{done} already done" in again.stderr
    ids = [r["id"] for r in lines(out)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 8
    assert len(lines(tmp_path / "run" / "graded.jsonl")) == 8


def test_a_fresh_start_that_never_began_starts_fresh_again(tmp_path):
    """A step redone from scratch that failed before the stage rewrote its output (the model
    did not load, say) must not resume next time: the old output is still there, made from
    the old inputs. Once the stage has rewritten it, an interrupted step resumes."""
    from palign_cli import provenance
    from palign_cli.pipeline import Source, Step

    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    data.write_text("{}\n")
    out.write_text("old\n")
    step = Step("infer", "infer:x", ("-i", str(data), "-o", str(out)), ("--n", "1"),
                (Source(str(data), "data", "data.benchmarks.x"),), None, (str(out),), str(out))
    first = provenance.decide(str(tmp_path), [step], [step])[0]
    assert (first.action, first.why) == ("fresh", "never run") and first.argv[-1] == "--overwrite"
    provenance.started(str(tmp_path), first)  # ... and the stage failed before touching out.jsonl
    again = provenance.decide(str(tmp_path), [step], [step])[0]
    assert (again.action, again.why, again.argv[-1]) == ("fresh", "not finished", "--overwrite")
    provenance.started(str(tmp_path), again)
    out.write_text("")  # the stage began: it rewrote its output, then was interrupted
    third = provenance.decide(str(tmp_path), [step], [step])[0]
    assert (third.action, third.why, third.build) == ("resume", "not finished", again.build)
    assert "--overwrite" not in third.argv
    provenance.started(str(tmp_path), third)
    provenance.finished(str(tmp_path), third)
    assert provenance.decide(str(tmp_path), [step], [step])[0].action == "skip"
    data.write_text("{}\n{}\n")
    changed = provenance.decide(str(tmp_path), [step], [step])[0]
    assert (changed.action, changed.why) == ("fresh", f"input {data} changed")
    assert changed.build != third.build


def test_a_second_run_on_the_same_run_dir_is_refused(tmp_path):
    from palign_cli import provenance

    p = write_pipeline(tmp_path, GOOD)
    with provenance.run_lock(str(tmp_path / "run")):  # another palign run, in the middle of a stage
        result = runner.invoke(app, ["run", str(p)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 'run'} is in use by another palign run (pid {os.getpid()}); wait for it to finish"
    assert not (tmp_path / "run" / ".palign" / "steps").exists()


def test_hf_inputs_are_known_by_spec_and_cached_snapshot(tmp_path, monkeypatch):
    """An hf: input is its spec plus the snapshot the hub cache holds (a dataset saved to disk:
    its files), so a new snapshot reruns the step that reads it."""
    from palign_cli import provenance
    from palign_cli.pipeline import Source, Step

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    ref = tmp_path / "hub" / "datasets--org--bench" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("aaaa\n")
    out = tmp_path / "out.jsonl"
    step = Step("infer", "infer:h", ("-i", "hf:org/bench@test", "-o", str(out)), (),
                (Source("hf:org/bench@test", "data", "data.benchmarks.h"),), None, (str(out),), str(out))
    first = provenance.decide(str(tmp_path), [step], [step])[0]
    assert first.components["inputs"] == {"hf:org/bench@test": {"spec": "hf:org/bench@test", "snapshot": "aaaa"}}
    provenance.started(str(tmp_path), first)
    out.write_text("{}\n")
    provenance.finished(str(tmp_path), first)
    assert provenance.decide(str(tmp_path), [step], [step])[0].action == "skip"
    ref.write_text("bbbb\n")
    changed = provenance.decide(str(tmp_path), [step], [step])[0]
    assert (changed.action, changed.why) == ("fresh", "input hf:org/bench@test changed")

    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "data-00000.arrow").write_bytes(b"rows")
    before = provenance.identity(Source(f"hf:{saved}", "data", "x"))
    (saved / "data-00000.arrow").write_bytes(b"other rows")
    assert provenance.identity(Source(f"hf:{saved}", "data", "x")) != before


def test_a_file_an_option_names_is_an_input(tmp_path):
    """infer's --prompt-template (or truncate's --judge-prompt, train's --config) is read by
    the stage: editing the file reruns the step, as editing a data file does."""
    from palign_cli import provenance

    template = tmp_path / "prompt.txt"
    template.write_text("Solve: {question}")
    spec = _with(infer={"prompt_template": str(template)})
    pipeline, problems = load(str(write_pipeline(tmp_path, spec)), stage_commands())
    assert problems == []
    step = plan(pipeline)[0]
    assert str(template) in [s.path for s in step.inputs]
    first = provenance.decide(str(tmp_path / "run"), [step], [step])[0]
    provenance.started(str(tmp_path / "run"), first)
    Path(step.outputs[0]).parent.mkdir(parents=True)
    Path(step.outputs[0]).write_text("{}\n")
    provenance.finished(str(tmp_path / "run"), first)
    template.write_text("Think, then solve: {question}")
    again = provenance.decide(str(tmp_path / "run"), [step], [step])[0]
    assert (again.action, again.why) == ("fresh", f"input {template} changed")
