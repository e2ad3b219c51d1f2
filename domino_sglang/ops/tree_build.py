"""Draft-tree construction from the Domino head, and the tree's SGLang attention layout.

``tree_build_ref`` is ``core.tree.build_tree_ref``; ``tree_layout_ref`` assembles SGLang 0.5.17's
verify inputs from ``core.tree.tree_attention_mask`` / ``tree_positions``.
``tree_build_best_first_torch``: the best-first tree (``core.tree.build_tree_best_first_ref``)
batched, not yet used by the server.
"""

from __future__ import annotations

import torch

from ..core.drafter import HeadWeights
from ..core.head import correction, gru_cell
from ..core.rollout import proposal_hidden
from ..core.tree import (DraftTree, best_first_num_nodes, build_tree_ref, tree_attention_mask,
                         tree_num_nodes, tree_positions)
from . import resolve_impl
from .domino_head import _gi_dtype, base_logits_fp32, prepared_weights


def tree_build_ref(hidden, bonus, lm_head, embed, head: HeadWeights | None, *, shift_label: bool,
                   pure_prefix_len: int, topk: int, budget: int) -> DraftTree:
    """hidden [B, K, D], bonus [B] -> DraftTree [B, N], N = tree_num_nodes(K, topk, budget)."""
    return build_tree_ref(hidden, bonus, lm_head, embed, head, shift_label=shift_label,
                          pure_prefix_len=pure_prefix_len, topk=topk, budget=budget)


@torch.no_grad()
def tree_build_best_first_torch(hidden, bonus, lm_head, embed, head: HeadWeights | None, *,
                                shift_label: bool, pure_prefix_len: int, topk: int,
                                budget: int) -> DraftTree:
    """``core.tree.build_tree_best_first_ref`` for a whole batch at once, in fixed-shape PyTorch
    ops with no host synchronisation (so a CUDA graph could hold it): N - 1 steps, each taking
    every row's best open candidate (``argmax`` over a ``[B, N * topk]`` score table; the
    first maximal slot, i.e. the earliest pushed, as the reference's heap breaks ties), one GRU
    step for the B new nodes and one head step for their children. Scores are float64 sums as
    in the reference. Not used by the server yet (tree mode builds the fixed-width beam of
    :func:`tree_build`); here so the best-first tree has a batched form to wire in and time."""
    z = proposal_hidden(hidden, shift_label).float()
    b, k1, _ = z.shape
    dev = z.device
    n = best_first_num_nodes(k1 + 1, topk, budget)
    base = z @ lm_head.float().t()  # [B, K-1, V]
    emb = embed.float()
    rows = torch.arange(b, device=dev)
    tok = torch.zeros(b, n, dtype=torch.long, device=dev)
    par = torch.full((b, n), -1, dtype=torch.long, device=dev)
    dep = torch.zeros(b, n, dtype=torch.long, device=dev)
    tok[:, 0] = bonus.to(torch.long)
    states = None
    if head is not None:
        states = torch.zeros(b, n, head.gru_dim, dtype=torch.float32, device=dev)
        states[:, 0] = gru_cell(emb[tok[:, 0]], torch.zeros(b, head.gru_dim, device=dev),
                                head.w_ih, head.w_hh)
    slots = n * topk
    score = torch.full((b, slots), -torch.inf, dtype=torch.float64, device=dev)
    cpar = torch.zeros(b, slots, dtype=torch.long, device=dev)
    ctok = torch.zeros(b, slots, dtype=torch.long, device=dev)

    def push(j: int, node_dep: torch.Tensor, node_score: torch.Tensor) -> None:
        i = node_dep.clamp(max=k1 - 1)  # proposal row of the children's depth
        li = base[rows, i]
        if head is not None:
            corr = correction(z[rows, i], states[:, j], head)
            li = li + torch.where((i >= pure_prefix_len)[:, None], corr, torch.zeros_like(corr))
        logp = torch.log_softmax(li, dim=-1)
        order = torch.sort(logp, dim=-1, descending=True, stable=True).indices[:, :topk]
        vals = logp.gather(1, order).double() + node_score[:, None]
        vals = torch.where((node_dep < k1)[:, None], vals, torch.full_like(vals, -torch.inf))
        score[:, j * topk:(j + 1) * topk] = vals
        cpar[:, j * topk:(j + 1) * topk] = j
        ctok[:, j * topk:(j + 1) * topk] = order

    push(0, dep[:, 0], torch.zeros(b, dtype=torch.float64, device=dev))
    for j in range(1, n):
        best = score.argmax(dim=1, keepdim=True)
        s = score.gather(1, best)[:, 0]
        p = cpar.gather(1, best)[:, 0]
        tok[:, j] = ctok.gather(1, best)[:, 0]
        par[:, j] = p
        dep[:, j] = dep[rows, p] + 1
        score.scatter_(1, best, -torch.inf)
        if head is not None:
            states[:, j] = gru_cell(emb[tok[:, j]], states[rows, p], head.w_ih, head.w_hh)
        push(j, dep[:, j], s)
    return DraftTree(tok, par, dep)


