"""Training data: ShareGPT / JSONL prompts, a byte-level BPE tokenizer with a chat template,
token-id datasets with a loss mask, and response regeneration by the target.

Dataset format (a directory, written shard by shard so that long jobs resume)::

    DIR/meta.json            {"kind": ..., "vocab_size": ..., ...}
    DIR/part-00000.npz       tokens int32 [N], loss_mask uint8 [N], offsets int64 [S + 1]

Sequence ``s`` is ``tokens[offsets[s]:offsets[s+1]]``; ``loss_mask`` is 1 where a token is a
training label (the response part of a prompt + response sequence).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from ..prompts import iter_sharegpt_items

logger = logging.getLogger(__name__)

# Special tokens of the project's tokenizer; ids are fixed by their order (0..3).
PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
MASK_TOKEN = "<|mask|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END, MASK_TOKEN]

# ChatML, the format of Qwen3's template (without the tool / thinking branches).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
          "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "system": "system"}


# ---- raw text ------------------------------------------------------------------------------------
# ShareGPT conversations, parsed item by item (the packaged file is truncated)
iter_sharegpt = iter_sharegpt_items


def conversation_messages(item: dict) -> list[dict]:
    """ShareGPT item -> chat messages [{"role", "content"}], unknown roles dropped."""
    out = []
    for turn in item.get("conversations", []):
        role = _ROLES.get(str(turn.get("from", "")).lower())
        value = turn.get("value")
        if role is None or not isinstance(value, str) or not value.strip():
            continue
        out.append({"role": role, "content": value})
    return out


def iter_jsonl_prompts(path: str | Path) -> Iterator[dict]:
    """Items of a JSONL file: ``{"messages": [...]}``, ``{"conversations": [...]}`` (ShareGPT) or
    ``{"prompt": "..."}``; each is returned as ``{"id", "messages"}``."""
    with open(path) as f:
        for lineno, line in enumerate(f):
            if not line.strip():
                continue
            obj = json.loads(line)
            if "messages" in obj:
                msgs = obj["messages"]
            elif "conversations" in obj:
                msgs = conversation_messages(obj)
            elif "prompt" in obj:
                msgs = [{"role": "user", "content": obj["prompt"]}]
            else:
                raise ValueError(f"{path}:{lineno + 1}: expected 'messages', 'conversations' "
                                 "or 'prompt'")
            yield {"id": str(obj.get("id", lineno)), "messages": msgs}


def is_heldout(conv_id: str, frac: float) -> bool:
    """Deterministic split by a hash of the conversation id."""
    h = int(hashlib.sha1(conv_id.encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < frac


def render_chat(messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    """The chat template in plain Python (identical to :data:`CHAT_TEMPLATE`)."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


# ---- tokenizer ---------------------------------------------------------------------------------
def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path,
                    model_max_length: int = 2048):
    """Train a byte-level BPE tokenizer (``tokenizers``) and save it as an HF tokenizer with the
    chat template, ``<|im_end|>`` as eos, ``<|endoftext|>`` as pad and ``<|mask|>`` as the
    drafter's mask token. Returns the ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD_TOKEN,
                                 mask_token=MASK_TOKEN,
                                 additional_special_tokens=[IM_START],
                                 model_max_length=model_max_length)
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(str(out_dir))
    return hf


# ---- token datasets ----------------------------------------------------------------------------
@dataclass
class TokenDataset:
    """Variable-length token sequences with a per-token loss mask (see the module docstring)."""

    tokens: np.ndarray  # int32 [N]
    loss_mask: np.ndarray  # uint8 [N]
    offsets: np.ndarray  # int64 [S + 1]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.tokens[a:b], self.loss_mask[a:b]

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    @classmethod
    def from_sequences(cls, seqs: Sequence[Sequence[int]],
                       masks: Sequence[Sequence[int]]) -> "TokenDataset":
        lens = [len(s) for s in seqs]
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lens)
        tokens = np.fromiter((t for s in seqs for t in s), dtype=np.int32, count=int(offsets[-1]))
        mask = np.fromiter((m for s in masks for m in s), dtype=np.uint8, count=int(offsets[-1]))
        return cls(tokens, mask, offsets)

    @classmethod
    def concat(cls, parts: Sequence["TokenDataset"]) -> "TokenDataset":
        if not parts:
            return cls(np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(1, np.int64))
        offs, base = [np.zeros(1, np.int64)], 0
        for p in parts:
            offs.append(p.offsets[1:] + base)
            base += p.num_tokens
        return cls(np.concatenate([p.tokens for p in parts]),
                   np.concatenate([p.loss_mask for p in parts]), np.concatenate(offs))

    @classmethod
    def load_part(cls, path: str | Path) -> "TokenDataset":
        """One shard written by :meth:`save_part`."""
        with np.load(path) as z:
            return cls(z["tokens"].astype(np.int32), z["loss_mask"],
                       z["offsets"].astype(np.int64))

    def save_part(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, tokens=self.tokens, loss_mask=self.loss_mask,
                            offsets=self.offsets)
        tmp.replace(path)  # atomic: a resumed job never sees half a shard


def load_dataset(path: str | Path) -> TokenDataset:
    """All ``part-*.npz`` shards of a dataset directory, in order."""
    path = Path(path)
    parts = sorted(path.glob("part-*.npz"))
    if not parts:
        raise FileNotFoundError(f"{path}: no part-*.npz shards")
    return TokenDataset.concat([TokenDataset.load_part(p) for p in parts])


def write_meta(path: str | Path, **meta) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def pad_batch(seqs: Sequence[np.ndarray], masks: Sequence[np.ndarray], max_len: int,
              pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to the longest (<= max_len): ids [B, L], loss_mask [B, L] bool, lengths [B]."""
    seqs = [s[:max_len] for s in seqs]
    masks = [m[:max_len] for m in masks]
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    lm = torch.zeros((len(seqs), length), dtype=torch.bool)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        ids[i, : len(s)] = torch.from_numpy(s.astype(np.int64))
        lm[i, : len(m)] = torch.from_numpy(m.astype(bool))
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    return ids, lm, lens


