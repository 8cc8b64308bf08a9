"""Spans of a spec with request_relative features: derived per whole request, refused by specs
of older spans (real Beam runner, tiny logs whose requests straddle chunks)."""

import datetime

import numpy as np
import pytest

from cvr_tf.features import FeatureSpecError, spec_from_dict
from cvr_tf.input import list_spans, span_files
from cvr_tf.span_spec import read_span_spec, spec_for_training
from pipelines.span_pipeline import build_spans
from tests.pipelines.log_fixtures import CANDIDATES, START, read_examples, write_logs

END = START + datetime.timedelta(days=1)  # the second day holds a NaN price (dead-lettered)
BASE = [{"name": "price", "kind": "numeric", "column": "item_price", "dtype": "float32"},
        {"name": "category", "kind": "categorical", "column": "item_category",
         "hash_buckets": 8}]
RELATIVE = [{"name": f"price_{r}", "kind": "request_relative", "column": "item_price",
             "dtype": "float32", "relation": r} for r in ("rank", "percentile", "diff_median")]
SPEC = spec_from_dict({"features": BASE + RELATIVE})


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("logs"))
    write_logs(root)
    return root


def test_span_holds_the_relations_of_whole_requests(logs, tmp_path):
    # 7-row chunks: most requests (5 candidates) straddle two chunks.
    assert CANDIDATES == 5
    build_spans(logs, str(tmp_path), START, END, SPEC, num_shards=2, batch_rows=7)
    spans = list_spans(str(tmp_path), START, END)
    assert read_span_spec(spans[0]) == SPEC
    examples = read_examples(span_files(spans, "train") + span_files(spans, "eval"), SPEC)
    price = examples.groupby("request_id")["item_price"]
    sizes = price.transform("size")
    assert sizes.min() < CANDIDATES == sizes.max()  # dead-lettered rows (a NaN price) left
    # Independent: pandas ranks ("min" ties share the smallest; "average" = less + ties/2 + 1).
    np.testing.assert_array_equal(examples["item_price__rank"], price.rank(method="min"))
    assert (sizes == 1).any()  # the text-priced file's requests hold one row: 0.5
    percentile = np.where(sizes > 1, (price.rank(method="average") - 1) / (sizes - 1), 0.5)
    np.testing.assert_allclose(examples["item_price__percentile"], percentile, atol=1e-6)
    np.testing.assert_allclose(examples["item_price__diff_median"],
                               examples["item_price"] - price.transform("median"), atol=1e-4)


def test_a_relative_spec_is_refused_on_spans_without_its_column(logs, tmp_path):
    output = str(tmp_path / "spans")
    build_spans(logs, output, START, START, spec_from_dict({"features": BASE}), num_shards=1)
    path = str(tmp_path / "relative.json")
    SPEC.save(path)
    with pytest.raises(FeatureSpecError, match="column 'item_price__rank' \\(float32\\) is not "
                                               "in the spans; .*rebuild the spans with this one"):
        spec_for_training(output, path, START, START)
