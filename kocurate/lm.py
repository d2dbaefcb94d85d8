"""The one causal-LM loader: score, train and evaluate all load models through here.

One set of rules for device and precision (bf16 on a GPU that supports it, else fp16 on a GPU,
fp32 on the CPU), one set of one-line errors, one model fingerprint for caches. torch and
transformers are imported inside the functions, so importing this module is free.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import InputError, first_line

DTYPES = ("auto", "float32", "bfloat16", "float16")

# A folder needs one of these to have a tokenizer; without one, score would cache nulls and
# train would learn from empty text.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                    "sentencepiece.bpe.model", "tokenizer_config.json")


def resolve_device(device: str = "auto") -> str:
    """auto -> cuda when torch sees a GPU, else cpu; an unavailable cuda is a one-line error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA GPU is visible to torch; use --device cpu (or auto)")
    return device


def resolve_dtype(dtype: str = "auto", device: str = "cpu"):
    """A torch dtype: auto is bf16 on a GPU that has it, fp16 on other GPUs, fp32 on the CPU."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
             "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype not in table:
        raise InputError(f"--dtype {dtype}: use one of {', '.join(DTYPES)}")
    return table[dtype]


def looks_local(spec: str) -> bool:
    """A path rather than a Hub id: absolute, relative with ./ or ../, ~, or existing on disk."""
    return spec.startswith(("/", "./", "../", "~")) or Path(spec).exists() or spec.count("/") > 1


def check_tokenizer_files(spec: str, flag: str = "--model", hint: str = "") -> None:
    """Refuse a missing local folder, or one without tokenizer files (a Hub id is checked on load)."""
    path = Path(spec).expanduser()
    if looks_local(spec) and not path.is_dir():
        raise InputError(f"{flag} {spec}: no such model folder; pass a folder saved with save_pretrained or a Hub id"
                         + hint)
    if path.is_dir() and not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise InputError(f"{flag} {spec}: the folder has no tokenizer files (tokenizer.json, tokenizer.model, ...); "
                         "save the tokenizer beside the model with tokenizer.save_pretrained(FOLDER)" + hint)


def load_tokenizer(spec: str, *, flag: str = "--model", padding_side: str | None = None, hint: str = ""):
    """The model's tokenizer; a pad token is set to EOS when the model has none.

    `hint` is appended to every error (e.g. "; or --model charlm to score offline")."""
    from transformers import AutoTokenizer

    check_tokenizer_files(spec, flag, hint)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(Path(spec).expanduser()) if looks_local(spec) else spec)
    except Exception as exc:
        raise InputError(f"{flag} {spec}: could not load a causal LM's tokenizer ({first_line(exc)}); pass a model "
                         "folder with tokenizer files, or a Hub id you can reach" + hint) from None
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if padding_side:
        tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(
    spec: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    load_in_4bit: bool = False,
    flag: str = "--model",
    place: bool = True,
    hint: str = "",
    **kwargs,
):
    """(model, tokenizer, device, torch dtype) for a Hub id or a folder saved with save_pretrained.

    `place=False` leaves the model where from_pretrained put it (for a trainer or accelerate
    that places it); 4-bit needs CUDA and bitsandbytes and is placed by its device map.
    """
    import torch
    from transformers import AutoModelForCausalLM

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    tokenizer = load_tokenizer(spec, flag=flag, hint=hint)
    if load_in_4bit:
        if not torch.cuda.is_available():
            raise InputError("--load-in-4bit needs a CUDA GPU (bitsandbytes 4-bit kernels); drop the flag on this machine")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise InputError("--load-in-4bit needs bitsandbytes: pip install 'kocurate[qlora]'") from None
        from transformers import BitsAndBytesConfig

        compute = torch_dtype if torch_dtype != torch.float32 else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)
        kwargs.setdefault("device_map", {"": torch.cuda.current_device()})
        torch_dtype = compute
        place = False
    try:
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=torch_dtype, **kwargs)
    except Exception as exc:
        raise InputError(f"{flag} {spec}: could not load a causal LM ({first_line(exc)}); pass a Hub id you can "
                         "download or a local folder saved with save_pretrained" + hint) from None
    if place and "device_map" not in kwargs:
        model.to(device)
    return model, tokenizer, device, torch_dtype


def model_fingerprint(spec: str) -> str:
    """Identify a model for caches: a Hub id as is; a local folder by its files' names and sizes
    and the content of its small JSON files (changes when the model is retrained or re-saved)."""
    path = Path(spec)
    if not path.is_dir():
        return spec
    digest = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if not p.is_file() or not p.name.endswith((".json", ".safetensors", ".bin", ".model", ".txt")):
            continue
        name = str(p.relative_to(path))
        size = p.stat().st_size
        digest.update(f"{name}:{size}".encode())
        if p.suffix == ".json" and size < 1_000_000:
            digest.update(p.read_bytes())
    return f"local:{path.resolve().name}:{digest.hexdigest()[:16]}"
