"""Every prompt palign sends, in one place, each as the paper's released code wrote it.

Exact text matters: the student was (or will be) trained on these strings, and results are
only comparable to the paper's when the bytes match.
"""

from __future__ import annotations

import re
from pathlib import Path

# The paper's judge prompt, verbatim: it starts and ends with a newline.
JUDGE_PROMPT = """
You are a reasoning evaluator.

You are given a partial reasoning prefix extracted from a longer chain-of-thought.
Your task is to judge whether this prefix already contains the essential logical structure and key transformations needed to complete the solution.

- Reply "[ENOUGH]" if the prefix establishes the core reasoning steps such that the remaining reasoning is straightforward or routine.
- Reply "[NOT_ENOUGH]" if any crucial reasoning step is still missing, making it difficult to reliably complete the solution.

Reply with exactly one token: [ENOUGH] or [NOT_ENOUGH].

Question:
{question}

Partial reasoning:
{reasoning_part}
"""

# The candidate replies the logprob judge scores, in this order.
ENOUGH, NOT_ENOUGH = "[ENOUGH]", "[NOT_ENOUGH]"

# Align: the reference's user turn. No space before *Question*, as released.
ALIGN_PROMPT = (
    "Please continue from the draft and solve the problem step by step, and put your final "
    "answer within \\boxed{}. I will provide you with some prior knowledge as a draft to "
    "assist you in solving the question.*Question*:{question}\n*Prefix*:{prefix}"
)

# Train and infer share this, so the student is evaluated on the prompt it was trained on.
# The reference trained on instruction + "\n" + question but evaluated on instruction +
# question; palign uses the eval form for both.
SOLVE_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}.{question}"

# SFT target spellings: (open, close) around the prefix; "none" joins prefix and continuation.
MARKERS: dict[str, tuple[str, str]] = {
    "prefix": ("<Begin_of_Prefix>", "<End_of_Prefix>"),
    "draft": ("<Begin_of_Draft>", "<End_of_Draft>"),
    "think": ("<think>", "</think>"),
    "none": ("", ""),
}


def fill(template: str, **values: str) -> str:
    """Substitute `{name}` placeholders in one pass.

    Not str.format: CoTs are full of braces (\\frac{a}{b}); and one pass, so a question that
    happens to contain "{prefix}" is never substituted twice.
    """
    pattern = re.compile("|".join(re.escape("{" + k + "}") for k in values))
    return pattern.sub(lambda m: values[m.group(0)[1:-1]], template)


def judge_prompt(question: str, reasoning_part: str, template: str = JUDGE_PROMPT) -> str:
    return fill(template, question=question, reasoning_part=reasoning_part)


def align_prompt(question: str, prefix: str, template: str = ALIGN_PROMPT) -> str:
    return fill(template, question=question, prefix=prefix)


def solve_prompt(question: str, template: str = SOLVE_PROMPT) -> str:
    """The training instruction and the inference prompt: one function builds both."""
    return fill(template, question=question)


def sft_target(prefix: str, continuation: str, markers: str = "prefix") -> str:
    open_, close = MARKERS[markers]
    if markers == "none":
        return prefix + continuation
    return f"{open_}{prefix}{close}\n{continuation}"


def load_template(path: str | None, default: str, placeholders: tuple[str, ...]) -> str:
    """A user's prompt file, checked to hold the placeholders the stage fills in."""
    if path is None:
        return default
    from palign_cli.errors import UsageError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read prompt template ({exc.strerror})") from None
    missing = [p for p in placeholders if p not in text]
    if missing:
        raise UsageError(f"{path}: prompt template lacks {', '.join(missing)}")
    return text
