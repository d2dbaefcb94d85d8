"""Continuation log-likelihoods with a causal LM: the engine, separate from the task definitions.

``Scorer.score(requests)`` takes one ``(context, [continuation, ...])`` per doc and returns, per doc,
the summed log-probability of each continuation's tokens given the context.

How it stays identical to lm-evaluation-harness and still beats it:

- Tokenization is the harness's own (``encode_pair``): under ``joint_encoding`` the context's
  trailing whitespace moves to the continuation and ``cont_ids = encode(ctx + cont)[len(encode(ctx)):]``;
  otherwise both are encoded separately. The model input is ``(ctx_ids + cont_ids)[-(max_len + 1):][:-1]``.
- Shared context (the default): a doc's context tokens are the same for all its choices, so the
  context runs once (right-padded batch, no attention mask: the same arithmetic as the harness),
  its key/value cache is copied to one row per choice, and only the continuation tokens run on top.
  Docs whose longest choice would need left truncation take the harness's path instead (each
  choice truncated and run on its own), so the numbers never change, only the cost.
- Batches are sorted by length (longest first, so an out-of-memory shows at once); the log-softmax
  is taken only at continuation positions, in float32.
- GPU and bfloat16 when present (``device="auto"``, ``dtype="auto"``); ``batch_size="auto"`` finds
  the largest batch that fits the longest requests on a GPU (halving on out-of-memory) and uses
  16 on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import InputError, first_line

Request = tuple[str, Sequence[str]]  # (context, continuations)
_CPU_AUTO_BATCH = 16
_GPU_AUTO_START = 256


@dataclass
class Encoded:
    ctx: list[int]
    conts: list[list[int]]


def resolve_max_length(model, tokenizer, default: int = 2048) -> int:
    """The harness's rule: config n_positions / max_position_embeddings / n_ctx, else the tokenizer's, else 2048."""
    config = getattr(model, "config", None)
    for cfg in (getattr(config, "text_config", None), config):
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(cfg, attr, None) if cfg is not None else None
            if isinstance(value, int) and value > 0:
                return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000_000:
        return limit
    return default


class Scorer:
    """Scores continuations with a loaded causal LM and its tokenizer."""

    def __init__(self, model, tokenizer, *, joint_encoding: bool = True, move_trailing_space: bool = True,
                 max_length: int | None = None, batch_size: int | str = "auto", share_context: bool = True,
                 add_special_tokens: bool | None = None):
        import torch

        self.torch = torch
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.joint_encoding = joint_encoding
        self.move_trailing_space = move_trailing_space
        self.max_length = max_length or resolve_max_length(model, tokenizer)
        self.share_context = share_context
        # None = the tokenizer's own default, as lm-eval 0.4.x does for causal models
        self.add_special_tokens = add_special_tokens
        self.device = next(model.parameters()).device
        self.vocab_size = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else None
        self.batch_size = batch_size
        self._keep_ok: bool | None = None
        self._auto: tuple[int, int, int] | None = None  # (longest request, most choices, batch size found)
        self.stats = {"forward_calls": 0, "shared_docs": 0, "full_docs": 0, "tokens": 0, "tokens_one_row_per_choice": 0}

    # -- tokenization --------------------------------------------------------------------------
    def _encode_many(self, strings: list[str], special: bool | None) -> list[list[int]]:
        if not strings:
            return []
        kwargs = {} if special is None else {"add_special_tokens": special}
        # verbose=False: long few-shot prompts are expected; truncation happens at scoring time
        return self.tokenizer(strings, verbose=False, **kwargs)["input_ids"]

    def encode(self, requests: Sequence[Request]) -> list[Encoded]:
        """Token ids per doc, exactly as the reference harness would build them."""
        special = self.add_special_tokens if self.joint_encoding else False
        encoded: list[Encoded] = []
        if self.joint_encoding:
            ctxs, wholes, shapes = [], [], []
            for ctx, conts in requests:
                if not ctx:
                    raise InputError("a prompt is empty; every KoBEST prompt has a context")
                if self.move_trailing_space:
                    n = len(ctx) - len(ctx.rstrip())
                    head, tail = (ctx[:-n], ctx[-n:]) if n else (ctx, "")
                else:
                    head, tail = ctx, ""
                ctxs.append(head)
                wholes += [head + tail + c for c in conts]
                shapes.append(len(conts))
            ctx_ids = self._encode_many(ctxs, special)
            whole_ids = iter(self._encode_many(wholes, special))
            for ids, n in zip(ctx_ids, shapes):
                encoded.append(Encoded(ids, [next(whole_ids)[len(ids):] for _ in range(n)]))
        else:
            ctx_ids = self._encode_many([ctx for ctx, _ in requests], special)
            cont_ids = iter(self._encode_many([c for _, conts in requests for c in conts], special))
            for ids, (_, conts) in zip(ctx_ids, requests):
                encoded.append(Encoded(ids, [next(cont_ids) for _ in conts]))
        for doc in encoded:
            if not doc.ctx or any(not c for c in doc.conts):
                raise InputError("a context or continuation encodes to zero tokens; check the tokenizer")
            if any(len(c) > self.max_length for c in doc.conts):
                raise InputError(f"a continuation is longer than the model's {self.max_length} tokens")
        return encoded

    # -- scoring -------------------------------------------------------------------------------
    def score(self, requests: Sequence[Request], progress: Callable[[int], None] | None = None) -> list[list[float]]:
        """Summed continuation log-likelihoods, one list (one float per continuation) per doc."""
        encoded = self.encode(requests)
        out: list[list[float] | None] = [None] * len(encoded)
        shared, full = [], []
        for i, doc in enumerate(encoded):
            fits = all(len(doc.ctx) + len(c) <= self.max_length + 1 for c in doc.conts)
            (shared if self.share_context and fits else full).append(i)
        # what a one-row-per-choice engine (lm-eval) forwards, for comparison with "tokens"
        self.stats["tokens_one_row_per_choice"] += sum(min(len(d.ctx) + len(c), self.max_length + 1) - 1
                                                       for d in encoded for c in d.conts)
        self.stats["shared_docs"] += len(shared)
        self.stats["full_docs"] += len(full)
        bs = self._batch_size(encoded, shared, full)
        tick = progress or (lambda n: None)

        # shared-context path: batches of docs, longest context first
        shared.sort(key=lambda i: (-len(encoded[i].ctx), i))
        for start in range(0, len(shared), bs):
            chunk = shared[start:start + bs]
            for i, lls in zip(chunk, self._score_shared([encoded[i] for i in chunk])):
                out[i] = lls
            tick(len(chunk))

        # the harness's path: one row per (doc, choice), longest first, left-truncated
        rows = [(i, j) for i in full for j in range(len(encoded[i].conts))]
        rows.sort(key=lambda r: (-(len(encoded[r[0]].ctx) + len(encoded[r[0]].conts[r[1]])), r))
        partial: dict[int, list[float]] = {i: [0.0] * len(encoded[i].conts) for i in full}
        left = {i: len(encoded[i].conts) for i in full}
        for start in range(0, len(rows), bs):
            chunk = rows[start:start + bs]
            lls = self._score_rows([(encoded[i].ctx, encoded[i].conts[j]) for i, j in chunk])
            done = 0
            for (i, j), ll in zip(chunk, lls):
                partial[i][j] = ll
                left[i] -= 1
                if left[i] == 0:
                    out[i] = partial.pop(i)
                    done += 1
            tick(done)
        return out  # type: ignore[return-value]

    def _forward(self, **kwargs):
        self.stats["forward_calls"] += 1
        with self.torch.inference_mode():
            return self.model(**kwargs)

    def _sum_logp(self, logits, rows, cols, targets, owners, n_owners: int) -> list[float]:
        """Sum over tokens of log p(target) at logits[rows, cols], grouped by owner; one log-softmax call."""
        torch = self.torch
        dev = logits.device
        picked = logits[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)]
        if self.vocab_size:
            picked = picked[:, :self.vocab_size]
        logp = torch.log_softmax(picked.float(), dim=-1)
        token_lp = logp.gather(1, torch.tensor(targets, device=dev)[:, None])[:, 0]
        sums = torch.zeros(n_owners, dtype=torch.float64, device=dev)
        sums.index_add_(0, torch.tensor(owners, device=dev), token_lp.double())
        return sums.tolist()

    def _score_rows(self, pairs: list[tuple[list[int], list[int]]]) -> list[float]:
        """The harness's arithmetic: right-padded inputs, no mask, left truncation at max_length."""
        torch = self.torch
        inputs = [(ctx + cont)[-(self.max_length + 1):][:-1] for ctx, cont in pairs]
        width = max(len(x) for x in inputs)
        batch = torch.zeros((len(inputs), width), dtype=torch.long)
        for r, x in enumerate(inputs):
            batch[r, :len(x)] = torch.tensor(x, dtype=torch.long)
        self.stats["tokens"] += sum(len(x) for x in inputs)
        logits = self._forward(input_ids=batch.to(self.device), use_cache=False).logits
        rows, cols, targets, owners = [], [], [], []
        for r, ((_, cont), x) in enumerate(zip(pairs, inputs)):
            n = len(cont)
            for t in range(n):
                rows.append(r)
                cols.append(len(x) - n + t)
                targets.append(cont[t])
                owners.append(r)
        return self._sum_logp(logits, rows, cols, targets, owners, len(pairs))

    def _context_pass(self, ctx, lens: list[int]):
        """Run the contexts once; logits only at each context's last position (when the model allows)."""
        torch = self.torch
        last = sorted(set(n - 1 for n in lens))
        if self._keep_ok is not False:
            try:
                out = self._forward(input_ids=ctx, use_cache=True, logits_to_keep=torch.tensor(last, device=ctx.device))
                self._keep_ok = True
                col = {p: c for c, p in enumerate(last)}
                return out, [col[n - 1] for n in lens]
            except TypeError:
                self._keep_ok = False
        out = self._forward(input_ids=ctx, use_cache=True)
        return out, [n - 1 for n in lens]

    def _score_shared(self, docs: list[Encoded]) -> list[list[float]]:
        """Context once per doc (its cache copied per choice), then only the continuations."""
        torch = self.torch
        dev = self.device
        lens = [len(d.ctx) for d in docs]
        width = max(lens)
        ctx = torch.zeros((len(docs), width), dtype=torch.long)
        for r, d in enumerate(docs):
            ctx[r, :len(d.ctx)] = torch.tensor(d.ctx, dtype=torch.long)
        self.stats["tokens"] += sum(lens)
        # right padding and no mask: causal attention never sees the padding at real positions
        first, cols = self._context_pass(ctx.to(dev), lens)
        rows = [(r, j) for r, d in enumerate(docs) for j in range(len(d.conts))]
        flat = self._sum_logp(first.logits, [r for r, _ in rows], [cols[r] for r, _ in rows],
                              [docs[r].conts[j][0] for r, j in rows], list(range(len(rows))), len(rows))
        cache = first.past_key_values
        del first
        rest = max(len(docs[r].conts[j]) - 1 for r, j in rows)
        if rest > 0:
            # one cache row per (doc, choice); continuation tokens [:-1] after the doc's own context
            cache.reorder_cache(torch.tensor([r for r, _ in rows], device=dev))
            cont = torch.zeros((len(rows), rest), dtype=torch.long)
            mask = torch.ones((len(rows), width + rest), dtype=torch.long)
            pos = torch.zeros((len(rows), rest), dtype=torch.long)
            sel_rows, sel_cols, targets, owners = [], [], [], []
            for k, (r, j) in enumerate(rows):
                toks = docs[r].conts[j]
                if len(toks) > 1:
                    cont[k, :len(toks) - 1] = torch.tensor(toks[:-1], dtype=torch.long)
                # the context's padding is masked; padded continuation slots (after the real ones) stay
                # visible to themselves only so that no query row is fully masked; they are never read
                mask[k, lens[r]:width] = 0
                pos[k] = torch.arange(lens[r], lens[r] + rest)
                for t in range(1, len(toks)):
                    sel_rows.append(k)
                    sel_cols.append(t - 1)
                    targets.append(toks[t])
                    owners.append(k)
            self.stats["tokens"] += sum(len(docs[r].conts[j]) - 1 for r, j in rows)
            logits = self._forward(input_ids=cont.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                                   past_key_values=cache, use_cache=False).logits
            more = self._sum_logp(logits, sel_rows, sel_cols, targets, owners, len(rows))
            flat = [a + b for a, b in zip(flat, more)]
        out, k = [], 0
        for d in docs:
            out.append(flat[k:k + len(d.conts)])
            k += len(d.conts)
        return out

    # -- batch size ----------------------------------------------------------------------------
    def _batch_size(self, encoded: list[Encoded], shared: list[int], full: list[int]) -> int:
        if self.batch_size != "auto":
            size = int(self.batch_size)
            if size < 1:
                raise InputError(f"--batch-size {size}: use a positive number or 'auto'")
            return size
        if self.device.type != "cuda":
            return _CPU_AUTO_BATCH
        longest = max((len(encoded[i].ctx) + max(map(len, encoded[i].conts)) for i in shared + full), default=0)
        choices = max((len(encoded[i].conts) for i in shared + full), default=0)
        if self._auto is not None and longest <= self._auto[0] and choices <= self._auto[1]:
            return self._auto[2]  # a batch that fit longer requests with as many choices fits these
        size = self._probe_batch_size(encoded, shared, full)
        self._auto = (longest, choices, size)
        return size

    def _probe_batch_size(self, encoded: list[Encoded], shared: list[int], full: list[int]) -> int:
        torch = self.torch
        size = _GPU_AUTO_START
        longest_shared = max(shared, key=lambda i: len(encoded[i].ctx), default=None)
        longest_full = max(((i, j) for i in full for j in range(len(encoded[i].conts))),
                           key=lambda r: len(encoded[r[0]].ctx) + len(encoded[r[0]].conts[r[1]]), default=None)
        while size >= 1:
            try:
                if longest_shared is not None:
                    self._score_shared([encoded[longest_shared]] * size)
                if longest_full is not None:
                    i, j = longest_full
                    self._score_rows([(encoded[i].ctx, encoded[i].conts[j])] * size)
                torch.cuda.empty_cache()
                return size
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                size //= 2
        raise InputError("the model does not fit one example on the GPU; use a smaller model or --device cpu")


