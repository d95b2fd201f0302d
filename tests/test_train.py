"""palign train: the LLaMA-Factory files it writes, and real llamafactory-cli runs on the tiny model.

The real tests need LLaMA-Factory's own environment (`make lf`): they find its CLI through
PALIGN_LLAMAFACTORY_CLI, PATH, or ./.venv-lf, and ask it questions through tests/lf/probe.py,
run by that environment's python (llamafactory is never imported into palign's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, data_file, require_real
from typer.testing import CliRunner

from palign_cli import llamafactory
from palign_cli.cli import app
from palign_cli.prompts import sft_target, solve_prompt
from palign_cli.stages.infer import InferConfig, build_prompt
from palign_cli.stages.train import END_OF_TURN_TOKENS, LengthCounter, parse_override

runner = CliRunner()
CPU = [  # a few real steps on 2 CPU cores; everything else stays the paper's default
    "--set", "use_cpu=true", "--set", "bf16=false", "--set", "max_steps=3", "--set", "save_steps=2",
    "--set", "per_device_train_batch_size=2", "--set", "gradient_accumulation_steps=1",
    "--set", "preprocessing_num_workers=1", "--set", "dataloader_num_workers=0", "--set", "logging_steps=1",
]


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def aligned_records(n: int = 12) -> list[dict]:
    """`palign align`-shaped records over real teacher CoTs: every fourth one not verified."""
    out = []
    for i, line in enumerate(data_file("teacher_cots_sample.jsonl").read_text().splitlines()[:n]):
        rec = json.loads(line)
        prefix = rec["long_cot"][: 200 + 40 * i]
        continuation = f"So the final answer is \\boxed{{{rec['answer']}}}."
        verified = i % 4 != 3
        rec.update(
            prefix=prefix,
            samples=[{"text": continuation, "finish_reason": "stop", "pred": rec["answer"], "verified": verified}],
            verified=verified,
            target=sft_target(prefix, continuation) if verified else None,
        )
        out.append(rec)
    return out


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def aligned(tmp_path) -> Path:
    return write_jsonl(tmp_path / "aligned.jsonl", aligned_records())


@pytest.fixture
def student(tiny_model, tmp_path) -> Path:
    """The tiny model under a path with a space, as users' paths often are."""
    dest = tmp_path / "student model"
    shutil.copytree(tiny_model, dest)
    return dest


def train(*args, env=None):
    return runner.invoke(app, ["train", *map(str, args)], env=env)


def dry(aligned, student, run_dir, *extra, env=None):
    return train("-i", aligned, "--model", student, "--run-dir", run_dir, "--dry-run", *extra, env=env)


# ---------------------------------------------------------------- files, without LLaMA-Factory


def test_instruction_is_exactly_the_prompt_infer_sends(aligned, student, tmp_path):
    result = dry(aligned, student, tmp_path / "run")
    assert result.exit_code == 0, result.output
    rows = lines(tmp_path / "run" / "sft.jsonl")
    verified = [r for r in lines(aligned) if r["verified"]]
    assert len(rows) == len(verified) == 9
    cfg = InferConfig(model="m", backend="hf")
    for row, rec in zip(rows, verified):
        assert row["instruction"] == build_prompt(rec["question"], cfg).chat()[0]["content"]
        assert row["instruction"] == solve_prompt(rec["question"])
        assert row == {"instruction": row["instruction"], "input": "", "output": rec["target"]}


