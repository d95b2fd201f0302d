"""Chat prompts to text and tokens with the model's own tokenizer, shared by hf and vllm.

Rendering in one place means the hf and vllm backends feed the engine the exact same token
ids, which is what makes their greedy outputs and scores comparable.
"""

from __future__ import annotations

from typing import Any

from palign_cli.backends.base import Prompt


class ChatRenderer:
    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        template = getattr(tokenizer, "chat_template", None) or ""
        self.has_template = bool(template)
        self.knows_thinking = "enable_thinking" in template

    def render(self, prompt: Prompt) -> str:
        """The full text the model sees before it writes: template + generation prompt + prefill."""
        if prompt.raw is not None:
            return prompt.raw + prompt.prefill
        if not self.has_template:
            # A base model without a chat template: plain concatenation of the turns.
            return "\n\n".join(c for _, c in prompt.messages) + "\n\n" + prompt.prefill
        kwargs: dict[str, Any] = {}
        if self.knows_thinking and prompt.enable_thinking is not None:
            kwargs["enable_thinking"] = prompt.enable_thinking
        text = self.tokenizer.apply_chat_template(
            prompt.chat(), tokenize=False, add_generation_prompt=True, **kwargs
        )
        return text + prompt.prefill

    def encode(self, text: str) -> list[int]:
        # The template already wrote any special tokens it wants; never add a second BOS.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        return self.encode(self.render(prompt))

    def encode_with_reply(self, prompt: Prompt, reply: str) -> tuple[list[int], list[int]]:
        """Token ids of the prompt and of a candidate reply, split where the model would write.

        The reply is tokenized in context (prompt + reply together), as the model would see it
        after writing it; if BPE merged across the boundary, the reply is tokenized alone.
        """
        rendered = self.render(prompt)
        prompt_ids = self.encode(rendered)
        full = self.encode(rendered + reply)
        if full[: len(prompt_ids)] == prompt_ids:
            return prompt_ids, full[len(prompt_ids):]
        return prompt_ids, self.encode(reply)

    def eos_ids(self) -> set[int]:
        ids = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids


class RenderedTokens:
    """Exact token counts for engines that render prompts themselves through a ChatRenderer."""

    renderer: ChatRenderer

    def count_tokens(self, prompt: Prompt) -> int | None:
        return len(self.renderer.encode_prompt(prompt))

    def count_text(self, text: str) -> int | None:
        return len(self.renderer.encode(text))