def load_model(model_id: str, *, adapter: str | None = None, device: str = "auto", dtype: str = "auto"):
    """Model and tokenizer from a Hub id or folder, on the GPU in bfloat16 when there is one; PEFT adapter on top."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA GPU is visible to torch; use --device cpu (or auto)")
    if dtype == "auto":
        use_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        torch_dtype = torch.bfloat16 if use_bf16 else (torch.float16 if device.startswith("cuda") else torch.float32)
    else:
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
        if torch_dtype is None:
            raise InputError(f"--dtype {dtype}: use auto, float32, bfloat16 or float16")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        model = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        first = first_line(exc)
        raise InputError(f"{model_id}: could not load a causal LM ({first}); pass a Hub id or a folder saved with save_pretrained") from None
    if adapter:
        model = apply_adapter(model, model_id, adapter)
    model.to(device)
    return model.eval(), tokenizer, str(torch_dtype).removeprefix("torch.")


def apply_adapter(model, model_id: str, adapter: str):
    """A PEFT adapter on top of `model`; an adapter made for another base is a one-line error."""
    import json
    from pathlib import Path

    config_path = Path(adapter) / "adapter_config.json"
    if not config_path.is_file():
        raise InputError(f"{adapter}: no adapter_config.json; pass a folder written by PEFT's save_pretrained")
    try:
        base = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except json.JSONDecodeError as exc:
        raise InputError(f"{config_path}: malformed JSON ({exc.msg})") from None
    mismatch = _base_mismatch(model, base)
    if mismatch:
        raise InputError(f"{adapter}: adapter was made for {base}, which does not match {model_id} ({mismatch}); "
                         "pass the adapter's base model as MODEL")
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as exc:
        first = first_line(exc, 160)
        raise InputError(f"{adapter}: adapter does not fit {model_id} ({first}); pass the adapter's base model as MODEL") from None


def _base_mismatch(model, base: str | None) -> str | None:
    """Compare the adapter's base (when it can be read offline) with the model's shape."""
    if not base:
        return None
    from transformers import AutoConfig

    try:
        base_config = AutoConfig.from_pretrained(base)
    except Exception:  # base not reachable offline: let the weight shapes decide
        return None
    config = model.config
    for attr in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size"):
        a, b = getattr(base_config, attr, None), getattr(config, attr, None)
        if a is not None and b is not None and a != b:
            return f"{attr} {a} vs {b}"
    return None