def test_dry_run_writes_lf_files_with_absolute_paths_and_the_papers_settings(aligned, student, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    no_cli = {"PALIGN_LLAMAFACTORY_CLI": "", "PATH": str(tmp_path)}
    result = dry(aligned.name, student.name, "runs/r1", env=no_cli)
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "r1"
    cfg = yaml.safe_load((run / "train.yaml").read_text())
    assert cfg["model_name_or_path"] == str(student)
    assert cfg["dataset_dir"] == str(run) and cfg["output_dir"] == str(run / "ckpt")
    assert cfg["dataset"] == "palign_sft"
    paper = {"stage": "sft", "do_train": True, "finetuning_type": "lora", "lora_rank": 16, "lora_alpha": 16,
             "lora_dropout": 0.05, "lora_target": "all", "num_train_epochs": 3.0, "learning_rate": 5e-5,
             "lr_scheduler_type": "cosine", "warmup_ratio": 0.1}
    assert {k: cfg[k] for k in paper} == paper
    assert cfg["per_device_train_batch_size"] * cfg["gradient_accumulation_steps"] == 32
    assert "template" not in cfg  # LLaMA-Factory parses the student's own chat template
    info = json.loads((run / "dataset_info.json").read_text())
    assert info["palign_sft"]["file_name"] == "sft.jsonl" and info["palign_sft"]["formatting"] == "alpaca"
    # stdout: the commands, runnable as printed; stderr: the accounting
    assert result.stdout.splitlines() == [
        f"cd {run} && llamafactory-cli train train.yaml",
        f"cd {run} && llamafactory-cli export export.yaml",
    ]
    assert "12 records, 9 used, 3 not verified, 0 over cutoff_len 16384" in result.stderr
    export = yaml.safe_load((run / "export.yaml").read_text())
    assert export["adapter_name_or_path"] == str(run / "ckpt") and export["export_dir"] == str(run / "model")


def test_full_finetuning_has_no_lora_keys_and_no_merge(aligned, student, tmp_path):
    result = dry(aligned, student, tmp_path / "run", "--finetuning-type", "full")
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((tmp_path / "run" / "train.yaml").read_text())
    assert cfg["finetuning_type"] == "full" and not any(k.startswith("lora_") for k in cfg)
    assert cfg["output_dir"] == str(tmp_path / "run" / "model")  # full weights are the student
    assert len(result.stdout.splitlines()) == 1 and "export" not in result.stdout


@pytest.mark.parametrize("item,expected", [
    ("learning_rate=1e-4", ("learning_rate", 1e-4)),
    ("learning_rate=5.0e-5", ("learning_rate", 5e-5)),
    ("num_train_epochs=1", ("num_train_epochs", 1)),
    ("bf16=false", ("bf16", False)),
    ("lora_target=q_proj,v_proj", ("lora_target", "q_proj,v_proj")),
    ("report_to=none", ("report_to", "none")),
    ("max_grad_norm=", ("max_grad_norm", None)),
    ("default_system=a=b", ("default_system", "a=b")),
])
def test_set_values_are_yaml_typed(item, expected):
    assert parse_override(item) == expected


def test_set_overrides_any_key_after_the_flags(aligned, student, tmp_path):
    result = dry(aligned, student, tmp_path / "run", "--cutoff-len", "4096", "--set", "cutoff_len=2048",
                 "--set", "learning_rate=1e-4", "--set", "new_key=7", "--set", "deepspeed=ds z3.json",
                 "--deepspeed", write_jsonl(tmp_path / "x.json", []))
    assert result.exit_code == 2  # the --set deepspeed file does not exist
    assert "ds z3.json: no such file" in result.stderr
    result = dry(aligned, student, tmp_path / "run", "--cutoff-len", "4096", "--set", "cutoff_len=2048",
                 "--set", "learning_rate=1e-4", "--set", "new_key=7")
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((tmp_path / "run" / "train.yaml").read_text())
    assert (cfg["cutoff_len"], cfg["learning_rate"], cfg["new_key"]) == (2048, 1e-4, 7)


@pytest.mark.parametrize("item,message", [
    ("output_dir=/tmp/x", "--set output_dir: palign sets this key; use --run-dir"),
    ("model_name_or_path=m", "use --model"),
    ("learning_rate", "--set expects KEY=VALUE, got 'learning_rate'"),
    ("cutoff_len=long", "cutoff_len must be a positive integer"),
    ("finetuning_type=qlora", "finetuning_type must be lora, full, freeze or oft"),
])
def test_bad_set_is_a_usage_error(aligned, student, tmp_path, item, message):
    result = dry(aligned, student, tmp_path / "run", "--set", item)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_deepspeed_path_is_absolute_and_forces_torchrun(aligned, student, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds.json").write_text('{"zero_optimization": {"stage": 3}}')
    env = {"NNODES": "2", "NODE_RANK": "1", "PALIGN_LLAMAFACTORY_CLI": "", "PATH": str(tmp_path)}
    result = dry(aligned, student, "run", "--deepspeed", "ds.json", env=env)
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((tmp_path / "run" / "train.yaml").read_text())
    assert cfg["deepspeed"] == str(tmp_path / "ds.json")
    # node 1 of 2 trains; the adapter is merged once, on node 0
    assert result.stdout.splitlines() == [f"cd {tmp_path / 'run'} && FORCE_TORCHRUN=1 llamafactory-cli train train.yaml"]
    assert "FORCE_TORCHRUN=1" in result.stderr and "NNODES=2" in result.stderr
    assert train("-i", aligned, "--model", student, "--run-dir", "run", "--dry-run", "--deepspeed", "nope.json").exit_code == 2


def test_template_is_checked_against_llamafactorys_names(aligned, student, tmp_path):
    ok = dry(aligned, student, tmp_path / "run", "--template", "qwen", env={"PALIGN_LLAMAFACTORY_CLI": ""})
    assert ok.exit_code == 0, ok.output
    assert yaml.safe_load((tmp_path / "run" / "train.yaml").read_text())["template"] == "qwen"
    bad = dry(aligned, student, tmp_path / "run", "--template", "qwen25")
    assert bad.exit_code == 2
    assert "--template 'qwen25' is not a LLaMA-Factory template" in bad.stderr and "did you mean" in bad.stderr


def test_template_names_are_read_from_the_installed_source(tmp_path):
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "llamafactory" / "data"
    site.mkdir(parents=True)
    (site / "template.py").write_text(
        'def register_template(name, **kw):\n    """\n    register_template(\n        name="custom",\n    )\n    """\n\n'
        'register_template(\n    name="brand_new",\n    format_user=None,\n)\n\nregister_template(name="qwen")\n'
    )
    cli = tmp_path / "venv" / "bin" / "llamafactory-cli"
    cli.parent.mkdir()
    cli.write_text(f"#!{tmp_path / 'venv' / 'bin' / 'python3'}\n")
    names, source = llamafactory.template_names(cli)
    assert names == {"brand_new", "qwen"} and source.endswith("template.py")
    names, source = llamafactory.template_names(None)
    assert "qwen" in names and "brand_new" not in names and "0.9.5" in source


def test_rows_over_cutoff_len_are_dropped_and_counted(aligned, student, tmp_path):
    from transformers import AutoTokenizer

    count = LengthCounter(AutoTokenizer.from_pretrained(student))
    assert dry(aligned, student, tmp_path / "all").exit_code == 0
    rows = lines(tmp_path / "all" / "sft.jsonl")
    sizes = sorted(count(rows))
    cutoff = sizes[4]  # keeps the 5 shortest (a row exactly at the limit is kept)
    result = dry(aligned, student, tmp_path / "run", "--cutoff-len", cutoff)
    assert result.exit_code == 0, result.output
    kept = lines(tmp_path / "run" / "sft.jsonl")
    assert len(kept) == 5 and max(count(kept)) == cutoff
    assert f"12 records, 5 used, 3 not verified, 4 over cutoff_len {cutoff}" in result.stderr


def test_no_verified_record_is_an_error(student, tmp_path):
    recs = aligned_records(4)
    for r in recs:
        r["verified"] = False
    inp = write_jsonl(tmp_path / "none.jsonl", recs)
    result = dry(inp, student, tmp_path / "run")
    assert result.exit_code == 2
    assert f"error: {inp}: no usable record (4 records, 0 used, 4 not verified, 0 over cutoff_len 16384)" in result.stderr
    assert not (tmp_path / "run" / "sft.jsonl").exists() and not (tmp_path / "run" / "train.yaml").exists()


def test_unchecked_records_only_on_request(student, tmp_path):
    recs = aligned_records(4)
    for r in recs:
        r["verified"] = None  # palign align --no-verify
        r["target"] = sft_target(r["prefix"], "done")
    inp = write_jsonl(tmp_path / "unchecked.jsonl", recs)
    result = dry(inp, student, tmp_path / "run")
    assert result.exit_code == 2 and "4 never checked" in result.stderr
    result = dry(inp, student, tmp_path / "run", "--include-unchecked")
    assert result.exit_code == 0, result.output
    assert len(lines(tmp_path / "run" / "sft.jsonl")) == 4


def test_unchecked_without_a_finished_sample_counted_once(student, tmp_path):
    """--no-verify records with no finished sample: with --include-unchecked they are neither
    'never checked' (they were taken in) nor 'not verified': one count, said once."""
    recs = aligned_records(3)
    for r in recs:
        r["verified"], r["target"] = None, None
    inp = write_jsonl(tmp_path / "unfinished.jsonl", recs)
    result = dry(inp, student, tmp_path / "run", "--include-unchecked")
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: {inp}: no usable record (3 records, 0 used, 0 not verified, "
                                     "3 never checked and with no finished sample, 0 over cutoff_len 16384)")


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r.update(target=""), ":2: field 'target' is missing or empty in a verified record"),
    (lambda r: r.pop("verified"), ":2: field 'verified' is missing (is this `palign align` output?)"),
    (lambda r: r.update(verified="yes"), ":2: field 'verified' must be true, false or null"),
    (lambda r: r.pop("question"), ":2: field 'question|problem' is missing"),
])
def test_bad_records_name_file_line_and_field(student, tmp_path, mutate, message):
    recs = aligned_records(3)
    mutate(recs[1])
    inp = write_jsonl(tmp_path / "bad.jsonl", recs)
    result = dry(inp, student, tmp_path / "run")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {inp}{message}"


