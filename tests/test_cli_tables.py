"""The one table renderer (cli/common.py) in the three layouts the commands print."""

from __future__ import annotations

from zsrobust_bench.cli.common import format_results_table, render_table
from zsrobust_bench.cli.data import _table


def test_plain_layout_capital_titles_left_aligned_list_cells_on_lines() -> None:
    rows = [{"name": "a", "attacks": ["pgd(steps=10)", "apgd"]}, {"name": "long-name", "attacks": []}]
    assert render_table(rows, ("name", "attacks")) == (
        "NAME       ATTACKS\n---------  -------------\na          pgd(steps=10)\n           apgd\nlong-name"
    )


def test_data_layout_right_aligned_dash_for_missing_number_titles_indented() -> None:
    rows = [
        {"name": "synth-color", "ok": True, "n": 2000, "expected": None, "location": "generated"},
        {"name": "cifar10", "ok": False, "n": 5, "expected": 10000, "location": None},
    ]
    assert _table(rows, ("name", "ok", "n", "expected", "location")) == (
        "       name    ok    n expected  location\n"
        "synth-color  True 2000        - generated\n"
        "    cifar10 False    5    10000         -"
    )
    assert _table([], ("name",)) == "(nothing to show)"


def test_results_layout_numbers_right_aligned_mean_under_a_rule() -> None:
    results = {
        "model": {"spec": "m.pt", "format": "torch", "kind": "full"},
        "protocol": {"name": "p", "version": 2, "custom": False, "params": {"eps_labels": ["1/255"]}},
        "datasets": {"cifar10": {"n": 100, "clean_acc": 90.0, "robust_acc_by_eps": {"1/255": 5.5}}},
        "means": {"clean_acc": 90.0, "robust_acc_by_eps": {"1/255": 5.5}},
        "sanity": {"warnings": ["w"]},
    }
    assert format_results_table(results) == (
        "model m.pt [torch, full]  protocol p v2\n"
        "dataset    n  clean %  robust % @1/255\n"
        "-------  ---  -------  ---------------\n"
        "cifar10  100    90.00             5.50\n"
        "-------  ---  -------  ---------------\n"
        "mean            90.00             5.50\n"
        "SANITY WARNING: w"
    )
