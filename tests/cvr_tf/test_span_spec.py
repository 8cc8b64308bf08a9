"""Self-describing spans: the recorded spec is the default; a spec needing more is refused."""

import dataclasses
import datetime
import json
import os

import pytest

from cvr_tf.features import FeatureSpecError, default_spec
from cvr_tf.input import SUCCESS_FILE, span_path
from cvr_tf.span_spec import (
    SPEC_FILE,
    read_span_spec,
    spec_fingerprint,
    spec_for_training,
    write_span_spec,
)

SPEC = default_spec()
START = datetime.date(2026, 1, 5)
END = START + datetime.timedelta(days=1)


def write_span(root, day, spec):
    path = span_path(root, day)
    os.makedirs(path, exist_ok=True)
    if spec is not None:
        write_span_spec(path, spec)
    open(os.path.join(path, SUCCESS_FILE), "w").close()
    return path


def changed(spec, feature, **changes):
    return dataclasses.replace(spec, features=tuple(
        dataclasses.replace(f, **changes) if f.name == feature else f for f in spec.features))


def test_spans_record_the_spec_and_its_fingerprint(tmp_path):
    path = write_span(tmp_path, START, SPEC)
    with open(os.path.join(path, SPEC_FILE)) as handle:
        record = json.load(handle)
    assert record["fingerprint"] == spec_fingerprint(SPEC)
    assert read_span_spec(path) == SPEC
    assert spec_fingerprint(changed(SPEC, "device", embedding_dim=9)) != spec_fingerprint(SPEC)


def test_training_uses_the_spans_spec_by_default_and_accepts_the_same_file(tmp_path):
    for day in (START, END):
        write_span(tmp_path, day, SPEC)
    assert spec_for_training(tmp_path, "", START, END) == SPEC
    same = tmp_path / "same.json"
    SPEC.save(same)
    assert spec_for_training(tmp_path, str(same), START, END).to_dict() == SPEC.to_dict()


def test_a_spec_computable_from_the_spans_trains_and_one_needing_more_is_refused(tmp_path):
    write_span(tmp_path, START, SPEC)
    # Another embedding width and a dropped feature: computable from the spans (warm start
    # across changed features trains on the same spans).
    other = changed(SPEC, "device", embedding_dim=9)
    other = dataclasses.replace(other, features=other.features[1:])
    path = tmp_path / "other.json"
    other.save(path)
    assert spec_for_training(tmp_path, str(path), START, END).to_dict() == other.to_dict()
    # A column the spans lack, and a vocabulary the pipeline did not compute for them.
    for needs_more, unmet in ((changed(SPEC, "device", column="browser"),
                               r"column 'browser' \(string\) is not in the spans"),
                              (changed(SPEC, "device", name="browser"),
                               r"vocabulary 'browser' was not computed for the spans")):
        needs_more.save(path)
        with pytest.raises(FeatureSpecError,
                           match=rf"needs what the spans .* do not hold: {unmet}; train without "
                                 r"--feature_spec to use the spans' spec, or rebuild"):
            spec_for_training(tmp_path, str(path), START, END)


def test_mixed_unrecorded_and_missing_spans_fail_with_one_clear_error(tmp_path):
    write_span(tmp_path, START, SPEC)
    write_span(tmp_path, END, changed(SPEC, "device", vocabulary_size=4))
    with pytest.raises(FeatureSpecError, match=r"were built with different feature specs "
                                               r"\(device \(vocabulary_size\)\)"):
        spec_for_training(tmp_path, "", START, END)
    old = tmp_path / "old"
    write_span(old, START, None)
    with pytest.raises(FeatureSpecError, match="records no feature spec .* --feature_spec"):
        spec_for_training(old, "", START, START)
    with pytest.raises(FeatureSpecError, match="no complete span in .* build them with"):
        spec_for_training(tmp_path / "empty", "", START, END)
