"""The trainer's per-epoch line stays readable: grouped numbers, about 120 columns, nothing dropped."""

from __future__ import annotations

import re

from clipsearch.training.validate import format_metrics

METRICS = {
    "t2i_R@1": 0.101,
    "i2t_R@1": 0.202,
    "t2i_R@5": 0.303,
    "i2t_R@5": 0.404,
    "t2i_R@10": 0.505,
    "i2t_R@10": 0.606,
    "zs_top1": 0.707,
    "zs_seen_top1": 0.808,
    "zs_heldout_top1": 0.309,
}


def test_an_epoch_line_groups_its_metrics_and_fits_a_terminal() -> None:
    line = f"epoch 10/10: loss 1.234  {format_metrics(METRICS)}"
    assert len(line) <= 125, line  # the ungrouped line was 173 characters and wrapped at 160
    assert "t2i R@1/5/10 0.10/0.30/0.51" in line and "i2t R@1/5/10 0.20/0.40/0.61" in line
    assert "zs top1 all/seen/heldout 0.71/0.81/0.31" in line
    assert len(re.findall(r"\d\.\d\d", format_metrics(METRICS))) == len(METRICS)  # every value, once


def test_a_lone_metric_keeps_its_name() -> None:
    assert format_metrics({"zs_top1": 0.5, "epoch_seconds": 12.25}) == "zs top1 all 0.50  epoch_seconds 12.25"
