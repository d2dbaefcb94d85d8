"""Tiny models built from a config and a tokenizer trained on the project's Korean text.

They are saved to a folder and loaded back through the same `from_pretrained` path a real
Hub model takes, so the code under test cannot tell them from polyglot-ko or llama-2-ko.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"

# Korean text written for this project; used when the sample files are not there yet.
_FALLBACK = [
    "오늘은 날씨가 맑아서 공원에 산책을 나갔다.",
    "김치찌개를 끓일 때는 잘 익은 김치와 돼지고기를 먼저 볶는다.",
    "질문: 지구는 태양 주위를 도는가? 답변: 예",
    "문장: 영화가 정말 지루했다. 긍부정: 부정",
    "문장1: 배가 아프다. 문장2: 배를 타고 섬에 갔다. 두 문장에서 배가 같은 뜻으로 쓰였나? 아니오",
    "아래는 작업을 설명하는 명령어입니다. 요청을 적절히 완료하는 응답을 작성하세요.",
    "### 질문: 서울의 유명한 궁궐을 알려 주세요. ### 답변: 경복궁과 창덕궁이 유명합니다.",
]


def corpus_lines(limit: int = 6000) -> list[str]:
    """Korean lines from the samples and the KoBEST fixture (or a small built-in fallback)."""
    lines: list[str] = []
    for path in sorted(SAMPLES.glob("*.jsonl")) + sorted(SAMPLES.glob("kobest/*/*.jsonl")):
        for raw in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(raw)
            except json.JSONDecodeError:
                continue
            lines.extend(str(v) for v in row.values() if isinstance(v, str) and v.strip())
            if len(lines) >= limit:
                return lines
    return lines or _FALLBACK * 20


def build_tokenizer(folder: Path, vocab_size: int = 800, model_max_length: int = 256):
    """A byte-level BPE tokenizer trained on the corpus, saved as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
        unk_token="<|endoftext|>", pad_token="<|pad|>", model_max_length=model_max_length,
    )
    fast.save_pretrained(folder)
    return fast


def build_gpt_neox(folder: Path, seed: int = 0, max_positions: int = 256) -> Path:
    """A 2-layer GPT-NeoX (the polyglot-ko architecture) with random weights."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tokenizer = build_tokenizer(folder, model_max_length=max_positions)
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=max_positions, rotary_pct=0.25,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    GPTNeoXForCausalLM(config).save_pretrained(folder)
    return folder


def build_llama(folder: Path, seed: int = 0, max_positions: int = 256) -> Path:
    """A 2-layer Llama (the llama-2-ko architecture) with random weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(folder, model_max_length=max_positions)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, intermediate_size=128, max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def build_st_encoder(folder: Path, seed: int = 0) -> Path:
    """A tiny BERT + mean pooling saved as a sentence-transformers model folder."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    raw = folder / "_wordpiece"
    raw.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    wordpiece.train_from_iterator(corpus_lines(), vocab_size=1500, show_progress=False)
    wordpiece.save_model(str(raw))
    tokenizer = BertTokenizerFast(vocab_file=str(raw / "vocab.txt"), do_lower_case=False, strip_accents=False,
                                  model_max_length=128)
    torch.manual_seed(seed)
    bert = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=128, max_position_embeddings=128))
    hf_dir = folder / "_hf"
    bert.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = models.Transformer(str(hf_dir), max_seq_length=128)
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(folder / "model"))
    return folder / "model"