# ---- regeneration ------------------------------------------------------------------------------
def _progress(total: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=quiet or None, unit="prompt")


def _shard_plan(n: int, shard_size: int) -> list[tuple[int, int]]:
    return [(i, min(n, i + shard_size)) for i in range(0, n, shard_size)]


@torch.no_grad()
def regenerate_hf(target, prompts: Sequence[Sequence[int]], out_dir: str | Path, *,
                  max_new_tokens: int, temperatures: Sequence[float], pad_id: int,
                  eos_ids: Sequence[int], batch_size: int = 256, shard_size: int = 1024,
                  seed: int = 0, quiet: bool = False, time_limit_s: float | None = None) -> int:
    """Responses regenerated by a Transformers target (the fallback without a server).

    Prompt ``j`` is answered at ``temperatures[j % len(temperatures)]``. Shards that exist are
    skipped, so an interrupted job resumes. Returns the number of prompts done.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = next(target.parameters()).device
    plan = _shard_plan(len(prompts), shard_size)
    start = time.monotonic()
    done = 0
    bar = _progress(len(prompts), "regenerate", quiet)
    for si, (lo, hi) in enumerate(plan):
        part = out_dir / f"part-{si:05d}.npz"
        if part.exists():
            done += hi - lo
            bar.update(hi - lo)
            continue
        if time_limit_s is not None and time.monotonic() - start > time_limit_s:
            logger.warning("regenerate: time limit %.0f s reached after %d prompts",
                           time_limit_s, done)
            break
        answers: dict[int, list[int]] = {}
        # group by temperature so that one generate call has one sampling setting
        for temp_idx, temp in enumerate(temperatures):
            idx = [j for j in range(lo, hi) if j % len(temperatures) == temp_idx]
            for b0 in range(0, len(idx), batch_size):
                chunk = [list(prompts[j]) for j in idx[b0: b0 + batch_size]]
                gen = generate_batch(target, chunk, max_new_tokens=max_new_tokens,
                                     temperature=temp, pad_id=pad_id, eos_ids=eos_ids,
                                     seed=seed + lo + b0 + 7919 * temp_idx, device=device)
                answers.update(zip(idx[b0: b0 + batch_size], gen))
                bar.update(len(chunk))
        seqs = [list(prompts[j]) + answers[j] for j in range(lo, hi)]  # prompt order
        masks = [[0] * len(prompts[j]) + [1] * len(answers[j]) for j in range(lo, hi)]
        TokenDataset.from_sequences(seqs, masks).save_part(part)
        done += hi - lo
    bar.close()
    return done


@torch.no_grad()
def generate_batch(target, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
                   temperature: float, pad_id: int, eos_ids: Sequence[int], seed: int,
                   device) -> list[list[int]]:
    """Left-padded batched HF ``generate``; returns each response up to and including eos."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        att[i, width - len(p):] = 1
    gen = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    kw = dict(do_sample=temperature > 0, max_new_tokens=max_new_tokens, pad_token_id=pad_id,
              eos_token_id=list(eos_ids), top_k=0, top_p=1.0)
    if temperature > 0:
        kw["temperature"] = temperature
    out = target.generate(input_ids=ids.to(device), attention_mask=att.to(device), **kw)
    out = out[:, width:].tolist()
    eos = set(eos_ids)
    res = []
    for row in out:
        r = []
        for t in row:
            r.append(t)
            if t in eos:
                break
        while r and r[-1] == pad_id and pad_id not in eos:
            r.pop()
        res.append(r)
    return res


def regenerate_openai(base_url: str, model: str, prompts: Sequence[Sequence[int]],
                      out_dir: str | Path, *, max_new_tokens: int,
                      temperatures: Sequence[float], tokenizer, concurrency: int = 64,
                      shard_size: int = 1024, quiet: bool = False,
                      timeout_s: float = 600.0) -> int:
    """Responses regenerated through an OpenAI-compatible server (e.g. SGLang), with
    ``concurrency`` requests in flight. Prompts are sent as token ids to ``/v1/completions``;
    the returned text is re-tokenized. Existing shards are skipped (resume)."""
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    url = base_url.rstrip("/") + "/v1/completions"

    def ask(j: int) -> list[int]:
        body = {"model": model, "prompt": list(prompts[j]), "max_tokens": max_new_tokens,
                "temperature": float(temperatures[j % len(temperatures)]),
                "skip_special_tokens": False}
        req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            choice = json.loads(resp.read())["choices"][0]
        ids = tokenizer.encode(choice["text"], add_special_tokens=False)
        if choice.get("finish_reason") == "stop" and tokenizer.eos_token_id is not None:
            if not ids or ids[-1] != tokenizer.eos_token_id:
                ids.append(tokenizer.eos_token_id)
        return ids

    bar = _progress(len(prompts), "regenerate", quiet)
    done = 0
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for si, (lo, hi) in enumerate(_shard_plan(len(prompts), shard_size)):
            part = out_dir / f"part-{si:05d}.npz"
            if not part.exists():
                seqs, masks = [], []
                for j, r in zip(range(lo, hi), pool.map(ask, range(lo, hi))):
                    p = list(prompts[j])
                    seqs.append(p + r)
                    masks.append([0] * len(p) + [1] * len(r))
                    bar.update(1)
                TokenDataset.from_sequences(seqs, masks).save_part(part)
            else:
                bar.update(hi - lo)
            done += hi - lo
    bar.close()
    return done
