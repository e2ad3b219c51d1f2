"""The plugin's draft -> verify -> commit loop on CPU, through SGLang's own pieces, for several
rounds of a batch of requests; the committed tokens must equal plain greedy decoding.

Driven for real (SGLang 0.5.17 code and ours):
- ``DominoWorkerV2`` (a bare instance: ``DFlashWorkerV2.__init__`` builds TP workers, memory
  pools and CUDA graphs, none of which exist on CPU): its proposal seams
  ``_greedy_sample_from_vocab_parallel_head`` (eager) and ``_maybe_build_draft_sampler`` (the
  sampler folded into the draft graph, called here as the capture hook calls it), both built by
  ``_domino_build_sampler`` on the target's ``lm_head`` / embedding and the head weights of an
  SGLang ``DominoDraftModel`` loaded with ``load_weights`` from a saved checkpoint;
- SGLang's Triton block preparation (``_prepare_dflash_draft_block_unchecked``: block ids
  [bonus, MASK...], positions, verify cache locations from ``req_to_token``) and greedy
  accept / bonus / commit lengths (``_compute_dflash_accept_bonus_triton_unchecked``, into the
  worker's own ``_next_accept_bonus_buffers``), both under TRITON_INTERPRET=1.
Stood in by plain PyTorch (they need SGLang's model runner, attention backends and KV pools):
the draft backbone forward (``domino_sglang.core`` drafter, the same weights), the target's
verify forward (Transformers, one KV cache per request, cropped to ``new_seq_lens``) and the
draft-KV commit of the accepted target features (``extend_context`` with ``commit_lens``
rows, as ``_append_target_hidden_to_draft_kv_by_loc`` writes rows < commit_len).
"""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from _pair import plain_greedy

VOCAB, BLOCK, MASK = 16, 6, 15
PROMPTS = [[2, 3, 4], [5, 6, 7, 8, 9, 2], [4, 4]]
NEW_TOKENS = 24
MAX_LEN = 64
TREE_TOPK, TREE_N = 2, 9  # 9 nodes of a block of 6: budget-limited, branching at every depth


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from domino_sglang.hf.tiny import build_tiny_drafter, build_tiny_target

    root = tmp_path_factory.mktemp("loop_pair")
    target = build_tiny_target(vocab_size=VOCAB, scale=3.0, eos_token_id=1)
    drafter = build_tiny_drafter(target, block_size=BLOCK, mask_token_id=MASK, head_scale=10.0)
    with torch.no_grad():  # W1's GRU-state columns x30: proposals then depend on the bonus
        drafter.embed_proj[0].weight[:, target.config.hidden_size:] *= 30.0
    target.config.save_pretrained(root / "target")
    drafter.save_pretrained(root / "draft")
    return target, drafter, str(root / "target"), str(root / "draft")


def _worker(target, tdir, ddir, cls=None, extra=()):
    """A bare DominoWorkerV2 (or ``cls``) with the attributes its seams read, on a loaded
    DominoDraftModel; ``extra``: more server flags."""
    import sglang.srt.layers.rotary_embedding.base as rope_base
    from safetensors.torch import load_file
    from sglang.srt.runtime_context import get_context, get_parallel
    from sglang.srt.server_args import prepare_server_args
    from sglang.srt.utils.hf_transformers_utils import get_config

    from domino_sglang.sglang_plugin import register
    from domino_sglang.sglang_plugin.draft_model import DominoDraftModel
    from domino_sglang.sglang_plugin.serve_config import serve_config_of
    from domino_sglang.sglang_plugin.worker import DominoWorkerV2

    assert register()
    sa = prepare_server_args(["--model-path", tdir, "--speculative-algorithm", "domino",
                              "--device", "cuda", "--skip-tokenizer-init",
                              "--speculative-draft-model-path", ddir, *extra])
    assert sa.speculative_num_draft_tokens == (BLOCK if not extra else TREE_N)
    get_context().set_server_args(sa)
    rope_base._is_cpu = True
    with get_parallel().override(tp_size=1, tp_rank=0, attn_tp_size=1, attn_tp_rank=0):
        draft_model = DominoDraftModel(get_config(ddir, trust_remote_code=False))
    draft_model.load_weights(iter(load_file(str(Path(ddir) / "model.safetensors")).items()))
    assert draft_model.has_domino_head

    cls = cls or DominoWorkerV2
    w = cls.__new__(cls)
    w._target_worker = SimpleNamespace(model_runner=SimpleNamespace(model=target))
    w.__dict__.update(server_args=sa, ps=SimpleNamespace(tp_rank=0), draft_model=draft_model,
                      block_size=BLOCK, domino_config=serve_config_of(sa),
                      device=torch.device("cpu"), _domino_last_hidden=None,
                      _domino_eager_sampler=None, _domino_eager_batches=set(),
                      _accept_bonus_buffer_cap=0,
                      _accept_bonus_buffer_slot=0, _accept_len_buf=None)
    return w


