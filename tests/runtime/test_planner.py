"""The greedy-by-size arena planner, on cases worked out by hand."""

from sporeling.memory.planner import ALIGN, Buffer, live_lower_bound, plan_arena


def test_three_buffers_reach_the_lower_bound():
    # B (largest) goes first at 0; A overlaps B in time (step 1) so it goes above B at 128;
    # C overlaps B (step 2) but not A, so it reuses A's place at 128.
    a, b, c = Buffer(64, 0, 1), Buffer(128, 1, 2), Buffer(64, 2, 3)
    plan = plan_arena([a, b, c])
    assert (b.offset, a.offset, c.offset) == (0, 128, 128)
    assert plan.arena_size == 192 == plan.lower_bound
    assert plan.total_size == 256


def test_disjoint_lifetimes_share_offset_zero():
    bufs = [Buffer(100, k, k) for k in range(5)]
    plan = plan_arena(bufs)
    assert all(b.offset == 0 for b in bufs)
    assert plan.arena_size == 128  # 100 rounded up to the alignment
    assert plan.total_size == 500


def test_gap_between_placed_buffers_is_reused():
    # big1 [0..2] at 0 (size 256), big2 [0..2] at 256; small [1..1] overlaps both -> 512.
    # Then tiny [3..3] overlaps nobody -> 0.
    big1, big2, small, tiny = Buffer(256, 0, 2), Buffer(256, 0, 2), Buffer(64, 1, 1), Buffer(10, 3, 3)
    plan = plan_arena([small, tiny, big1, big2])
    assert sorted([big1.offset, big2.offset]) == [0, 256]
    assert small.offset == 512 and tiny.offset == 0
    assert plan.arena_size == 576


def test_first_fit_gap_below_a_live_buffer():
    # x [0..0] 128 bytes at 0, y [0..1] 128 at 128 (both placed first, by size);
    # z [1..1] 64 bytes: x is dead at step 1, so z fits in the gap at 0 below y.
    x, y, z = Buffer(128, 0, 0), Buffer(128, 0, 1), Buffer(64, 1, 1)
    plan_arena([x, y, z])
    assert {x.offset, y.offset} == {0, 128}
    assert z.offset == x.offset


def test_offsets_are_aligned_and_never_overlap_when_live_together():
    import random

    rng = random.Random(0)
    bufs = []
    for _ in range(200):
        first = rng.randrange(50)
        bufs.append(Buffer(rng.randrange(1, 5000), first, first + rng.randrange(10)))
    plan = plan_arena(bufs)
    for b in bufs:
        assert b.offset % ALIGN == 0
    for i, p in enumerate(bufs):
        for q in bufs[i + 1:]:
            if p.first <= q.last and q.first <= p.last:
                assert p.offset + p.size <= q.offset or q.offset + q.size <= p.offset
    assert plan.lower_bound <= plan.arena_size <= plan.total_size + ALIGN * len(bufs)


def test_lower_bound_counts_bytes_live_at_each_step():
    assert live_lower_bound([Buffer(10, 0, 2), Buffer(20, 1, 1), Buffer(5, 2, 3)]) == 30
    assert live_lower_bound([]) == 0
