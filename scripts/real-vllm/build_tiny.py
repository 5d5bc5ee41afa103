#!/usr/bin/env python3
"""Helpers for scripts/real-vllm.sh, run with the cached venv's Python.

  build_tiny.py requirements WHEEL TORCH_VERSION OUT   requirements.txt from the wheel's Requires-Dist
  build_tiny.py model OUT_DIR                           tiny random-weight Llama + BPE tokenizer + chat template
  build_tiny.py lora MODEL_DIR OUT_DIR                  rank-8 LoRA (q_proj, v_proj) for that model, saved by peft

Everything is deterministic (fixed seeds, corpus generated here) and offline.
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end_of_text|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def requirements(wheel, torch_version, out):
    """Write the wheel's Requires-Dist (no extras) with every `torch==X+cpu` pin replaced."""
    import email.parser
    import re
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            sys.exit(f"error: expected one METADATA in {wheel}, found {names}")
        meta = email.parser.Parser().parsestr(zf.read(names[0]).decode("utf-8"))
    reqs = meta.get_all("Requires-Dist") or []
    if not reqs:
        sys.exit(f"error: no Requires-Dist in {wheel}")
    lines = []
    replaced = 0
    for req in reqs:
        spec, _, marker = req.partition(";")
        if "extra ==" in marker or "extra==" in marker:
            continue
        name = re.split(r"[\s<>=!~\[;(]", spec.strip(), maxsplit=1)[0]
        if name.lower() == "torch":
            # The wheel pins torch==X+cpu (served only by the PyTorch index): use PyPI's torch.
            replaced += 1
            if replaced == 1:
                lines.append(f"torch=={torch_version}")
            continue
        lines.append(spec.strip() + (f"; {marker.strip()}" if marker.strip() else ""))
    if replaced == 0:
        sys.exit("error: the wheel's METADATA names no torch requirement; the recipe no longer fits")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"  {len(lines)} requirements written to {out} (torch pinned to {torch_version})")


def corpus():
    """A few hundred KiB of varied local text: the Zen of Python plus generated sentences."""
    import codecs
    import contextlib
    import io
    import random

    with contextlib.redirect_stdout(io.StringIO()):
        import this  # prints the Zen on import
    zen = codecs.decode(this.s, "rot13")
    rng = random.Random(1234)
    words = (
        "model server fleet engine worker token request response stream health "
        "metrics adapter lora load unload sleep wake cache prefix batch queue "
        "latency throughput memory process signal restart port host config the a "
        "an of to in on for with from by is are was were be it this that and or "
        "not hello world tiny llama vllm python rust json http chat completion "
        "one two three four five six seven eight nine ten zero yes no ok error"
    ).split()
    parts = [zen] * 4
    for _ in range(4000):
        n = rng.randint(4, 14)
        sent = " ".join(rng.choice(words) for _ in range(n))
        parts.append(sent.capitalize() + rng.choice([".", "!", "?", ",", ";", ":"]))
    # Pseudo-words over many letter pairs, so BPE finds enough merges to fill the vocab
    # (every id the model can emit then decodes to a real token).
    letters = "abcdefghijklmnopqrstuvwxyz"
    for _ in range(3000):
        parts.append(" ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 7))) for _ in range(8)))
    parts.append("".join(chr(c) for c in range(32, 127)))
    parts.append("0123456789 " * 50)
    return parts


def build_model(out):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    os.makedirs(out, exist_ok=True)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    vocab_size = tok.get_vocab_size()
    bos_id = tok.token_to_id(SPECIAL_TOKENS[0])
    eos_id = tok.token_to_id(SPECIAL_TOKENS[1])
    pad_id = tok.token_to_id(SPECIAL_TOKENS[2])

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL_TOKENS[0],
        eos_token=SPECIAL_TOKENS[1],
        pad_token=SPECIAL_TOKENS[2],
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    config = LlamaConfig(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=2048,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)

    # Check it loads and generates with plain transformers before vLLM ever sees it.
    ids = fast("hello world", return_tensors="pt").input_ids
    reloaded = LlamaForCausalLM.from_pretrained(out)
    gen = reloaded.generate(ids, max_new_tokens=3, do_sample=False)
    print(f"  tokenizer vocab {vocab_size} (model vocab 1024), bos {bos_id}, eos {eos_id}")
    if vocab_size != 1024:
        sys.exit(f"error: the tokenizer has {vocab_size} tokens, expected 1024")
    print(f"  reload + generate ok: {gen.shape[1] - ids.shape[1]} new tokens")
    print(f"  chat template renders: {fast.apply_chat_template([{'role': 'user', 'content': 'hi'}], tokenize=False, add_generation_prompt=True)!r}")


def build_lora(model_dir, out):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(1)
    base = LlamaForCausalLM.from_pretrained(model_dir)
    cfg = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights=False,  # random A and B, so the adapter changes the output
    )
    peft_model = get_peft_model(base, cfg)
    peft_model.save_pretrained(out, safe_serialization=True)
    files = sorted(os.listdir(out))
    print(f"  adapter saved: {files}")
    for need in ("adapter_config.json", "adapter_model.safetensors"):
        if need not in files:
            sys.exit(f"error: peft did not write {need} in {out}")


def main(argv):
    if len(argv) >= 5 and argv[1] == "requirements":
        requirements(argv[2], argv[3], argv[4])
    elif len(argv) == 3 and argv[1] == "model":
        build_model(argv[2])
    elif len(argv) == 4 and argv[1] == "lora":
        build_lora(argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