@pytest.mark.sglang
def test_worker_loop_commits_plain_greedy_tokens(pair, monkeypatch):
    from sglang.kernels.ops.speculative.dflash import (
        _compute_dflash_accept_bonus_triton_unchecked, _prepare_dflash_draft_block_unchecked)
    from transformers import DynamicCache

    from domino_sglang.hf.generate import layer_features
    from domino_sglang.sglang_plugin import worker as worker_mod
    from domino_sglang.core import domino_rollout_ref

    target, drafter, tdir, ddir = pair
    w = _worker(target, tdir, ddir)
    bs = len(PROMPTS)
    # the graph-path sampler, sized like the largest decode-graph batch
    monkeypatch.setattr(worker_mod, "get_exec", lambda: SimpleNamespace(graph=SimpleNamespace(
        cuda_graph_config=SimpleNamespace(decode=SimpleNamespace(bs=[1, 2, 4])))))
    sampler = w._maybe_build_draft_sampler()
    assert sampler is not None and sampler.max_bs == 4
    embed = target.get_input_embeddings().weight
    layer_ids = drafter.config.target_layer_ids

    # ---- prefill: the target over each prompt, prompt features into the draft context -------
    caches, ctxs, committed = [], [], [[] for _ in PROMPTS]
    bonus = torch.empty(bs, dtype=torch.long)
    with torch.no_grad():
        for r, prompt in enumerate(PROMPTS):
            caches.append(DynamicCache())
            out = target(torch.tensor([prompt]), past_key_values=caches[r], use_cache=True,
                         output_hidden_states=True)
            ctxs.append(drafter.extend_context(None, layer_features(out.hidden_states, layer_ids),
                                               torch.arange(len(prompt))[None]))
            bonus[r] = out.logits[0, -1].argmax()
            committed[r].append(int(bonus[r]))
    prefix = torch.tensor([len(p) for p in PROMPTS], dtype=torch.int64)
    req_pool = torch.tensor([2, 0, 1], dtype=torch.int64)  # requests sit in shuffled pool rows
    req_to_token = (torch.arange(3 * MAX_LEN, dtype=torch.int32).view(3, MAX_LEN) + 1000)
    block_ids = torch.empty(bs, BLOCK, dtype=torch.int64)
    positions = torch.empty(bs, BLOCK, dtype=torch.int64)
    cache_loc = torch.empty(bs, BLOCK, dtype=torch.int64)

    accepted_drafts = rejected = rounds = bonus_matters = 0
    while min(len(c) for c in committed) < NEW_TOKENS:
        rounds += 1
        assert rounds <= NEW_TOKENS, "the loop does not advance"
        # ---- block (SGLang's kernel) ---------------------------------------------------------
        _prepare_dflash_draft_block_unchecked(
            bonus_tokens=bonus, prefix_lens=prefix, req_pool_indices=req_pool,
            req_to_token=req_to_token, block_ids_out=block_ids, positions_out=positions,
            cache_loc_out=cache_loc, mask_token_id=MASK)
        assert torch.equal(block_ids[:, 0], bonus) and (block_ids[:, 1:] == MASK).all()
        assert torch.equal(positions, prefix[:, None] + torch.arange(BLOCK))
        assert torch.equal(cache_loc, req_to_token[req_pool][:, None, :].expand(-1, BLOCK, -1)
                           .gather(2, positions[:, :, None]).squeeze(2).long())
        # ---- draft forward (plain PyTorch stand-in), then the worker's proposal seams --------
        with torch.no_grad():
            hidden = torch.cat([drafter(embed[block_ids[r:r + 1]], positions[r:r + 1], ctxs[r])
                                for r in range(bs)])  # [bs, B, D], post-norm
        flat = hidden.reshape(bs * BLOCK, -1)
        w._domino_last_hidden = flat  # what forward_keeping_hidden keeps of the draft forward
        w._draft_block_ids_buf = block_ids
        eager = w._greedy_sample_from_vocab_parallel_head(
            hidden_states=hidden[:, 1:].reshape(bs * (BLOCK - 1), -1),
            lm_head=target.lm_head).view(bs, BLOCK - 1)
        sampler(flat, block_ids.view(-1))  # as the draft-graph capture hook calls it
        graph = sampler.out[:bs * (BLOCK - 1)].view(bs, BLOCK - 1)
        ref = domino_rollout_ref(hidden, bonus, target.lm_head.weight, embed,
                                 drafter.head_weights(), shift_label=drafter.config.shift_label,
                                 pure_prefix_len=drafter.config.pure_draft_prefix_len).tokens
        other = domino_rollout_ref(hidden, bonus.roll(1), target.lm_head.weight, embed,
                                   drafter.head_weights(), shift_label=drafter.config.shift_label,
                                   pure_prefix_len=drafter.config.pure_draft_prefix_len).tokens
        bonus_matters += not torch.equal(other, ref)
        assert torch.equal(eager, ref), f"round {rounds}: eager seam {eager} vs spec {ref}"
        assert torch.equal(graph, ref), f"round {rounds}: graph sampler {graph} vs spec {ref}"
        # ---- verify: the target over [bonus, d_0 ..] (Transformers stand-in) ---------------
        candidates = torch.cat([bonus[:, None], eager], dim=1).contiguous()
        top1, feats = torch.empty(bs, BLOCK, dtype=torch.int64), []
        with torch.no_grad():
            for r in range(bs):
                out = target(candidates[r:r + 1], past_key_values=caches[r], use_cache=True,
                             output_hidden_states=True, position_ids=positions[r:r + 1])
                top1[r] = out.logits[0].argmax(-1)
                feats.append(layer_features(out.hidden_states, layer_ids))
        # ---- accept / bonus / commit lengths (SGLang's kernel, the worker's buffers) --------
        acc, commit, new_bonus, out_tokens, new_lens = w._next_accept_bonus_buffers(bs)
        _compute_dflash_accept_bonus_triton_unchecked(
            candidates=candidates, target_top1=top1, accept_lens_out=acc,
            commit_lens_out=commit, bonus_ids_out=new_bonus, out_tokens_out=out_tokens,
            prefix_lens=prefix, new_seq_lens_out=new_lens)
        # ---- commit: target KV cropped, accepted target features into the draft context ----
        for r in range(bs):
            c = int(commit[r])
            assert 1 <= c <= BLOCK and c == int(acc[r]) + 1
            assert out_tokens[r, :c - 1].tolist() == eager[r, :c - 1].tolist()
            caches[r].crop(int(new_lens[r]))
            with torch.no_grad():
                ctxs[r] = drafter.extend_context(ctxs[r], feats[r][:, :c], positions[r:r + 1, :c])
            committed[r] += out_tokens[r, :c].tolist()
            accepted_drafts += c > 1
            rejected += c < BLOCK
        assert torch.equal(new_lens, prefix + commit)
        prefix = new_lens.clone()
        bonus = new_bonus.clone()
        assert all(caches[r].get_seq_length() == int(prefix[r]) for r in range(bs))

    for r, prompt in enumerate(PROMPTS):
        want = plain_greedy(target, prompt, len(committed[r]))
        assert committed[r] == want, f"request {r}: loop {committed[r]} vs greedy {want}"
    assert accepted_drafts > 0 and rejected > 0  # both the accept and the reject paths ran
    assert rounds >= 3
    assert bonus_matters > 0  # a seam reading another request's bonus would be caught


