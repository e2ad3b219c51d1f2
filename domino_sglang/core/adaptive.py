"""Batch-adaptive verify width for chain speculation (pure Python: no torch, no SGLang).

Every decode round the server verifies ``w`` tokens per request: the bonus token plus the first
``w - 1`` drafts of the block (``w = B``: the whole block; ``w = 1``: no speculation, a plain
decoding step). Wider is not always better: at a large batch a 16-token verify is
compute-bound and costs several plain steps, while the drafts past the first few are rarely
accepted. The policy picks, for the running batch size, the candidate width with the highest
expected committed tokens per unit of measured time::

    rate(w) = E[tokens | w] / cost(w, bucket),   E[tokens | w] = 1 + sum_{k=1}^{w-1} S(k)

``S(k)`` is the probability that the first ``k`` drafts are all accepted, estimated as a
product of per-position acceptance rates from decayed counts over the last ``window_rounds``
rounds (a round at width ``w`` verifies drafts ``1 .. w-1`` of every request: censored data, so
a product-limit estimate; positions rarely verified are shrunk toward the pooled rate).
``cost(w, bucket)`` is the measured round time at that width for the batch-size bucket (powers
of two): the median of its last ``cost_window`` rounds, the first ``cost_skip`` of each width
discarded (one-time costs of a width's first rounds), and only *steady* rounds counted: a round
whose previous round ran another width pays for the switch (another verify graph and attention
workspace, the previous round's tail), so a width measured only in isolated probes would look
dearer than it is and the policy would not leave the width it holds (likely on an H100 run:
width 4 measured at 4.1 ms per round, width 8, held, at 2.4 ms). The widest candidate is also
probed now and then, so the acceptance of the wide block stays current while the policy sits
narrow.

Candidates come from SGLang's ``--speculative-adaptive-config`` format (batch-size slots with
``candidate_steps``; a step count ``s`` is the width ``s + 1``, ``0`` = no speculation); its
``update_interval`` keeps SGLang's meaning (the hysteresis knobs do not apply:
this policy compares measured rates; a switch needs ``switch_margin`` more rate).

Exploration: before it trusts a bucket, the policy measures every candidate of the bucket
``min_samples`` times, in runs of ``run_len`` consecutive rounds (the first round of a run is
the switch, not counted); afterwards one run in ``probe_every`` rounds goes to the candidate of
the bucket measured longest ago.
"""

from __future__ import annotations

import bisect
import statistics
from collections import deque
from dataclasses import dataclass, field


class _Median:
    """Median of the last ``window`` samples, after discarding the first ``skip`` (a width's
    first rounds pay one-time costs: kernel compilation, first graph replays, allocations)."""

    __slots__ = ("skip", "seen", "buf")

    def __init__(self, window: int = 16, skip: int = 1):
        self.skip = int(skip)
        self.seen = 0
        self.buf: deque[float] = deque(maxlen=int(window))

    def add(self, x: float) -> None:
        self.seen += 1
        if self.seen > self.skip:
            self.buf.append(float(x))

    @property
    def n(self) -> int:
        return len(self.buf)

    @property
    def value(self) -> float | None:
        return statistics.median(self.buf) if self.buf else None


def bucket_of(batch_size: int) -> int:
    """The power of two at or above ``batch_size`` (>= 1)."""
    b = 1
    while b < batch_size:
        b *= 2
    return b


@dataclass(frozen=True)
class WidthSlot:
    """Candidates for batches of at least ``batch_size`` requests (up to the next slot)."""

    batch_size: int
    widths: tuple[int, ...]


@dataclass
class _BucketState:
    cost: dict = field(default_factory=dict)       # width -> _Median of round ms
    forward: dict = field(default_factory=dict)    # width -> _Median of the worker forward's host ms
    last_seen: dict = field(default_factory=dict)  # width -> round index of its last cost
    picks: dict = field(default_factory=dict)      # width -> rounds it was chosen
    current: int | None = None
    rounds: int = 0
    run_width: int | None = None                   # an exploration / probe run in progress
    run_left: int = 0
    last_pick: int | None = None


