"""kocurate's scoring engine as an lm-evaluation-harness model: ``lm_eval --model kocurate``.

`KocurateLM` is lm-eval's HF model (`HFLM`: tokenization, generation, rolling log-likelihoods,
accelerate data parallel, ``parallelize`` / device maps) with one method replaced,
``_loglikelihood_tokens``, the one every multiple-choice task spends its time in:

- Requests are grouped by their context tokens. A group whose every (context, continuation) pair
  fits the model runs its context ONCE (right-padded batch, no mask: the same arithmetic as
  lm-eval), keeping its `DynamicCache`; then only the continuation tokens run on top of it. With
  the eager or SDPA attention all choices of a context share ONE row (a 4D mask lets each choice
  see the context and its own earlier tokens only; position ids restart after the context for
  each choice), so the cache is never copied; with other attentions (flash attention ignores
  custom masks) the cache is copied to one row per choice with ``Cache.batch_select_indices``.
- Groups are batched longest context first (an out-of-memory shows at once, as lm-eval does).
- The log-softmax is taken only at continuation positions (float32 unless ``softmax_dtype``).
- A pair that needs left truncation (longer than ``max_length + 1``), a model whose forward has
  no ``cache`` argument, or a sliding-window model whose window is shorter than the pair, take
  lm-eval's own per-choice path: ``(ctx + cont)[-(max_length + 1):][:-1]``, one row per choice.

So the numbers are lm-eval's (the same float32 sums up to rounding), only the cost changes.
Nothing deprecated in transformers 5 is used: the cache is passed as ``cache=`` (not
``past_key_values``), and copied with ``batch_select_indices`` (not ``reorder_cache``).

Tokenization is lm-eval's too, except for tasks whose name starts with ``polyglot_`` (the legacy
protocol shipped in ``kocurate/evaluate/tasks/polyglot``): there context and continuation are
encoded apart with ``add_special_tokens=False`` and no whitespace moved, as that branch did.
"""

from __future__ import annotations

import inspect
from collections import defaultdict

import torch
import torch.nn.functional as F
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from ..errors import InputError, first_line

_CPU_AUTO_BATCH = 16
POLYGLOT_PREFIX = "polyglot_"


def separate_encoding(task_name: str | None) -> bool:
    """Tasks of the legacy polyglot protocol encode context and continuation apart."""
    return bool(task_name) and task_name.startswith(POLYGLOT_PREFIX)


def _unwrap(model):
    base = getattr(model, "get_base_model", None)
    return base() if callable(base) else model


