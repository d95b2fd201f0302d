"""Asks the installed LLaMA-Factory about palign's files; run by the LLaMA-Factory venv's python.

Usage: python probe.py REQUEST.json ANSWER.json (not stdout: LLaMA-Factory prints there). It imports llamafactory, never palign (the
two live in different environments). The request names train.yaml files to parse with
LLaMA-Factory's own argument parser, and a model plus alpaca rows to tokenize with its
template; the answer also lists its chat template names.
"""

import json
import sys

import yaml
from llamafactory.data import get_template_and_fix_tokenizer
from llamafactory.data.template import TEMPLATES
from llamafactory.hparams import DataArguments, get_train_args
from transformers import AutoTokenizer


def parse(path):
    try:
        model_args, data_args, training_args, finetuning_args, _ = get_train_args(yaml.safe_load(open(path)))
    except Exception as exc:  # the test wants LLaMA-Factory's message, whatever its type
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "ok": True,
        "model_name_or_path": model_args.model_name_or_path,
        "dataset": data_args.dataset,
        "dataset_dir": data_args.dataset_dir,
        "template": data_args.template,
        "cutoff_len": data_args.cutoff_len,
        "finetuning_type": finetuning_args.finetuning_type,
        "lora_rank": finetuning_args.lora_rank,
        "lora_alpha": finetuning_args.lora_alpha,
        "lora_dropout": finetuning_args.lora_dropout,
        "lora_target": finetuning_args.lora_target,
        "learning_rate": training_args.learning_rate,
        "num_train_epochs": training_args.num_train_epochs,
        "lr_scheduler_type": str(training_args.lr_scheduler_type.value),
        "warmup_ratio": training_args.warmup_ratio,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
        "output_dir": training_args.output_dir,
        "resume_from_checkpoint": training_args.resume_from_checkpoint,
    }


def lengths(model, rows, template_name):
    tokenizer = AutoTokenizer.from_pretrained(model)
    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template=template_name))
    out = []
    for row in rows:
        messages = [{"role": "user", "content": row["instruction"]}, {"role": "assistant", "content": row["output"]}]
        prompt_ids, reply_ids = template.encode_oneturn(tokenizer, messages)
        # The parts palign counts, with this environment's tokenizer: the chat-rendered prompt
        # (generation prompt included) and the bare reply.
        rendered = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
        parts = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in (rendered, row["output"])]
        out.append({"lf": len(prompt_ids) + len(reply_ids), "prompt": parts[0], "reply": parts[1]})
    return out


def main():
    request = json.load(open(sys.argv[1]))
    answer = {"templates": sorted(TEMPLATES)}
    answer["parsed"] = {name: parse(path) for name, path in request.get("yamls", {}).items()}
    if request.get("rows"):
        answer["lengths"] = lengths(request["model"], request["rows"], request.get("template"))
    with open(sys.argv[2], "w") as f:
        json.dump(answer, f)


if __name__ == "__main__":
    main()
