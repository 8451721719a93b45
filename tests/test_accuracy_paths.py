"""The side-by-side comparison of accuracy paths: what counts as the same choice, what is listed."""

from __future__ import annotations

from bench.accuracy_paths import choices, compare


def item(doc_id, ll, chars=(4, 4, 4)):
    return {"task": "t", "doc_id": doc_id, "ll": list(ll), "chars": list(chars)}


def test_choices_are_the_argmax_of_ll_and_of_ll_per_character():
    # totals -2.5 and -3 (acc takes the first); per character -2.5 and -1.5 (acc_norm takes the second)
    assert choices(item(0, [-2.5, -3.0], chars=(1, 2))) == (0, 1)


def test_compare_lists_items_whose_choice_moves_with_the_reference_gap():
    reference = [item(0, [-1.0, -5.0, -6.0]), item(1, [-2.0, -2.0005, -9.0])]
    other = [item(0, [-1.0002, -5.0, -6.0]), item(1, [-2.001, -2.0004, -9.0])]  # item 1: a near-tie flips
    result = compare(reference, other)
    assert abs(result["max_abs_ll_diff"] - 0.001) < 1e-9 and result["requests"] == 6 and result["items"] == 2
    assert result["same_choice_share"] == 0.5
    [moved] = result["differing_items"]
    assert moved["doc_id"] == 1 and abs(moved["reference_top2_gap"] - 0.0005) < 1e-9
