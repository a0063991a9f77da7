"""Host-side range-table logic: the one-way layouts and the transposed table of the dK/dV kernel."""

from __future__ import annotations

import torch
from iconface_video.kernels.bench import crop_offsets, cross_table, one_way_table
from iconface_video.kernels.range_tables import check_table, transposed_table


def _readers(intervals: torch.Tensor, readers: torch.Tensor) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """{(k_start, k_len): sorted [(q_start, q_len), ...]} from the CSR pair."""
    out = {}
    for k_start, k_len, first, count in intervals.tolist():
        out[(k_start, k_len)] = sorted(map(tuple, readers[first : first + count].tolist()))
    return out


def test_one_way_layout_rows():
    # crop 0: K=0 at 0..7 (scene 0..3, degraded 4..7); crop 1: K=2, refs of 2 tokens at 16..19
    table = one_way_table([0, 2], n_scene=4, n_ref=2).tolist()
    assert crop_offsets([0, 2], 4, 2) == [0, 8, 20]
    assert table == [
        [0, 4, 0, 8, 8, 0],  # scene -> [scene | degraded], no refs
        [4, 4, 4, 4, 0, 0],  # degraded -> itself
        [8, 4, 8, 8, 16, 4],  # scene -> [scene | degraded] + refs
        [12, 4, 12, 4, 0, 0],
        [16, 4, 16, 4, 0, 0],  # refs -> themselves
    ]
    assert cross_table([0, 2], 4, 2).tolist() == [[0, 4, 0, 4, 4, 4], [8, 4, 8, 4, 12, 4]]


def test_transposed_table_of_one_way_layout():
    host = check_table(one_way_table([0, 2], n_scene=4, n_ref=2), 20, 20)
    got = _readers(*transposed_table(host))
    assert got == {
        (0, 4): [(0, 4)],  # scene keys <- scene queries
        (4, 4): [(0, 4), (4, 4)],  # degraded keys <- scene + degraded queries
        (8, 4): [(8, 4)],
        (12, 4): [(8, 4), (12, 4)],
        (16, 4): [(8, 4), (16, 4)],  # ref keys <- scene + ref queries
    }


def test_transposed_table_splits_partial_overlaps_and_counts_double_cover_twice():
    # sequence A reads keys 0..9 and again 5..11; sequence B reads 8..13; keys 14.. unread;
    # sequence C has no queries and sequence D no keys: neither reads anything
    table = torch.tensor([[0, 3, 0, 10, 5, 7], [3, 2, 8, 6, 0, 0], [5, 0, 0, 16, 0, 0], [5, 1, 0, 0, 0, 0]])
    got = _readers(*transposed_table(check_table(table, 6, 16)))
    assert got == {
        (0, 5): [(0, 3)],
        (5, 3): [(0, 3), (0, 3)],
        (8, 2): [(0, 3), (0, 3), (3, 2)],
        (10, 2): [(0, 3), (3, 2)],
        (12, 2): [(3, 2)],
    }


def test_transposed_table_of_empty_table():
    intervals, readers = transposed_table(torch.zeros(0, 6, dtype=torch.int64))
    assert intervals.shape == (0, 4) and readers.shape == (0, 2)