def tree_build(hidden, bonus, lm_head, embed, head: HeadWeights | None, *, shift_label: bool,
               pure_prefix_len: int, topk: int, budget: int, impl: str = "auto",
               gi_table_dtype=torch.float32) -> DraftTree:
    """Same contract as :func:`tree_build_ref`; impl "auto" | "triton" | "ref". One-shot: a
    server builds a :class:`PreparedTreeBuilder` once and calls it every round."""
    if resolve_impl(impl, hidden.device) == "ref":
        return tree_build_ref(hidden, bonus, lm_head, embed, head, shift_label=shift_label,
                              pure_prefix_len=pure_prefix_len, topk=topk, budget=budget)
    return PreparedTreeBuilder(lm_head, embed, head, block_size=hidden.shape[1], topk=topk,
                               budget=budget, impl="triton", gi_table_dtype=gi_table_dtype,
                               base_gemm="fp32")(
        hidden, bonus, shift_label=shift_label, pure_prefix_len=pure_prefix_len)


class PreparedTreeBuilder:
    """:func:`tree_build` for a serving loop: what does not change between rounds is done once.

    - the head's kernel weights (the GRU input table ``E_ih = embed @ W_ih^T`` [V, 3G], 1.9 GB
      and a [V, D] x [D, 3G] GEMM at Qwen3-8B shape; ``ops.domino_head.prepared_weights``,
      built in row chunks and shared with a chain head prepared from the same tensors);
    - the base logits without a per-round fp32 copy of the LM head (``base_gemm="auto"``:
      ``ops.domino_head.base_logits_fp32``, on CUDA with bf16 / fp16 weights one GEMM with fp32
      accumulation and output, which is the spec's fp32 GEMM up to summation order); ``"fp32"``:
      the spec's own expression every call (bit-identical to ``tree_build_ref``'s GEMM; what
      the one-shot :func:`tree_build` uses, for exact comparisons);
    - one :class:`~domino_sglang.kernels.tree_build.TreeBuildWorkspace`, grown (doubling) to the
      largest batch seen (``tree_build_triton`` is a static launch sequence over the
      workspace's slices, so reusing it across rounds is what a graph replay does).
    """

    def __init__(self, lm_head: torch.Tensor, embed: torch.Tensor, head: HeadWeights | None, *,
                 block_size: int, topk: int, budget: int, impl: str = "auto",
                 gi_table_dtype=torch.float32, base_gemm: str = "auto"):
        if base_gemm not in ("auto", "fp32"):
            raise ValueError(f"base_gemm={base_gemm!r}: expected 'auto' or 'fp32'")
        gi_table_dtype = _gi_dtype(gi_table_dtype)  # also "fp32" / "bf16" / "none"
        self.lm_head, self.embed, self.head = lm_head, embed, head
        self.base_gemm = base_gemm
        self.block_size, self.topk, self.budget = int(block_size), int(topk), int(budget)
        self.num_nodes = tree_num_nodes(self.block_size, self.topk, self.budget)
        self.impl = resolve_impl(impl, lm_head.device)
        self.weights = None
        self._ws = None
        self._base = None  # static fp32 base logits for build_into_workspace
        if self.impl != "ref" and head is not None:
            if base_gemm == "fp32":  # the spec's one-shot preparation, as before
                from domino_sglang.kernels.domino_head import prepare_head

                self.weights = prepare_head(head, embed, gi_table_dtype=gi_table_dtype)
            else:  # the chunked GRU input table, shared with the chain head's preparation
                self.weights = prepared_weights(head, embed, gi_table_dtype)

    def workspace(self, batch: int):
        from domino_sglang.kernels.tree_build import TreeBuildWorkspace

        if self._ws is None or self._ws.max_batch < batch:
            cap = max(batch, 2 * self._ws.max_batch if self._ws is not None else batch)
            head = self.head
            self._ws = TreeBuildWorkspace(cap, self.block_size, self.lm_head.shape[0],
                                          head.w2.shape[1] if head is not None else 16,
                                          head.gru_dim if head is not None else 16, self.topk,
                                          self.num_nodes, self.lm_head.device)
        return self._ws

    def nbytes(self) -> int:
        """Device memory this builder holds: the GRU input table (shared with any other head
        prepared from the same tensors), the workspace and the static base logits."""
        seen, total = set(), 0
        objs = [self._ws, getattr(self._ws, "head", None)]
        tensors = [getattr(self.weights, "gi_table", None), self._base]
        for o in objs:
            if o is not None:
                tensors += [v for v in vars(o).values() if isinstance(v, torch.Tensor)]
        for t in tensors:
            if t is not None and t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
        return total

    def static_buffers(self, max_batch: int):
        """Allocate, before a CUDA-graph capture, everything :meth:`build_into_workspace` writes
        for up to ``max_batch`` requests: the workspace and the fp32 base-logits buffer."""
        ws = self.workspace(max_batch)
        rows = ws.max_batch * (self.block_size - 1)
        if self._base is None or self._base.shape[0] < rows:
            self._base = torch.empty(rows, self.lm_head.shape[0], dtype=torch.float32,
                                     device=self.lm_head.device)
        return ws

    def build_into_workspace(self, hidden, bonus, *, shift_label: bool, pure_prefix_len: int):
        """The tree of ``hidden [B, K, D]`` as ``(tokens, parents, depth)`` views ``[B, N]`` of
        the workspace (overwritten by the next build): the base logits go into the static
        buffer, no host synchronisation, a static launch sequence for a fixed B, so it can be
        captured in a CUDA graph after :meth:`static_buffers` (the one allocation, the
        contiguous copy of the proposal rows, then comes from the graph's own pool)."""
        from domino_sglang.kernels.tree_build import tree_build_triton

        if self.impl == "ref":
            raise ValueError("build_into_workspace needs the Triton tree build (impl 'triton')")
        z = proposal_hidden(hidden, shift_label)
        b, k1, d = z.shape
        if self._ws is None or self._base is None or self._ws.max_batch < b:
            raise ValueError(f"batch {b}: call static_buffers(max_batch >= {b}) first")
        base = self._base[: b * k1]
        if self.base_gemm == "fp32":  # the spec's expression, bit for bit
            base.copy_(z.reshape(b * k1, d).float() @ self.lm_head.float().t())
        else:
            base_logits_fp32(z.to(self.lm_head.dtype), self.lm_head, out=base)
        return tree_build_triton(z, base.view(b, k1, -1), bonus, self.weights, self._ws,
                                 pure_prefix_len=pure_prefix_len)

    def __call__(self, hidden, bonus, *, shift_label: bool, pure_prefix_len: int) -> DraftTree:
        if self.impl == "ref":
            return tree_build_ref(hidden, bonus, self.lm_head, self.embed, self.head,
                                  shift_label=shift_label, pure_prefix_len=pure_prefix_len,
                                  topk=self.topk, budget=self.budget)
        if hidden.shape[1] != self.block_size:
            raise ValueError(f"hidden {tuple(hidden.shape)}: this builder was prepared for "
                             f"block {self.block_size}")
        self.static_buffers(hidden.shape[0])
        tok, par, dep = self.build_into_workspace(hidden, bonus, shift_label=shift_label,
                                                  pure_prefix_len=pure_prefix_len)
        return DraftTree(tok.clone(), par.clone(), dep.clone())