def test_missing_model_input_and_cli_are_usage_errors(aligned, student, tmp_path):
    result = dry(aligned, tmp_path / "no-such-model", tmp_path / "run")
    assert result.exit_code == 2 and "no-such-model: no such directory" in result.stderr
    result = dry(tmp_path / "missing.jsonl", student, tmp_path / "run")
    assert result.exit_code == 2 and "missing.jsonl: no such file" in result.stderr
    args = ["-i", aligned, "--model", student, "--run-dir", tmp_path / "run"]
    result = train(*args, "--llamafactory-cli", tmp_path / "nope" / "llamafactory-cli")
    assert result.exit_code == 2
    assert "--llamafactory-cli: " in result.stderr and "is not an executable file" in result.stderr
    result = train(*args, env={"PALIGN_LLAMAFACTORY_CLI": "", "PATH": str(tmp_path)})
    assert result.exit_code == 2
    assert "llamafactory-cli not found on PATH; install LLaMA-Factory" in result.stderr
    assert not (tmp_path / "run").exists()  # nothing written before the missing CLI is found


def fake_cli(tmp_path: Path, rc: int) -> Path:
    """A stand-in llamafactory-cli that records how it was started (for process mechanics only)."""
    cli = tmp_path / "fake bin" / "llamafactory-cli"
    cli.parent.mkdir()
    cli.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "print('fake trainer says hi', flush=True)\n"
        "with open(os.environ['FAKE_LOG'], 'a') as f:\n"
        "    f.write(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'force': os.environ.get('FORCE_TORCHRUN'),"
        " 'nnodes': os.environ.get('NNODES')}) + '\\n')\n"
        f"sys.exit({rc})\n"
    )
    cli.chmod(0o755)
    return cli