def default_slots(block_size: int) -> tuple[WidthSlot, ...]:
    """Domino's default candidates: the whole block, half, a quarter and no speculation, at
    every batch size (the measured rates choose)."""
    widths = sorted({block_size, max(2, block_size // 2), max(2, block_size // 4), 1})
    return (WidthSlot(1, tuple(widths)),)


class WidthPolicy:
    """Chooses the verify width per round; fed with accept lengths and measured round times.

    ``slots``: candidate widths per batch-size slot (sorted by ``batch_size``; a batch uses the
    last slot whose ``batch_size`` is <= its size, the first slot below that).
    """

    def __init__(self, block_size: int, slots: tuple[WidthSlot, ...] | None = None, *,
                 update_interval: int = 5, min_samples: int = 3,
                 probe_every: int = 128, run_len: int = 3, switch_margin: float = 0.03,
                 window_rounds: float = 50.0, shrink: float = 4.0, prior_rate: float = 0.8,
                 cost_window: int = 16, cost_skip: int = 1):
        if block_size < 2:
            raise ValueError(f"WidthPolicy: block_size={block_size} must be >= 2")
        self.block_size = int(block_size)
        slots = tuple(sorted(slots or default_slots(block_size), key=lambda s: s.batch_size))
        if not slots:
            raise ValueError("WidthPolicy: no slots")
        for s in slots:
            if not s.widths or any(not 1 <= w <= block_size for w in s.widths):
                raise ValueError(f"WidthPolicy: slot {s.batch_size} widths {s.widths} must be "
                                 f"in [1, {block_size}]")
        self.slots = slots
        self._slot_keys = [s.batch_size for s in slots]
        self.update_interval = max(1, int(update_interval))
        self.min_samples = max(1, int(min_samples))
        self.probe_every = max(2, int(probe_every))
        self.run_len = max(1, int(run_len))
        self.switch_margin = float(switch_margin)
        self.cost_window, self.cost_skip = int(cost_window), int(cost_skip)
        # per-position acceptance as decayed counts (product-limit estimate of S(k)):
        # trials[k]: requests whose draft k was verified after drafts 1..k-1 were accepted,
        # accepts[k]: those whose draft k was accepted too
        self.decay = 1.0 - 1.0 / max(2.0, float(window_rounds))
        self.shrink = float(shrink)
        self._trials = [0.0] * self.block_size
        self._accepts = [0.0] * self.block_size
        self._prior_rate = float(prior_rate)
        self._buckets: dict[int, _BucketState] = {}
        self.round = 0
        self.switched: tuple[int, int | None, int] | None = None  # (bucket, old, new) last round

    # ---- inputs ---------------------------------------------------------------------------
    def widths_for(self, batch_size: int) -> tuple[int, ...]:
        i = bisect.bisect_right(self._slot_keys, int(batch_size)) - 1
        return self.slots[max(0, i)].widths

    def observe_accept(self, width: int, accepted_drafts) -> None:
        """Per-request accepted draft counts of one round verified at ``width``."""
        counts = [0] * self.block_size
        n = 0
        for a in accepted_drafts:
            counts[max(0, min(int(a), width - 1))] += 1
            n += 1
        if n == 0 or width <= 1:
            return
        for k in range(1, self.block_size):
            self._trials[k] *= self.decay
            self._accepts[k] *= self.decay
        alive = n  # requests with drafts 1..k-1 accepted
        for k in range(1, width):
            accepted = alive - counts[k - 1]
            self._trials[k] += alive
            self._accepts[k] += accepted
            alive = accepted

    def observe_cost(self, batch_size: int, width: int, ms: float, steady: bool = True) -> None:
        """One round's measured time; ``steady`` False (the previous round ran another width):
        the switch's cost is in it, not counted."""
        if not ms > 0 or not steady:
            return
        st = self._bucket(batch_size)
        self._median(st.cost, width).add(ms)
        st.last_seen[width] = self.round

    def observe_forward(self, batch_size: int, width: int, ms: float, steady: bool = True
                        ) -> None:
        """Host time of the worker's own forward in a round (diagnostics only: the rest of the
        round period is the scheduler's per-round work); steady rounds only, as the cost."""
        if steady:
            self._median(self._bucket(batch_size).forward, width).add(ms)

    def _median(self, store: dict, width: int) -> _Median:
        est = store.get(width)
        if est is None:
            est = store[width] = _Median(self.cost_window, self.cost_skip)
        return est

    # ---- estimates ------------------------------------------------------------------------
    def _rates(self) -> list[float]:
        """[1, r(1), .., r(B-1)]: r(k) = P(draft k accepted | drafts 1..k-1 accepted), shrunk
        toward the pooled rate of all positions (where draft k was rarely verified: the wide
        block while sitting narrow; a position never verified takes the pooled rate)."""
        t, a = sum(self._trials[1:]), sum(self._accepts[1:])
        den = t + self.shrink
        pooled = (a + self.shrink * self._prior_rate) / den if den > 0 else self._prior_rate
        out = [1.0]
        for k in range(1, self.block_size):
            den = self._trials[k] + self.shrink
            out.append((self._accepts[k] + self.shrink * pooled) / den if den > 0 else pooled)
        return out

    def _survivals(self) -> list[float]:
        """[S(0) = 1, S(1), .., S(B-1)], S(k) = P(drafts 1..k all accepted)."""
        out = [1.0]
        for r in self._rates()[1:]:
            out.append(out[-1] * r)
        return out

    def acceptance_rate(self, k: int) -> float:
        return self._rates()[k]

    def survival(self, k: int) -> float:
        return self._survivals()[k]

    def expected_tokens(self, width: int, survivals: list[float] | None = None) -> float:
        return sum((survivals or self._survivals())[:width])

    def rate(self, batch_size: int, width: int, survivals: list[float] | None = None
             ) -> float | None:
        est = self._bucket(batch_size).cost.get(width)
        ms = None if est is None else est.value
        return None if not ms else self.expected_tokens(width, survivals) / ms

    # ---- decision -------------------------------------------------------------------------
    def choose(self, batch_size: int) -> int:
        """The width for this round (call once per decode round)."""
        self.round += 1
        st = self._bucket(batch_size)
        st.rounds += 1
        cands = self.widths_for(batch_size)
        before = st.current
        pick = st.last_pick = self._pick(st, cands, batch_size)
        self.switched = ((bucket_of(batch_size), before, st.current)
                         if st.current != before and st.current is not None else None)
        st.picks[pick] = st.picks.get(pick, 0) + 1
        return pick

    def _pick(self, st: _BucketState, cands: tuple[int, ...], batch_size: int) -> int:
        if len(cands) == 1:
            st.current = cands[0]
            return cands[0]
        if st.run_left > 0 and st.run_width in cands:  # an exploration / probe run goes on
            st.run_left -= 1
            return st.run_width
        st.run_left = 0
        # exploration: every candidate measured min_samples times first, a run at a time
        unmeasured = [w for w in cands if w not in st.cost or st.cost[w].n < self.min_samples]
        if unmeasured:
            return self._start_run(st, unmeasured[0])
        if st.current not in cands:
            st.current = self._best(cands, batch_size)[0]
        # a periodic probe run of the candidate measured longest ago (the widest first on ties)
        if st.rounds % self.probe_every == 0:
            return self._start_run(st, min(cands, key=lambda w: (st.last_seen.get(w, -1), -w)))
        if st.rounds % self.update_interval == 0:
            best, rates = self._best(cands, batch_size)
            if rates[best] > rates[st.current] * (1.0 + self.switch_margin):
                st.current = best
        return st.current

    def _start_run(self, st: _BucketState, width: int) -> int:
        """``width`` for ``run_len`` rounds (one more round if it ran the last one: no switch)."""
        st.run_width = width
        st.run_left = 0 if width == st.last_pick else self.run_len - 1
        return width

    def _best(self, cands: tuple[int, ...], batch_size: int) -> tuple[int, dict]:
        """The candidate of the highest rate (the widest on ties) and every candidate's rate
        (0 where unmeasured)."""
        surv = self._survivals()
        rates = {w: self.rate(batch_size, w, surv) or 0.0 for w in cands}
        return max(cands, key=lambda w: (rates[w], w)), rates

    def _bucket(self, batch_size: int) -> _BucketState:
        b = bucket_of(batch_size)
        st = self._buckets.get(b)
        if st is None:
            st = self._buckets[b] = _BucketState()
        return st

    def summary(self) -> dict:
        """The estimates and the picks, for logs and ``/server_info``-style reports."""
        surv = self._survivals()
        out = {"survival": [round(x, 4) for x in surv[1:]],
               "expected_tokens": {w: round(self.expected_tokens(w, surv), 3)
                                   for w in sorted({w for s in self.slots for w in s.widths})},
               "buckets": {}}
        for b, st in sorted(self._buckets.items()):
            out["buckets"][b] = {
                "current": st.current,
                "cost_ms": {w: round(e.value, 4) for w, e in sorted(st.cost.items())
                            if e.value is not None},
                "forward_ms": {w: round(e.value, 4) for w, e in sorted(st.forward.items())
                               if e.value is not None},
                "picks": dict(sorted(st.picks.items()))}
        return out


__all__ = ["WidthPolicy", "WidthSlot", "bucket_of", "default_slots"]