class TreeDraftSampler:
    """The tree build folded into the draft CUDA graph (tree mode's counterpart of the chain's
    draft sampler): called as SGLang's draft capture hook calls a sampler, ``(hidden_states
    [bs*B, D], input_ids [bs*B])`` with the bonus at every B-th input id, it builds the tree
    into the builder's static workspace (:meth:`PreparedTreeBuilder.build_into_workspace`), so a
    replay of the draft graph leaves ``tokens[:bs]`` / ``parents[:bs]`` there with no launch of
    its own and no host synchronisation. Outside a graph (a batch beyond the captured sizes) the
    worker calls it eagerly; the result is the same."""

    def __init__(self, builder: PreparedTreeBuilder, *, max_batch: int, shift_label: bool,
                 pure_prefix_len: int):
        if builder.impl == "ref":
            raise ValueError("TreeDraftSampler needs a builder on the Triton tree build "
                             "(impl 'triton'), not the reference")
        self.builder = builder
        self.block_size = builder.block_size
        self.shift_label, self.pure_prefix_len = bool(shift_label), int(pure_prefix_len)
        self.ws = builder.static_buffers(int(max_batch))

    def __call__(self, hidden_states: torch.Tensor, input_ids: torch.Tensor | None = None):
        if input_ids is None:
            raise RuntimeError("the Domino tree sampler needs the block input_ids (bonus at ::B)")
        k = self.block_size
        bs = hidden_states.shape[0] // k
        if bs > self.ws.max_batch:
            raise RuntimeError(f"draft batch {bs} exceeds the tree sampler's max batch "
                               f"{self.ws.max_batch}")
        hidden = hidden_states[: bs * k].view(bs, k, -1)
        bonus = input_ids[: bs * k].view(bs, k)[:, 0]
        self.builder.build_into_workspace(hidden, bonus, shift_label=self.shift_label,
                                          pure_prefix_len=self.pure_prefix_len)

    def self_check(self, hidden_size: int, dtype: torch.dtype, vocab: int,
                   batch: int = 2) -> str | None:
        """Start-up check of the graph path: on random draft outputs for ``batch`` requests, a
        CUDA graph of this call (on CUDA; the plain call elsewhere) must leave the trees of an
        eager call. None if it does, else the reason (the worker then keeps the tree build
        eager rather than serve from a capture it cannot trust)."""
        k, dev = self.block_size, self.ws.tokens.device
        batch = min(int(batch), self.ws.max_batch)
        try:
            gen = torch.Generator(device=dev).manual_seed(0)
            flat = torch.randn(batch * k, hidden_size, generator=gen, device=dev).to(dtype)
            ids = torch.randint(0, vocab, (batch * k,), generator=gen, device=dev)
            self(flat, ids)
            want = self.tree(batch)
            self.ws.tokens[:batch].fill_(-1)
            if dev.type == "cuda":
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self(flat, ids)
                graph.replay()
                torch.cuda.synchronize(dev)
                del graph
            else:
                self(flat, ids)
            got = self.tree(batch)
        except Exception as exc:  # noqa: BLE001 - reported, the caller falls back
            return f"{type(exc).__name__}: {exc}"[:300]
        if not all(torch.equal(a, b) for a, b in zip((got.tokens, got.parents, got.depth),
                                                     (want.tokens, want.parents, want.depth))):
            return "the replayed trees differ from the eager build's"
        return None

    def tree(self, bs: int) -> DraftTree:
        """The last build's first ``bs`` trees (copies: the next build overwrites the
        workspace)."""
        return DraftTree(self.ws.tokens[:bs].clone(), self.ws.parents[:bs].clone(),
                         self.ws.depth[:bs].clone())


