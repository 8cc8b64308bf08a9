"""The grouped-batches experiment's table: per-seed mAP and means, n/a when not computable."""

from experiments import listwise_grouping


def _row(setting, seed, mean_ap, examples_per_second=1000.0):
    return {"group_batches": setting, "seed": seed, "mean_average_precision": mean_ap,
            "group_auc": 0.6, "auc": 0.7, "map_requests": 10,
            "train_examples_per_second": examples_per_second}


def test_the_table_holds_each_seed_and_the_means():
    rows = [_row("on", 0, 0.30), _row("on", 1, 0.28, 3000.0), _row("off", 0, 0.25),
            _row("off", 1, None)]
    assert listwise_grouping.markdown_table(rows).splitlines()[2:] == [
        "| on | 0.3000, 0.2800 | 0.2900 | 0.6000 | 0.7000 | 2,000 |",
        "| off | 0.2500, n/a | n/a | 0.6000 | 0.7000 | 1,000 |"]