@pytest.mark.parametrize("rc", [0, 3])
def test_child_runs_from_an_argument_list_and_its_status_is_ours(aligned, student, tmp_path, rc):
    cli, log = fake_cli(tmp_path, rc), tmp_path / "calls.jsonl"
    run = tmp_path / "run $(touch pwned); x"
    ds = tmp_path / "ds.json"
    ds.write_text("{}")
    result = train("-i", aligned, "--model", student, "--run-dir", run, "--llamafactory-cli", cli,
                   "--deepspeed", ds, env={"FAKE_LOG": str(log), "NNODES": "1"})
    assert result.exit_code == rc, result.output
    assert "fake trainer says hi" in result.stderr and "fake trainer says hi" in (run / "train.log").read_text()
    calls = lines(log)
    # a fake trainer writes no checkpoint, so after success comes the merge; after failure, nothing
    expected = [["train", "train.yaml"], ["export", "export.yaml"]] if rc == 0 else [["train", "train.yaml"]]
    assert [c["argv"] for c in calls] == expected
    assert all(c["cwd"] == str(run) and c["force"] == "1" and c["nnodes"] == "1" for c in calls)
    assert not (tmp_path / "pwned").exists()
    if rc:
        assert f"llamafactory-cli exited with status {rc}" in result.stderr