def tree_layout_ref(parents: torch.Tensor, seq_lens: torch.Tensor):
    """parents [B, N], seq_lens [B] -> (mask, positions, retrieve_index, next_token, next_sibling):
    mask bool [sum_b N * (seq_len_b + N)] (per request N rows of [prefix all True ; ancestors]),
    positions [B*N] = seq_len + depth, retrieve_index [B, N] = b*N + i, next_token [B, N] (lowest
    child or -1), next_sibling [B, N] (next higher sibling or -1)."""
    b, n = parents.shape
    anc = tree_attention_mask(parents.cpu())
    depth = anc.sum(-1) - 1
    positions = tree_positions(depth, seq_lens.cpu().long()).reshape(-1)
    rows = [torch.cat([torch.ones(n, int(seq_lens[r]), dtype=torch.bool), anc[r]], dim=1)
            .reshape(-1) for r in range(b)]
    retrieve = torch.arange(b * n).view(b, n)
    next_token = torch.full((b, n), -1, dtype=torch.long)
    next_sibling = torch.full((b, n), -1, dtype=torch.long)
    par = parents.cpu()
    for r in range(b):
        for j in range(n - 1, 0, -1):  # descending, so the lowest index is written last
            p = int(par[r, j])
            next_sibling[r, j] = next_token[r, p]
            next_token[r, p] = j
    return torch.cat(rows), positions, retrieve, next_token, next_sibling


def tree_layout(parents: torch.Tensor, seq_lens: torch.Tensor, impl: str = "auto",
                mask_out: torch.Tensor | None = None):
    """Same contract as :func:`tree_layout_ref`; impl "auto" | "triton" | "ref"."""
    if resolve_impl(impl, parents.device) == "ref":
        return tuple(t.to(parents.device) for t in tree_layout_ref(parents, seq_lens))
    from domino_sglang.kernels.tree_build import tree_layout_triton

    return tree_layout_triton(parents, seq_lens, mask_out)
