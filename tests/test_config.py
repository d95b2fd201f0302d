"""The resume fingerprint: an option added since an output was written does not refuse it."""

from __future__ import annotations

import json

from palign_cli.config import config_diff
from palign_cli.records import StageIO
from palign_cli.stages.infer import InferConfig


def test_a_key_only_the_current_config_has_agrees_at_its_default():
    defaults = {"sampling.min_p": 0.0, "n": 1}
    assert config_diff({"n": 1}, {"n": 1, "sampling.min_p": 0.0}, defaults) == ""
    assert config_diff({"n": 1}, {"n": 1, "sampling.min_p": 0.1}, defaults) == "min_p: <unset> -> 0.1"
    assert config_diff({"n": 1, "old": 3}, {"n": 1}, defaults) == "old: 3 -> <unset>"
    assert config_diff({"sampling.temperature": 0.6}, {"sampling.temperature": 0.9}) == "temperature: 0.6 -> 0.9"


def test_an_output_written_before_an_option_existed_resumes(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('{"id": "a", "question": "q?"}\n{"id": "b", "question": "r?"}\n')
    cfg = InferConfig.make(model="m", backend="hf")
    defaults = type(cfg).defaults()
    stored = {k: v for k, v in cfg.fingerprint().items() if k != "sampling.top_k"}  # as an older palign wrote it
    out.write_text('{"id": "a", "question": "q?", "outputs": ["x"]}\n')
    (tmp_path / "out.jsonl.meta.json").write_text(json.dumps({"stage": "infer", "config": stored, "model": None}))
    with StageIO(str(inp), str(out), stage="infer", config=cfg.fingerprint(), defaults=defaults,
                 required={"question": ("question",)}) as io:
        assert [r.id for r in io.pending()] == ["b"]
