"""Score rows with a causal LM: KoQuality's perplexity and Superfiltering's IFD.

`ppl` is exactly what KoQuality computed for each instruction: the text is tokenized, truncated
to 1024 tokens, and scored with the sliding window of the Hugging Face perplexity guide (window
= min(1024, the model's positions), stride 256; tokens already scored in an earlier window are
context only), ppl = exp(mean NLL over the predicted tokens).

`ifd` (Instruction-Following Difficulty, Li et al. 2024) = mean NLL of the output given the
prompt / mean NLL of the output alone. High IFD: the instruction helps little.

`charlm` is an offline stand-in for a model: a character-bigram LM with add-one smoothing
fitted on the texts being scored. It needs no download, so demos and tests can run `ppl`
selection on a fresh machine; it is not KoQuality's scorer.

Scores are cached on disk (sqlite) keyed by model, metric, settings and the text's hash, so an
interrupted run resumes and a rerun scores nothing. torch/transformers are imported inside the
functions that need them: importing this module stays light.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import polars as pl

from ..config import check_count
from ..errors import InputError, first_line
from .pipeline import RunContext, Step, StepResult

METRICS = ("ppl", "ifd")
#: Prompt for IFD's conditioned loss (KoAlpaca's template; {input} lines only when there is one).
IFD_TEMPLATE = "### 질문: {prompt}\n\n### 답변: "
#: KoQuality's settings.
TRUNCATION = 1024
STRIDE = 256
CHARLM = "charlm"


def prompt_texts(frame: pl.DataFrame) -> list[str]:
    """The instruction as KoQuality saw it: instruction, plus " " + input when there is one."""
    inp = pl.col("input").fill_null("") if "input" in frame.columns else pl.lit("")
    expr = (
        pl.when(inp.str.strip_chars() != "")
        .then(pl.concat_str([pl.col("instruction").fill_null(""), pl.lit(" "), inp]))
        .otherwise(pl.col("instruction").fill_null(""))
    )
    return frame.select(expr.alias("t"))["t"].to_list()


# --------------------------------------------------------------------------------------------
# the on-disk cache


class ScoreCache:
    """sqlite table key -> score; commits after every batch, so a killed run loses one batch."""

    def __init__(self, folder: Path | None):
        self.conn = None
        if folder is None:
            return
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(folder / "scores.sqlite"))
            self.conn.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, value REAL)")
        except (OSError, sqlite3.Error) as exc:
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            warnings.warn(
                f"score cache {folder} is not writable ({first_line(exc)}); continuing without caching. "
                "Pass a writable --cache-dir to reuse scores on the next run",
                RuntimeWarning,
                stacklevel=2,
            )

    def get_many(self, keys: Sequence[str]) -> dict[str, float | None]:
        if self.conn is None:
            return {}
        found: dict[str, float | None] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for key, value in self.conn.execute(f"SELECT key, value FROM scores WHERE key IN ({marks})", chunk):
                found[key] = value
        return found

    def put_many(self, items: dict[str, float | None]) -> None:
        if self.conn is None or not items:
            return
        self.conn.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)", list(items.items()))
        self.conn.commit()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def model_key(spec: str) -> str:
    """Identify a model for the score cache (the ground floor's one fingerprint rule)."""
    from ..lm import model_fingerprint

    return spec if spec == CHARLM else model_fingerprint(spec)


def _key(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# scorers


@dataclass
class Segment:
    """One forward pass: token ids, and how many trailing positions are scored targets."""

    row: int
    part: int  # 0: the text (ppl) or the conditioned output (ifd); 1: the output alone (ifd)
    ids: list[int]
    targets: int


def ppl_segments(row: int, ids: list[int], window: int, stride: int, truncation: int = TRUNCATION) -> list[Segment]:
    """KoQuality / HF-guide sliding window over `ids` truncated to `truncation` tokens."""
    ids = ids[:truncation]
    n = len(ids)
    out: list[Segment] = []
    prev_end = 0
    for begin in range(0, n, stride):
        end = min(begin + window, n)
        targets = end - prev_end
        seg = ids[begin:end]
        # position 0 of the whole text has no context and is never a target
        targets = min(targets, len(seg) - 1) if begin == 0 else targets
        out.append(Segment(row, 0, seg, targets))
        prev_end = end
        if end == n:
            break
    return out


def ifd_segments(row: int, prompt_ids: list[int], out_ids: list[int], window: int) -> list[Segment]:
    out_ids = out_ids[: window - 1]
    room = window - len(out_ids)
    prompt_ids = prompt_ids[-room:] if room > 0 else []
    return [
        Segment(row, 0, prompt_ids + out_ids, len(out_ids) if prompt_ids else len(out_ids) - 1),
        Segment(row, 1, out_ids, len(out_ids) - 1),
    ]


class LMScorer:
    """A causal LM loaded with from_pretrained (Hub id or local folder); GPU + bf16 when present."""

    def __init__(self, spec: str, device: str = "auto", batch_size: int = 8, max_length: int = TRUNCATION):
        import torch
        self.torch = torch
        from transformers.utils import logging as hf_logging

        from ..lm import load_causal_lm

        hf_logging.set_verbosity_error()  # no "sequence longer than" warnings: we window ourselves
        hf_logging.disable_progress_bar()
        self.model, self.tokenizer, device, _ = load_causal_lm(
            spec, device=device, flag="--model", hint="; or --model charlm to score offline without a model")
        self.model.eval()
        self.device = device
        self.batch_size = batch_size
        positions = getattr(self.model.config, "max_position_embeddings", None) or max_length
        self.window = int(min(max_length, positions))
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        # A one-token text predicts nothing; give it the BOS token as context (if the model has one).
        return [([bos] + ids if len(ids) < 2 and bos is not None and (not ids or ids[0] != bos) else ids) for ids in enc]

    def nll(self, segments: list[Segment], track=None) -> list[tuple[float, int]]:
        """Sum of NLL over each segment's targets and the number of targets, batched by length."""
        torch = self.torch
        order = sorted(range(len(segments)), key=lambda i: len(segments[i].ids))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        results: list[tuple[float, int]] = [(0.0, 0)] * len(segments)
        iterator = track(batches) if track else batches
        with torch.inference_mode():
            for batch in iterator:
                width = max(len(segments[i].ids) for i in batch)
                ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                target = torch.zeros((len(batch), width), dtype=torch.bool)
                for r, i in enumerate(batch):
                    seg = segments[i]
                    n = len(seg.ids)
                    ids[r, :n] = torch.tensor(seg.ids, dtype=torch.long)
                    mask[r, :n] = 1
                    if seg.targets > 0:
                        target[r, n - seg.targets : n] = True
                ids, mask, target = ids.to(self.device), mask.to(self.device), target.to(self.device)
                logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                logp = torch.log_softmax(logits, dim=-1)
                token_nll = -logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
                tmask = target[:, 1:]
                sums = (token_nll * tmask).sum(dim=1).tolist()
                counts = tmask.sum(dim=1).tolist()
                for r, i in enumerate(batch):
                    results[i] = (float(sums[r]), int(counts[r]))
        return results


class CharBigramLM:
    """Offline scorer: character bigrams with add-one smoothing, fitted on the scored texts."""

    def __init__(self, texts: Sequence[str]):
        from collections import Counter

        self.unigrams: Counter = Counter()
        self.bigrams: Counter = Counter()
        for text in texts:
            chars = ["<s>", *text]
            self.unigrams.update(chars)
            self.bigrams.update(zip(chars, chars[1:]))
        self.vocab = len(self.unigrams) + 1

    def ppl(self, text: str) -> float:
        chars = ["<s>", *text]
        if len(chars) < 2:
            return float(self.vocab)
        nll = 0.0
        for a, b in zip(chars, chars[1:]):
            nll -= math.log((self.bigrams[(a, b)] + 1) / (self.unigrams[a] + self.vocab))
        return math.exp(nll / (len(chars) - 1))


def compute_scores(
    frame: pl.DataFrame,
    model: str,
    metric: str = "ppl",
    *,
    batch_size: int = 8,
    max_length: int = TRUNCATION,
    stride: int = STRIDE,
    device: str = "auto",
    template: str = IFD_TEMPLATE,
    cache_dir: Path | None = None,
    ctx: RunContext | None = None,
) -> tuple[np.ndarray, dict]:
    """Score every row of `frame`; returns float64 scores (NaN where undefined) and counters."""
    if metric not in METRICS:
        raise InputError(f"--metric {metric}: unknown; use one of {', '.join(METRICS)}")
    ctx = ctx or RunContext()
    prompts = prompt_texts(frame)
    outputs = frame["output"].fill_null("").to_list() if metric == "ifd" else None
    if model == CHARLM:
        if metric != "ppl":
            raise InputError("--model charlm scores only --metric ppl; pass a causal LM (--model ID_OR_PATH) for ifd")
        lm = CharBigramLM(prompts)
        values = np.array([lm.ppl(t) for t in ctx.track(prompts, "charlm ppl")], dtype=np.float64)
        return values, {"scored": len(values), "cached": 0}

    settings = json.dumps({"metric": metric, "max_length": max_length, "stride": stride,
                           "template": template if metric == "ifd" else None}, sort_keys=True)
    mkey = model_key(model)
    if metric == "ppl":
        keys = [_key(mkey, settings, p) for p in prompts]
    else:
        keys = [_key(mkey, settings, p, o) for p, o in zip(prompts, outputs)]
    cache = ScoreCache(cache_dir)
    try:
        cached = cache.get_many(keys)
        todo = [i for i, k in enumerate(keys) if k not in cached]
        values = np.array([np.nan if cached.get(k) is None else cached[k] for k in keys], dtype=np.float64)
        if todo:
            scorer = LMScorer(model, device=device, batch_size=batch_size, max_length=max_length)
            # chunks of rows, each committed to the cache when done: resumable
            chunk = max(batch_size * 32, 256)
            chunks = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]
            for rows in ctx.track(chunks, f"{metric} with {model} ({len(todo):,} rows)"):
                new = _score_rows(scorer, metric, rows, prompts, outputs, stride, template)
                for i, v in new.items():
                    values[i] = np.nan if v is None else v
                cache.put_many({keys[i]: new[i] for i in rows})
    finally:
        cache.close()
    return values, {"scored": len(todo), "cached": len(keys) - len(todo), "device": "cpu" if not todo else scorer.device}


def _score_rows(scorer: LMScorer, metric, rows, prompts, outputs, stride, template) -> dict[int, float | None]:
    segments: list[Segment] = []
    if metric == "ppl":
        encoded = scorer.encode([prompts[i] for i in rows])
        for i, ids in zip(rows, encoded):
            segments.extend(ppl_segments(i, ids, scorer.window, stride))
    else:
        conds = scorer.encode([template.format(prompt=prompts[i], instruction=prompts[i]) for i in rows])
        outs = scorer.tokenizer([outputs[i] for i in rows], add_special_tokens=False, verbose=False)["input_ids"]
        for i, p_ids, o_ids in zip(rows, conds, outs):
            segments.extend(ifd_segments(i, p_ids, o_ids, scorer.window))
    sums = scorer.nll(segments)
    totals: dict[tuple[int, int], list[float]] = {}
    for seg, (s, n) in zip(segments, sums):
        acc = totals.setdefault((seg.row, seg.part), [0.0, 0])
        acc[0] += s
        acc[1] += n
    out: dict[int, float | None] = {}
    for i in rows:
        s0, n0 = totals.get((i, 0), (0.0, 0))
        if metric == "ppl":
            out[i] = math.exp(s0 / n0) if n0 else None
        else:
            s1, n1 = totals.get((i, 1), (0.0, 0))
            out[i] = (s0 / n0) / (s1 / n1) if n0 and n1 and s1 > 0 else None
    return out


# --------------------------------------------------------------------------------------------
# the step


@dataclass
class Score(Step):
    """Add a score column (`ppl` or `ifd`) computed with a causal LM (or `charlm` offline)."""

    model: str = ""
    metric: str = "ppl"
    column: str | None = None
    batch_size: int = 8
    max_length: int = TRUNCATION
    stride: int = STRIDE
    device: str = "auto"
    #: the IFD prompt; {prompt} is instruction(+input)
    ifd_prompt: str = IFD_TEMPLATE
    #: replace an existing column of that name (never a canonical one)
    replace: bool = False
    name: ClassVar[str] = "score"

    def __post_init__(self):
        if not self.model:
            raise InputError("score needs a model: a Hub id (e.g. EleutherAI/polyglot-ko-1.3b), a local folder, or charlm (offline)")
        if self.metric not in METRICS:
            raise InputError(f"metric '{self.metric}' is unknown; use one of {', '.join(METRICS)}")
        check_count("--batch-size", self.batch_size)
        check_count("--stride", self.stride)
        check_count("--max-length", self.max_length, minimum=2)

    def run(self, frame: pl.DataFrame, ctx: RunContext) -> StepResult:
        column = self.column or self.metric
        check_score_column(column, frame.columns, self.replace)
        values, stats = compute_scores(
            frame, self.model, self.metric, batch_size=self.batch_size, max_length=self.max_length,
            stride=self.stride, device=self.device, template=self.ifd_prompt,
            cache_dir=None if ctx.cache_dir is None else Path(ctx.cache_dir) / "scores", ctx=ctx,
        )
        kept = frame.with_columns(pl.Series(column, values, dtype=pl.Float64).fill_nan(None))
        finite = values[np.isfinite(values)]
        stats.update({
            "column": column,
            "undefined": int((~np.isfinite(values)).sum()),
            "mean": round(float(finite.mean()), 4) if finite.size else None,
            "median": round(float(np.median(finite)), 4) if finite.size else None,
        })
        return StepResult(kept, _empty(frame), stats)


def check_score_column(column: str, existing, replace: bool) -> None:
    """A score never overwrites a canonical column, nor another existing one unless asked."""
    from ..records.schema import CANONICAL, OPTIONAL

    if column in CANONICAL or column in OPTIONAL or column in ("id", "len", "len_group", "cluster", "cluster_dist"):
        raise InputError(f"--column {column}: that name holds the rows' own data; pick another name such as "
                         f"{column}_score or leave --column out (default: the metric's name)")
    if column in existing and not replace:
        raise InputError(f"--column {column}: the input already has that column; pass --replace to overwrite "
                         f"its values, or another --column")


def _empty(frame: pl.DataFrame) -> pl.DataFrame:
    from ..records import empty_removed

    return empty_removed(frame)
