"""A tiny random Qwen2 model built offline, for tests, benchmarks and the demo.

Nothing here reaches a model hub: the tokenizer is a byte-level BPE trained in a second on a
built-in corpus, the weights are random. Its judgments are noise; it exists so the real
engines (transformers, vLLM) run the real code paths on a laptop CPU. head_dim is 64 because
vLLM's CPU attention kernels require it; 16k positions so real long CoTs fit.
"""

from __future__ import annotations

from pathlib import Path

# Qwen-style ChatML with Qwen3's `enable_thinking` switch, so the thinking path is exercised.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = r"""
You are a reasoning evaluator. Reply [ENOUGH] or [NOT_ENOUGH]. Question: Partial reasoning:
Please reason step by step, and put your final answer within \boxed{}.
Please continue from the draft and solve the problem step by step. *Question*: *Prefix*:
<Begin_of_Prefix> <End_of_Prefix> <think> </think> Okay, so I need to find the value of x.
Let me think. First, we compute the sum: $a + b = 12$, so $\frac{a}{b} = \sqrt{2}$.
Therefore the answer is \boxed{42}. Wait, let me check that again. Hmm, that seems right.
The triangle has sides 3, 4 and 5; its area is 6. 3.14159 is close to \pi.
\begin{align} x^2 - 5x + 6 &= 0 \\ (x-2)(x-3) &= 0 \end{align}
Alternatively, maybe I should consider the case when n is even. So the probability is 1/2.
0123456789 + - * / = ( ) [ ] { } ^ _ \\ , . ; : ! ? ' " < > | & % $ # @ ~ `
"""


def build_tokenizer(vocab_size: int = 2048):
    """A byte-level BPE with ChatML special tokens, wrapped as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4 + _CORPUS.split("\n"), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 16384
    return fast


def build_tiny_model(
    out_dir: str | Path,
    *,
    hidden_size: int = 128,
    layers: int = 2,
    max_positions: int = 16384,
    seed: int = 0,
) -> Path:
    """Write a tiny random Qwen2 model and its tokenizer to `out_dir`; returns the path."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=hidden_size // 64,
        num_key_value_heads=hidden_size // 64,
        head_dim=64,
        max_position_embeddings=max_positions,
        rope_theta=10000.0,
        # Untied: with tied random weights the model predicts its last input token forever.
        tie_word_embeddings=False,  # tied random weights repeat the last input token forever
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
        repetition_penalty=1.05,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