def _tree_of_mask(mask, seq_lens, n):
    """Per request and node, the ancestor node indices (self included, root first) read back from
    the FULL verify mask (per request n rows of [prefix all visible ; ancestors])."""
    out, off = [], 0
    for s in seq_lens.tolist():
        rows = mask[off: off + n * (s + n)].view(n, s + n).bool()
        assert rows[:, :s].all(), "every node must see the whole committed prefix"
        out.append([rows[i, s:].nonzero().view(-1).tolist() for i in range(n)])
        off += n * (s + n)
    return out


@pytest.mark.sglang
def test_tree_worker_loop_commits_plain_greedy_tokens(pair, monkeypatch):
    """``DominoTreeWorkerV2._forward_decode_tree`` itself, round after round, on CPU: the tree from
    the draft-graph sampler (graph rounds, the draft output padded to the captured batch) or the
    eager builder (other rounds), the verify tensors with the mask in the target backend's own
    buffer (graph rounds) or allocated, SGLang's greedy tree accept, the req_to_token path
    permutation, the draft-KV commit and the result rows; stood in: the draft backbone forward
    and the target verify (Transformers, each node recomputed over the committed prefix + its
    ancestors as the mask names them). The committed tokens must equal plain greedy decoding."""
    from sglang.srt.layers.attention.verify_mask import VerifyMask
    from sglang.srt.speculative import eagle_utils
    from sglang.srt.speculative.draft_worker_common import make_draft_input_v2
    from sglang.srt.speculative.eagle_utils import TreeMaskMode, verify_tree_greedy_triton

    from domino_sglang.hf.generate import layer_features
    from domino_sglang.sglang_plugin import tree_worker as tw

    target, drafter, tdir, ddir = pair
    w = _worker(target, tdir, ddir, cls=tw.DominoTreeWorkerV2, extra=(
        "--speculative-eagle-topk", str(TREE_TOPK), "--speculative-num-draft-tokens",
        str(TREE_N), "--speculative-dflash-block-size", str(BLOCK), "--attention-backend",
        "triton", "--grammar-backend", "none"))
    assert w.domino_config.tree_mode and w.domino_config.num_verify_tokens == TREE_N
    bs, n, max_bs = len(PROMPTS), TREE_N, 4
    monkeypatch.setattr(tw, "get_exec", lambda: SimpleNamespace(graph=SimpleNamespace(
        cuda_graph_config=SimpleNamespace(decode=SimpleNamespace(bs=[1, 2, max_bs])))))
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, stream: None)
    monkeypatch.setattr(eagle_utils, "verify_tree_greedy_func",
                        lambda *a, **k: verify_tree_greedy_triton(*a))

    def assign_locs(req_pool_indices, req_to_token, start_offset, end_offset, batch_size,
                    draft_token_num, device):  # SGLang's helper returns None on CPU
        cols = start_offset[:, None] + torch.arange(draft_token_num)
        assert (end_offset - start_offset == draft_token_num).all()
        return req_to_token[req_pool_indices][:, :].gather(1, cols).reshape(-1).long()

    monkeypatch.setattr(tw, "assign_extend_cache_locs_func", assign_locs)
    embed = target.get_input_embeddings().weight
    layer_ids = drafter.config.target_layer_ids
    req_pool = torch.tensor([2, 0, 1], dtype=torch.int64)
    req_to_token = (torch.arange(3 * MAX_LEN, dtype=torch.int32).view(3, MAX_LEN) + 1000)
    mask_buf = torch.zeros(max_bs * n * (MAX_LEN + n), dtype=torch.uint8)
    backend = SimpleNamespace(verify_mask=None)
    w._target_worker.model_runner.attn_backend = backend
    w.__dict__.update(
        _tree_impl="triton", _tree_n=n, _tree_builder=None, _planted_wrong_residual=False,
        _mask_token_id=MASK,
        _block_pos_offsets=torch.arange(BLOCK),
        _draft_block_ids_buf=torch.empty(max_bs, BLOCK, dtype=torch.int64),
        _draft_block_positions_buf=torch.empty(max_bs, BLOCK, dtype=torch.int64),
        _ensure_draft_block_buffers=lambda b: None,
        model_runner=SimpleNamespace(req_to_token_pool=SimpleNamespace(
            req_to_token=req_to_token)))
    with monkeypatch.context() as m:  # a sampler failing its start-up check is not used
        m.setattr(tw.TreeDraftSampler, "self_check", lambda self, *a, **k: "boom")
        assert w._maybe_build_draft_sampler() is None
    w._draft_sampler = w._maybe_build_draft_sampler()
    assert isinstance(w._draft_sampler, tw.TreeDraftSampler)
    assert w._draft_sampler.ws.max_batch >= max_bs

    # prefill: the target over each prompt, its features into the draft context
    ctxs, kv_tokens, outputs = [], [list(p) for p in PROMPTS], []
    bonus = torch.empty(bs, dtype=torch.long)
    with torch.no_grad():
        for r, prompt in enumerate(PROMPTS):
            out = target(torch.tensor([prompt]), output_hidden_states=True)
            ctxs.append(drafter.extend_context(None, layer_features(out.hidden_states, layer_ids),
                                               torch.arange(len(prompt))[None]))
            bonus[r] = out.logits[0, -1].argmax()
            outputs.append([int(bonus[r])])
    seq = torch.tensor([len(p) for p in PROMPTS], dtype=torch.int64)
    state = {"graph": True, "rounds": 0, "branchy_accepts": 0, "rejects": 0, "eager": 0}

    def draft_forward(batch, block_ids, positions_2d, loc_2d):
        assert torch.equal(block_ids[:, 0], bonus) and (block_ids[:, 1:] == MASK).all()
        assert torch.equal(positions_2d, seq[:, None] + torch.arange(BLOCK))
        assert torch.equal(loc_2d, req_to_token[req_pool][:, None, :].expand(-1, BLOCK, -1)
                           .gather(2, positions_2d[:, :, None]).squeeze(2).long())
        with torch.no_grad():
            hidden = torch.cat([drafter(embed[block_ids[r:r + 1]], positions_2d[r:r + 1],
                                        ctxs[r]) for r in range(bs)]).reshape(bs * BLOCK, -1)
        if not state["graph"]:
            state["eager"] += 1
            return SimpleNamespace(can_run_graph=False,
                                   logits_output=SimpleNamespace(hidden_states=hidden))
        # the replay of a graph captured at batch max_bs: padded rows, sampler as the hook
        pad = torch.randn(max_bs * BLOCK, hidden.shape[-1])
        pad[: bs * BLOCK] = hidden
        ids = torch.full((max_bs * BLOCK,), MASK, dtype=torch.long)
        ids[: bs * BLOCK] = block_ids.reshape(-1)
        w._draft_sampler(pad, ids)
        return SimpleNamespace(can_run_graph=True, logits_output=SimpleNamespace(
            hidden_states=None))

    def verify(worker, batch, vi, width):
        assert worker is w and width == n and vi.draft_token_num == n
        if state["graph"]:  # the mask went into the backend's buffer
            assert vi.custom_mask.data_ptr() == mask_buf.data_ptr()
        anc = _tree_of_mask(vi.custom_mask, batch.seq_lens, n)
        toks = vi.draft_token.view(bs, n)
        assert torch.equal(toks[:, 0], bonus)
        logits, feats = torch.empty(bs * n, VOCAB), []
        with torch.no_grad():
            for b in range(bs):
                for i in range(n):
                    assert anc[b][i][0] == 0 and anc[b][i][-1] == i
                    assert int(vi.positions[b * n + i]) == int(seq[b]) + len(anc[b][i]) - 1
                    ids = kv_tokens[b] + toks[b, anc[b][i]].tolist()
                    out = target(torch.tensor([ids]), output_hidden_states=True)
                    logits[b * n + i] = out.logits[0, -1]
                    feats.append(layer_features(out.hidden_states, layer_ids)[0, -1])
        state["anc"], state["toks"] = anc, toks.clone()
        return SimpleNamespace(can_run_cuda_graph=state["graph"], logits_output=SimpleNamespace(
            next_token_logits=logits, hidden_states=torch.stack(feats)))

    def append_draft_kv(*, target_hidden, cache_loc, cache_loc_2d, positions, commit_lens):
        rows = target_hidden.view(bs, -1, target_hidden.shape[-1])
        pos = positions.view(bs, -1)
        for b in range(bs):
            c = int(commit_lens[b])
            assert torch.equal(pos[b, :c], seq[b] + torch.arange(c))
            assert torch.equal(cache_loc_2d[b, :c].to(torch.int32),
                               req_to_token[req_pool[b], int(seq[b]): int(seq[b]) + c])
            with torch.no_grad():
                ctxs[b] = drafter.extend_context(ctxs[b], rows[b:b + 1, :c], pos[b:b + 1, :c])

    monkeypatch.setattr(tw, "verify_forward", verify)
    w.__dict__.update(_domino_draft_forward=draft_forward,
                      _append_target_hidden_to_draft_kv_by_loc=append_draft_kv)
    while min(len(o) for o in outputs) < NEW_TOKENS:
        state["rounds"] += 1
        assert state["rounds"] <= NEW_TOKENS, "the loop does not advance"
        state["graph"] = state["rounds"] % 3 != 0  # every third round eager
        backend.verify_mask = (VerifyMask(buffer=mask_buf, mode=TreeMaskMode.FULL_MASK,
                                          max_bs=max_bs) if state["graph"] else None)
        before = req_to_token.clone()
        batch = SimpleNamespace(
            spec_info=make_draft_input_v2(bonus_tokens=bonus.clone(), new_seq_lens=seq.clone()),
            seq_lens=seq.clone(), seq_lens_cpu=seq.clone(), req_pool_indices=req_pool,
            out_cache_loc=None, sampling_info=None, return_logprob=False, has_grammar=False,
            is_extend_in_batch=False, forward_mode=SimpleNamespace(
                is_extend=lambda: False, is_idle=lambda: False))
        res = w.forward_batch_generation(batch)
        commit = res.accept_lens.view(-1)
        toks = res.next_token_ids.view(bs, n)
        new_bonus = res.next_draft_input.bonus_tokens.view(-1)
        assert torch.equal(res.new_seq_lens, seq + commit)
        for b in range(bs):
            c = int(commit[b])
            assert 1 <= c <= BLOCK and int(new_bonus[b]) == int(toks[b, c - 1])
            # the accepted path: a chain of parent -> child nodes in the drafted tree
            drafted = state["toks"][b]
            anc = state["anc"][b]
            paths = [a for a in anc if len(a) == c and drafted[a[1:]].tolist() == toks[b, :c - 1]
                     .tolist()]
            assert paths, f"round {state['rounds']}: accepted drafts are no path of the tree"
            state["branchy_accepts"] += any(a != list(range(len(a))) for a in paths)
            state["rejects"] += c < BLOCK
            # the committed slots are the path's verify slots, in path order; other rows intact
            row = int(req_pool[b])
            assert torch.equal(req_to_token[row, : int(seq[b])], before[row, : int(seq[b])])
            kv_tokens[b] += [int(bonus[b])] + toks[b, : c - 1].tolist()
            outputs[b] += toks[b, :c].tolist()
        seq, bonus = res.new_seq_lens.clone(), new_bonus.clone()

    for b, prompt in enumerate(PROMPTS):
        want = plain_greedy(target, prompt, len(outputs[b]))
        assert outputs[b] == want, f"request {b}: tree loop {outputs[b]} vs greedy {want}"
    assert state["eager"] > 0 and state["rounds"] - state["eager"] > 0
    assert state["branchy_accepts"] > 0, "no accepted path left the first-child chain"
    assert state["rejects"] > 0