def test_resume_refuses_other_settings_and_resumes_from_the_last_checkpoint(aligned, student, tmp_path):
    run = tmp_path / "run"
    assert dry(aligned, student, run).exit_code == 0
    for step, complete in ((2, True), (4, True), (6, False)):  # checkpoint-6: a save cut short
        (run / "ckpt" / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (run / "ckpt" / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    changed = dry(aligned, student, run, "--set", "learning_rate=1e-4")
    assert changed.exit_code == 2
    assert "was trained with a different config (learning_rate: 5e-05 -> 0.0001)" in changed.stderr
    fewer = write_jsonl(tmp_path / "fewer.jsonl", aligned_records(8))
    assert "different training data" in dry(fewer, student, run).stderr
    same = dry(aligned, student, run)
    assert same.exit_code == 0, same.output
    assert "resuming from checkpoint-4" in same.stderr
    assert yaml.safe_load((run / "train.yaml").read_text())["resume_from_checkpoint"] == str(run / "ckpt" / "checkpoint-4")
    fresh = dry(aligned, student, run, "--set", "learning_rate=1e-4", "--overwrite")
    assert fresh.exit_code == 0, fresh.output
    assert "resume_from_checkpoint" not in yaml.safe_load((run / "train.yaml").read_text())
    assert (run / "ckpt" / "checkpoint-4").exists()  # a dry run deletes nothing


def test_a_rebuilt_base_model_is_not_resumed(aligned, student, tmp_path):
    """Issue 10: the base model rebuilt at the same path is another model; a checkpoint of the
    old one is not resumed on it."""
    from palign_cli.tiny_model import build_tiny_model

    run = tmp_path / "run"
    assert dry(aligned, student, run).exit_code == 0
    (run / "ckpt" / "checkpoint-2").mkdir(parents=True)
    (run / "ckpt" / "checkpoint-2" / "trainer_state.json").write_text("{}")
    build_tiny_model(student, seed=7)
    result = dry(aligned, student, run)
    assert result.exit_code == 2
    assert "was trained with another version of the base model" in result.stderr
    assert dry(aligned, student, run, "--overwrite").exit_code == 0


def test_finished_run_is_not_trained_again(aligned, student, tmp_path):
    run = tmp_path / "run"
    cli = fake_cli(tmp_path, 0)
    args = ["-i", aligned, "--model", student, "--run-dir", run, "--llamafactory-cli", cli, "--finetuning-type", "full"]
    assert train(*args, env={"FAKE_LOG": str(tmp_path / "log1")}).exit_code == 0
    (run / "model").mkdir()
    (run / "model" / "train_results.json").write_text("{}")
    again = train(*args, env={"FAKE_LOG": str(tmp_path / "log2")})
    assert again.exit_code == 0, again.output
    assert f"{run} is already trained; student model: {run / 'model'}" in again.stderr
    assert not (tmp_path / "log2").exists()


# ---------------------------------------------------------------- real LLaMA-Factory


@pytest.fixture(scope="module")
def lf_cli() -> Path:
    cli = llamafactory.find_cli(None)
    if cli is None and (ROOT / ".venv-lf" / "bin" / "llamafactory-cli").exists():
        cli = ROOT / ".venv-lf" / "bin" / "llamafactory-cli"
    if cli is None:
        require_real("llamafactory-cli", "set PALIGN_LLAMAFACTORY_CLI (make lf installs it in .venv-lf)")
    return cli


def lf_python(cli: Path) -> str:
    return cli.read_text().splitlines()[0][2:].strip()


@pytest.fixture(scope="module")
def lf_answers(lf_cli, tiny_model, tmp_path_factory):
    """One LLaMA-Factory import answers every question (it takes ~15 s on 2 cores)."""
    tmp = tmp_path_factory.mktemp("lf probe")
    student = tmp / "student model"
    shutil.copytree(tiny_model, student)
    aligned = write_jsonl(tmp / "aligned.jsonl", aligned_records())
    yamls = {}
    for name, extra in {
        "lora": ["--set", "use_cpu=true", "--set", "bf16=false"],
        "full": ["--finetuning-type", "full", "--set", "use_cpu=true", "--set", "bf16=false", "--template", "qwen"],
    }.items():
        result = dry(aligned, student, tmp / f"run {name}", *extra, env={"PALIGN_LLAMAFACTORY_CLI": str(lf_cli)})
        assert result.exit_code == 0, result.output
        yamls[name] = str(tmp / f"run {name}" / "train.yaml")
    from transformers import AutoTokenizer

    rows = lines(tmp / "run lora" / "sft.jsonl")
    request = {"yamls": yamls, "model": str(student), "rows": rows}
    (tmp / "request.json").write_text(json.dumps(request))
    proc = subprocess.run(
        [lf_python(lf_cli), str(ROOT / "tests" / "lf" / "probe.py"), str(tmp / "request.json"), str(tmp / "answer.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads((tmp / "answer.json").read_text())
    answer["palign_lengths"] = LengthCounter(AutoTokenizer.from_pretrained(student))(rows)
    answer["yamls"] = yamls
    return answer


def test_yaml_round_trips_through_llamafactorys_own_parser(lf_answers):
    lora, full = lf_answers["parsed"]["lora"], lf_answers["parsed"]["full"]
    assert lora["ok"], lora
    assert full["ok"], full
    assert (lora["finetuning_type"], lora["lora_rank"], lora["lora_alpha"], lora["lora_dropout"]) == ("lora", 16, 16, 0.05)
    assert lora["lora_target"] == ["all"] and lora["learning_rate"] == 5e-5 and lora["num_train_epochs"] == 3.0
    assert (lora["lr_scheduler_type"], lora["warmup_ratio"]) == ("cosine", 0.1)
    assert lora["per_device_train_batch_size"] * lora["gradient_accumulation_steps"] == 32
    assert lora["dataset"] == ["palign_sft"] and lora["template"] is None
    assert lora["model_name_or_path"].endswith("student model") and lora["output_dir"].endswith("run lora/ckpt")
    assert (full["finetuning_type"], full["template"]) == ("full", "qwen")


def test_bundled_template_names_are_llamafactorys(lf_answers, lf_cli):
    real = set(lf_answers["templates"])
    assert llamafactory.bundled_template_names() == real
    names, source = llamafactory.template_names(lf_cli)
    assert names == real and source.endswith(os.path.join("llamafactory", "data", "template.py"))


def test_length_count_is_llamafactorys(lf_answers):
    # With one tokenizer, palign's count (rendered prompt + reply + end of turn) is exactly the
    # length LLaMA-Factory's template gives the row.
    counts = lf_answers["lengths"]
    assert len(counts) == 9
    assert [c["prompt"] + c["reply"] + END_OF_TURN_TOKENS for c in counts] == [c["lf"] for c in counts]
    # Across the two environments: the tiny model's tokenizer.json loads as another class under
    # palign's newer transformers, which splits a little finer. palign may only count more (drop
    # a borderline row), never fewer (which would let LLaMA-Factory cut a target short).
    ours, theirs = lf_answers["palign_lengths"], [c["lf"] for c in counts]
    assert all(t <= o <= t * 1.05 + 2 for o, t in zip(ours, theirs)), (ours, theirs)


def generate(model_dir: Path, tmp_path: Path) -> list[dict]:
    questions = write_jsonl(tmp_path / "q.jsonl", [{"id": "q1", "question": "What is 1+1?"}])
    out = tmp_path / "gen.jsonl"
    result = runner.invoke(app, ["infer", "--backend", "hf", "--model", str(model_dir), "-i", str(questions),
                                 "-o", str(out), "--n", "2", "--max-tokens", "6", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    return lines(out)


def test_real_lora_training_merges_a_model_infer_loads(lf_cli, aligned, student, tmp_path):
    run = tmp_path / "run lora"
    args = ["-i", aligned, "--model", student, "--run-dir", run, "--llamafactory-cli", lf_cli, *CPU]
    result = train(*args)
    assert result.exit_code == 0, result.output[-3000:]
    assert (run / "ckpt" / "checkpoint-3" / "adapter_model.safetensors").is_file()
    assert (run / "ckpt" / "train_results.json").is_file()
    assert (run / "model" / "model.safetensors").is_file()
    assert "Fine-tuning method: LoRA" in (run / "train.log").read_text()
    [rec] = generate(run / "model", tmp_path)
    assert len(rec["outputs"]) == 2 and all(t > 0 for t in rec["output_tokens"])
    again = train(*args)
    assert again.exit_code == 0 and "is already trained" in again.stderr


def test_real_full_training_resumes_from_its_last_checkpoint(lf_cli, aligned, student, tmp_path):
    run = tmp_path / "run full"
    args = ["-i", aligned, "--model", student, "--run-dir", run, "--llamafactory-cli", lf_cli,
            "--finetuning-type", "full", *CPU]
    result = train(*args)
    assert result.exit_code == 0, result.output[-3000:]
    ckpt = run / "model"  # full fine-tuning: the checkpoints live inside the student's directory
    assert (ckpt / "checkpoint-2").is_dir() and (ckpt / "model.safetensors").is_file()
    # Make it look like the run died after saving checkpoint-2.
    shutil.rmtree(ckpt / "checkpoint-3")
    for f in ckpt.iterdir():
        if f.is_file():
            f.unlink()
    resumed = train(*args)
    assert resumed.exit_code == 0, resumed.output[-3000:]
    assert "resuming from checkpoint-2" in resumed.stderr
    assert "Resuming training from checkpoint with epoch 0 and global step 2" in resumed.stderr
    assert (ckpt / "checkpoint-3").is_dir() and (ckpt / "train_results.json").is_file()
    [rec] = generate(ckpt, tmp_path)
    assert len(rec["outputs"]) == 2


def test_llamafactory_failure_exit_status_is_passed_on(lf_cli, aligned, student, tmp_path):
    result = train("-i", aligned, "--model", student, "--run-dir", tmp_path / "run", "--llamafactory-cli", lf_cli,
                   *CPU, "--set", "no_such_key=1")
    assert result.exit_code == 1, result.output[-3000:]
    assert "no_such_key" in result.stderr and "llamafactory-cli exited with status 1" in result.stderr


def test_dry_run_loads_no_torch(aligned, student, tmp_path):
    """`palign train --dry-run` counts tokens with the student's tokenizer, never importing torch."""
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['palign', 'train', '-i', {str(aligned)!r}, '--model', {str(student)!r}, "
        f"'--run-dir', {str(tmp_path / 'run')!r}, '--dry-run']\n"
        "try:\n    runpy.run_module('palign_cli', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
        "print('torch' in sys.modules, code, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stderr.strip().splitlines()[-1] in ("False 0", "False None"), out.stderr
    assert (tmp_path / "run" / "train.yaml").is_file()
