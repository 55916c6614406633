from __future__ import annotations

import pytest
from domainvlm.core.metrics import grouped_metrics, macro_f1


def test_macro_f1_counts_classes_in_truth_or_prediction():
    # class 0: tp 1, predicted 2, actual 1 -> 2/3; class 1: tp 1, predicted 1, actual 2 -> 2/3;
    # class 2: predicted once, never true -> 0 (scikit-learn's macro average includes it)
    assert macro_f1([0, 0, 1, 2], [0, 1, 1, 3]) == pytest.approx((2 / 3 + 2 / 3 + 0 + 0) / 4)
    assert macro_f1([1, 1], [1, 1]) == 1.0


def test_groups_weigh_equally_whatever_their_length():
    predictions = [0, 0, 0, 0, 1, 1]
    targets = [0, 0, 0, 0, 0, 1]
    groups = ["long", "long", "long", "long", "short", "short"]
    result = grouped_metrics(predictions, targets, groups)
    assert result["per_group"]["long"] == {"accuracy": 1.0, "macro_f1": 1.0, "num_samples": 4}
    assert result["per_group"]["short"]["accuracy"] == 0.5
    assert result["per_group"]["short"]["macro_f1"] == pytest.approx((0 + 2 / 3) / 2)
    assert result["mean_group_accuracy"] == 0.75  # pooled accuracy would be 5/6
    assert result["num_groups"] == 2


def test_group_count_must_match():
    with pytest.raises(ValueError, match="one prediction, target and group per sample"):
        grouped_metrics([0, 1], [0, 1], ["a"])
