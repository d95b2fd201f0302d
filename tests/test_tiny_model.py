"""The offline tiny model and the chat rendering every local engine shares."""

from __future__ import annotations

import json
import time

from typer.testing import CliRunner

from palign_cli.backends.base import Prompt
from palign_cli.backends.template import ChatRenderer
from palign_cli.cli import app


def test_cli_builds_a_loadable_model_in_seconds(tmp_path):
    t = time.perf_counter()
    result = CliRunner().invoke(app, ["tiny-model", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - t < 60
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["head_dim"] == 64 and config["max_position_embeddings"] >= 16384
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    text = "Let $x = 3.14$. Then \\frac{a}{b} … 東京 🙂"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text  # byte-level: lossless


def test_renderer_passes_enable_thinking_only_to_templates_that_know_it(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    r = ChatRenderer(tok)
    assert r.knows_thinking
    on = r.render(Prompt.user("hi"))
    off = r.render(Prompt.user("hi", enable_thinking=False))
    assert on == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert off == on + "<think>\n\n</think>\n\n"
    assert r.render(Prompt.user("hi", prefill="Draft: x")) == on + "Draft: x"
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    plain = ChatRenderer(tok)
    assert not plain.knows_thinking
    assert plain.render(Prompt.user("hi", enable_thinking=False)) == "hi"


def test_reply_tokens_are_split_where_the_model_writes(tiny_model):
    from transformers import AutoTokenizer

    r = ChatRenderer(AutoTokenizer.from_pretrained(tiny_model))
    prompt_ids, reply_ids = r.encode_with_reply(Prompt.user("q"), "[ENOUGH]")
    assert r.tokenizer.decode(reply_ids) == "[ENOUGH]"
    assert prompt_ids == r.encode_prompt(Prompt.user("q"))