def _accepts(model, name: str) -> bool:
    try:
        params = inspect.signature(_unwrap(model).forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params


@register_model("kocurate")
class KocurateLM(HFLM):
    """HFLM with kocurate's shared-context `_loglikelihood_tokens`; every other behaviour is HFLM's.

    Extra arguments: ``share_context`` (False: lm-eval's per-choice path for everything, for
    comparison), ``kocurate_dtype`` (kocurate's dtype rule for a model loaded here: auto = bf16 on a
    GPU that has it, fp32 on a CPU), ``load_in_4bit`` (bitsandbytes NF4 via kocurate.lm).
    """

    def __init__(self, *args, share_context: bool = True, kocurate_dtype: str | None = None,
                 adapter_check: bool = True, **kwargs):
        self.share_context = share_context
        self._kocurate_dtype = kocurate_dtype
        self._adapter_check = adapter_check
        self.stats = {"forward_calls": 0, "shared_groups": 0, "shared_rows": 0, "full_rows": 0,
                      "tokens": 0, "tokens_one_row_per_choice": 0}
        self._auto_batch: int | None = None
        super().__init__(*args, **kwargs)
        self._cache_ok = _accepts(self.model, "cache")
        self._keep_ok = _accepts(self.model, "logits_to_keep")
        self._window = getattr(self.config, "sliding_window", None) if getattr(self.config, "use_sliding_window", True) else None
        # a custom 4D mask is honoured by the eager and SDPA attentions (flash attention ignores it)
        self.pack_choices = getattr(self.config, "_attn_implementation", None) in ("sdpa", "eager")

    # -- loading through kocurate's one loader -----------------------------------------------------
    def _create_model(self, pretrained, revision="main", dtype="auto", trust_remote_code=False, parallelize=False,
                      gpus=None, max_memory_per_gpu=None, max_cpu_memory=None, offload_folder="./offload",
                      tp_plan=None, peft=None, delta=None, autogptq=False, gptqmodel=False, gguf_file=None,
                      quantization_config=None, subfolder="", **kwargs):
        if tp_plan is not None or delta or autogptq or gptqmodel or gguf_file or subfolder:
            return super()._create_model(pretrained, revision=revision, dtype=dtype, trust_remote_code=trust_remote_code,
                                         parallelize=parallelize, gpus=gpus, max_memory_per_gpu=max_memory_per_gpu,
                                         max_cpu_memory=max_cpu_memory, offload_folder=offload_folder, tp_plan=tp_plan,
                                         peft=peft, delta=delta, autogptq=autogptq, gptqmodel=gptqmodel,
                                         gguf_file=gguf_file, quantization_config=quantization_config,
                                         subfolder=subfolder, **kwargs)
        from ..lm import load_causal_lm

        load_in_4bit = bool(kwargs.pop("load_in_4bit", False))
        model_kwargs = dict(kwargs)
        model_kwargs.update(self._get_accelerate_args(parallelize=parallelize, device_map=kwargs.get("device_map"),
                                                      max_memory_per_gpu=max_memory_per_gpu,
                                                      max_cpu_memory=max_cpu_memory, offload_folder=offload_folder,
                                                      gpus=gpus))
        if trust_remote_code:
            model_kwargs["trust_remote_code"] = True
        if revision and revision != "main":
            model_kwargs["revision"] = revision
        device = str(self._device) if getattr(self, "_device", None) is not None else "auto"
        self._model, _, _, _ = load_causal_lm(pretrained, device=device, dtype=self._kocurate_dtype or "auto",
                                              load_in_4bit=load_in_4bit, place=False, **model_kwargs)
        if peft:
            self._model = apply_adapter(self._model, pretrained, peft, check=self._adapter_check)

    # -- tokenization --------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False):
        if not any(separate_encoding(getattr(r, "task_name", None)) for r in requests):
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        new_reqs = []
        for req in requests:
            context, continuation = req.args
            if separate_encoding(getattr(req, "task_name", None)) and context:
                ctx = self.tok_encode(context, add_special_tokens=False)
                cont = self.tok_encode(continuation, add_special_tokens=False)
            elif context == "":
                cont = self.tok_encode(continuation, add_special_tokens=False)
                ctx, cont = ([self.prefix_token_id], cont) if self.prefix_token_id != cont[0] else (cont[:1], cont[1:])
            else:
                ctx, cont = self._encode_pair(context, continuation)
            new_reqs.append(((context, continuation), ctx, cont))
        return self._loglikelihood_tokens(new_reqs, disable_tqdm=disable_tqdm)

    # -- the engine ----------------------------------------------------------------------------
    def _batch_size_for(self, requests, override_bs) -> int:
        if override_bs:
            return int(override_bs)
        if self.batch_size != "auto":
            return int(self.batch_size)
        if self.device.type != "cuda":
            return _CPU_AUTO_BATCH
        if self._auto_batch is None:
            longest = max(range(len(requests)), key=lambda i: len(requests[i][1]) + len(requests[i][2]))
            self._auto_batch = self._detect_batch_size(requests, longest)
        return self._auto_batch

    def _fits(self, ctx: list[int], cont: list[int]) -> bool:
        total = len(ctx) + len(cont)
        if total > self.max_length + 1:
            return False
        return not (isinstance(self._window, int) and self._window > 0 and total > self._window)

    def _forward(self, **kwargs):
        self.stats["forward_calls"] += 1
        with torch.inference_mode(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                                    enabled=self.mixed_precision_dtype is not None):
            return self.model(**kwargs)

    def _logp(self, picked: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(picked, dim=-1, dtype=self.softmax_dtype or torch.float32)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        if self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        res: list[tuple[float, bool] | None] = [None] * len(requests)
        for _, ctx, cont in requests:
            assert len(ctx) > 0 and len(cont) > 0 and len(cont) <= self.max_length
        self.stats["tokens_one_row_per_choice"] += sum(min(len(c) + len(k), self.max_length + 1) - 1 for _, c, k in requests)

        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        full: list[int] = []
        for i, (_, ctx, cont) in enumerate(requests):
            if self.share_context and self._cache_ok and self._fits(ctx, cont):
                groups[tuple(ctx)].append(i)
            else:
                full.append(i)
        # a context shared by a pair that does not fit goes the per-choice way for all its pairs
        keys = sorted(groups, key=lambda k: (-len(k), k))
        bs = self._batch_size_for(requests, override_bs) if requests else 1
        pbar = tqdm(total=len(requests), disable=(disable_tqdm or (self.rank != 0)), desc="Running loglikelihood requests")

        def done(i, answer):
            res[i] = answer
            request_str = requests[i][0]
            if request_str is not None:
                self.cache_hook.add_partial("loglikelihood", request_str, answer)
            pbar.update(1)

        # shared-context path: up to `bs` contexts per forward, longest first
        for start in range(0, len(keys), bs):
            chunk = keys[start:start + bs]
            members = [groups[k] for k in chunk]
            for i, answer in zip((i for m in members for i in m),
                                 self._score_shared([list(k) for k in chunk],
                                                    [[requests[i][2] for i in m] for m in members])):
                done(i, answer)

        # lm-eval's path: one row per (context, continuation), longest first, left-truncated
        full.sort(key=lambda i: (-(len(requests[i][1]) + len(requests[i][2])), tuple(requests[i][1] + requests[i][2])))
        for start in range(0, len(full), bs):
            chunk = full[start:start + bs]
            for i, answer in zip(chunk, self._score_rows([(requests[i][1], requests[i][2]) for i in chunk])):
                done(i, answer)
        pbar.close()
        return res

    def _score_rows(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """lm-eval's arithmetic: right-padded inputs, no mask, left truncation at max_length."""
        inputs = [(ctx + cont)[-(self.max_length + 1):][:-1] for ctx, cont in pairs]
        width = max(len(x) for x in inputs)
        batch = torch.zeros((len(inputs), width), dtype=torch.long)
        for r, x in enumerate(inputs):
            batch[r, :len(x)] = torch.tensor(x, dtype=torch.long)
        self.stats["tokens"] += sum(len(x) for x in inputs)
        self.stats["full_rows"] += len(inputs)
        logits = self._forward(input_ids=batch.to(self.device), use_cache=False).logits
        rows, cols, targets, owners = [], [], [], []
        for r, ((_, cont), x) in enumerate(zip(pairs, inputs)):
            n = len(cont)
            rows += [r] * n
            cols += range(len(x) - n, len(x))
            targets += cont
            owners += [r] * n
        return self._sums(logits, rows, cols, targets, owners, len(pairs))

    def _sums(self, logits, rows, cols, targets, owners, n_owners, into=None):
        """Summed log p(target) at logits[rows, cols] per owner, and whether each was the argmax."""
        dev = logits.device
        picked = logits[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)]
        logp = self._logp(picked)
        target = torch.tensor(targets, device=dev)
        token_lp = logp.gather(1, target[:, None])[:, 0]
        greedy = (logp.argmax(dim=-1) == target)
        owner = torch.tensor(owners, device=dev)
        sums = torch.zeros(n_owners, dtype=torch.float64, device=dev).index_add_(0, owner, token_lp.double())
        misses = torch.zeros(n_owners, dtype=torch.long, device=dev).index_add_(0, owner, (~greedy).long())
        out = list(zip(sums.tolist(), (misses == 0).tolist()))
        if into is None:
            return out
        return [(a + s, g and h) for (a, g), (s, h) in zip(into, out)]

    def _score_shared(self, contexts: list[list[int]], conts: list[list[list[int]]]) -> list[tuple[float, bool]]:
        """Each context once; its cache copied per continuation; then the continuations only."""
        dev = self.device
        lens = [len(c) for c in contexts]
        width = max(lens)
        ctx = torch.zeros((len(contexts), width), dtype=torch.long)
        for r, c in enumerate(contexts):
            ctx[r, :len(c)] = torch.tensor(c, dtype=torch.long)
        self.stats["tokens"] += sum(lens)
        self.stats["shared_groups"] += len(contexts)
        kwargs = {}
        last = sorted({n - 1 for n in lens})
        if self._keep_ok:
            kwargs["logits_to_keep"] = torch.tensor(last, device=dev)
            col_of = {p: c for c, p in enumerate(last)}
            cols = [col_of[n - 1] for n in lens]
        else:
            cols = [n - 1 for n in lens]
        # right padding and no mask: causal attention never lets a real position see the padding
        first = self._forward(input_ids=ctx.to(dev), use_cache=True, **kwargs)
        rows = [(r, j) for r, cs in enumerate(conts) for j in range(len(cs))]
        self.stats["shared_rows"] += len(rows)
        out = self._sums(first.logits, [r for r, _ in rows], [cols[r] for r, _ in rows],
                         [conts[r][j][0] for r, j in rows], list(range(len(rows))), len(rows))
        cache = getattr(first, "cache", None)
        del first
        rest = max(len(conts[r][j]) - 1 for r, j in rows)
        if rest == 0:
            return out
        if cache is None:  # a model that takes `cache` but returns none: lm-eval's path for these
            return self._score_rows([(contexts[r], conts[r][j]) for r, j in rows])
        if self.pack_choices:
            return self._packed_continuations(cache, lens, width, conts, rows, out)
        # one cache row per continuation: a copy of its own context's keys and values
        cache.batch_select_indices(torch.tensor([r for r, _ in rows], device=dev))
        inp = torch.zeros((len(rows), rest), dtype=torch.long)
        mask = torch.ones((len(rows), width + rest), dtype=torch.long)
        pos = torch.zeros((len(rows), rest), dtype=torch.long)
        sel_rows, sel_cols, targets, owners = [], [], [], []
        for k, (r, j) in enumerate(rows):
            toks = conts[r][j]
            if len(toks) > 1:
                inp[k, :len(toks) - 1] = torch.tensor(toks[:-1], dtype=torch.long)
            # the context's padding is masked; padded continuation slots stay visible to themselves
            # so that no query row is fully masked; they are never read
            mask[k, lens[r]:width] = 0
            pos[k] = torch.arange(lens[r], lens[r] + rest)
            n = len(toks) - 1
            sel_rows += [k] * n
            sel_cols += range(n)
            targets += toks[1:]
            owners += [k] * n
        self.stats["tokens"] += sum(len(conts[r][j]) - 1 for r, j in rows)
        logits = self._forward(input_ids=inp.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                               cache=cache, use_cache=False).logits
        return self._sums(logits, sel_rows, sel_cols, targets, owners, len(rows), into=out)

    def _packed_continuations(self, cache, lens, width, conts, rows, out):
        """All choices of a context in ONE row on top of its own cache (no copy of the cache per
        choice): a 4D mask lets each choice's tokens see the context and their own earlier tokens only,
        and position ids restart after the context for every choice."""
        dev = self.device
        segs = []  # per context: (start in the row, length, flat row index of the choice)
        k = 0
        for r, cs in enumerate(conts):
            start, mine = 0, []
            for toks in cs:
                mine.append((start, len(toks) - 1, k))
                start += len(toks) - 1
                k += 1
            segs.append(mine)
        span = max(sum(n for _, n, _ in mine) for mine in segs)
        n_ctx = len(conts)
        inp = torch.zeros((n_ctx, span), dtype=torch.long)
        pos = torch.zeros((n_ctx, span), dtype=torch.long)
        seg = torch.full((n_ctx, span), -1, dtype=torch.long)
        sel_rows, sel_cols, targets, owners = [], [], [], []
        for r, mine in enumerate(segs):
            pos[r] = lens[r]
            for j, (start, n, flat) in enumerate(mine):
                if n == 0:
                    continue
                toks = conts[r][j]
                inp[r, start:start + n] = torch.tensor(toks[:-1], dtype=torch.long)
                pos[r, start:start + n] = torch.arange(lens[r], lens[r] + n)
                seg[r, start:start + n] = j
                sel_rows += [r] * n
                sel_cols += range(start, start + n)
                targets += toks[1:]
                owners += [flat] * n
        q = torch.arange(span)
        # context part: a row's own context tokens (its padding hidden); continuation part: same
        # choice, not later. Padding slots see earlier padding only (never read, never fully masked).
        see_ctx = (torch.arange(width)[None, None, :] < torch.tensor(lens)[:, None, None]).expand(n_ctx, span, width)
        see_cont = (seg[:, :, None] == seg[:, None, :]) & (q[None, None, :] <= q[None, :, None])
        allowed = torch.cat([see_ctx, see_cont], dim=-1)[:, None]
        dtype = next(self.model.parameters()).dtype
        dtype = dtype if dtype.is_floating_point else torch.float32
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        self.stats["tokens"] += sum(n for mine in segs for _, n, _ in mine)
        logits = self._forward(input_ids=inp.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                               cache=cache, use_cache=False).logits
        return self._sums(logits, sel_rows, sel_cols, targets, owners, len(rows), into=out)


def apply_adapter(model, model_id: str, adapter: str, *, check: bool = True):
    """A PEFT adapter on top of `model`, merged; an adapter made for another base is a one-line error."""
    import json
    from pathlib import Path

    config_path = Path(adapter) / "adapter_config.json"
    if not config_path.is_file():
        raise InputError(f"--adapter {adapter}: no adapter_config.json there; pass a folder written by PEFT's save_pretrained")
    try:
        base = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except json.JSONDecodeError as exc:
        raise InputError(f"{config_path}: malformed JSON ({exc.msg} at line {exc.lineno}); fix or re-save the adapter") from None
    mismatch = base_mismatch(model, base) if check else None
    if mismatch:
        raise InputError(f"--adapter {adapter}: made for {base}, which does not match --model {model_id} ({mismatch}); "
                         "pass the adapter's base model as --model")
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as exc:
        raise InputError(f"--adapter {adapter}: does not fit --model {model_id} ({first_line(exc, 160)}); "
                         "pass the adapter's base model as --model") from None


def base_mismatch(model, base: str | None) -> str | None:
    """Compare the adapter's recorded base (when readable offline) with the model's shape."""
    if not base:
        return None
    from transformers import AutoConfig

    try:
        base_config = AutoConfig.from_pretrained(base)
    except Exception:  # base not reachable offline: the weight shapes decide
        return None
    config = model.config
    for attr in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size"):
        a, b = getattr(base_config, attr, None), getattr(config, attr, None)
        if a is not None and b is not None and a != b:
            return f"{attr} {a} vs {b}"
    return None
