"""--on_bad_file=skip_day: an unreadable log file costs the days that need it, one line each."""

import datetime
import glob
import os
import re
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from cvr_tf.features import default_spec
from cvr_tf.input import is_complete_span, span_path
from pipelines import bad_files
from pipelines.log_reader import CONVERSIONS, IMPRESSIONS, BadLogFileError, Partition
from pipelines.span_pipeline import build_spans
from tests.pipelines.log_fixtures import DAYS, START, write_logs

END = START + datetime.timedelta(days=DAYS - 1)
DAY = [START + datetime.timedelta(days=i) for i in range(DAYS)]
SPEC = default_spec()


@pytest.fixture(scope="module")
def clean_logs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("logs"))
    write_logs(root)
    return root


@pytest.fixture
def logs(clean_logs, tmp_path):
    copy = str(tmp_path / "logs")
    shutil.copytree(clean_logs, copy)
    return copy


def _first_file(logs, kind, day):
    return sorted(glob.glob(os.path.join(logs, kind, f"date={day}", "*.parquet")))[0]


def _empty(path):
    with open(path, "wb"):
        pass


def _corrupt_a_page(path):
    """Overwrites the start of a column chunk: the footer still opens, reading the page fails."""
    offset = pq.ParquetFile(path).metadata.row_group(0).column(3).data_page_offset
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\xff" * 40)


def _built_days(output):
    return [d for d in DAY if is_complete_span(span_path(output, d))]


@pytest.mark.parametrize("damage, what", [
    (_empty, r"is empty \(0 bytes\)"),  # found on the driver, in the footer
    (_corrupt_a_page, r"is not readable Parquet \(\d+ bytes\)"),  # found by a worker
])
def test_a_bad_impressions_file_costs_its_day_only(logs, tmp_path, damage, what):
    bad = _first_file(logs, IMPRESSIONS, DAY[1])
    damage(bad)
    summary = build_spans(logs, str(tmp_path / "out"), START, END, SPEC,
                          on_bad_file=bad_files.SKIP_DAY)
    assert summary.built == [DAY[0].isoformat(), DAY[2].isoformat()]
    assert list(summary.bad_days) == [DAY[1].isoformat()]
    assert re.fullmatch(rf"impressions file {re.escape(bad)} {what}: .*",
                        summary.bad_days[DAY[1].isoformat()])
    assert _built_days(str(tmp_path / "out")) == [DAY[0], DAY[2]]
    assert sorted(summary.spans) == summary.built
    assert not glob.glob(str(tmp_path / "out" / ".tmp-*"))


def test_a_bad_conversions_file_costs_every_day_whose_labels_read_it(logs, tmp_path):
    # Conversions of DAY[1] label the impressions of DAY[1] and the 3 days before it.
    _empty(_first_file(logs, CONVERSIONS, DAY[1]))
    summary = build_spans(logs, str(tmp_path / "out"), START, END, SPEC,
                          on_bad_file=bad_files.SKIP_DAY)
    assert list(summary.bad_days) == [DAY[0].isoformat(), DAY[1].isoformat()]
    assert summary.built == [DAY[2].isoformat()]


def test_fail_is_the_default_and_names_the_skip_day_fix(logs, tmp_path):
    _corrupt_a_page(_first_file(logs, IMPRESSIONS, DAY[1]))
    with pytest.raises(BadLogFileError, match="or pass --on_bad_file=skip_day to build the other"):
        build_spans(logs, str(tmp_path / "out"), START, END, SPEC)
    with pytest.raises(ValueError, match="on_bad_file must be one of fail, skip_day, got 'x'"):
        build_spans(logs, str(tmp_path / "out"), START, END, SPEC, on_bad_file="x")


def test_days_hit_follow_the_label_windows():
    build = set(DAY)
    three_days = {CONVERSIONS: 3 * 86_400_000}
    conversions = Partition(CONVERSIONS, f"date={DAY[2]}", DAY[2], ())
    assert bad_files.days_hit(conversions, build, three_days) == DAY
    assert bad_files.days_hit(conversions, build, {CONVERSIONS: 0}) == [DAY[2]]
    # An hour's window reaches the next day's partition, not the one after.
    assert bad_files.days_hit(conversions, build, {CONVERSIONS: 3_600_000}) == DAY[1:]
    assert bad_files.days_hit(conversions, build, {}) == []  # labels from a column
    assert bad_files.days_hit(Partition("clicks", f"date={DAY[2]}", DAY[2], ()), build,
                              three_days) == []  # no label joins clicks
    assert bad_files.days_hit(Partition(IMPRESSIONS, f"date={DAY[0]}", DAY[0], ()), build,
                              three_days) == [DAY[0]]
    assert bad_files.days_hit(Partition(IMPRESSIONS, "date=2026-13-45", None, ()), build,
                              three_days) == []


def test_the_job_lists_skipped_days_one_line_each_and_exits_3(logs, tmp_path):
    bad = _first_file(logs, IMPRESSIONS, DAY[1])
    _empty(bad)
    command = [sys.executable, "-m", "pipelines.build_tfrecords", f"--logs={logs}",
               f"--output={tmp_path / 'out'}", f"--start_date={DAY[0]}", f"--end_date={DAY[1]}",
               "--on_bad_file=skip_day"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert result.returncode == bad_files.EXIT_SKIPPED_DAYS, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("span ")]
    assert len(lines) == 1 and lines[0].startswith(
        f"span {DAY[1]} not built: impressions file {bad} is empty (0 bytes): ")
    assert result.stderr.splitlines()[-1] == lines[0]


def test_a_bad_file_that_no_span_needs_is_reported_with_its_partition(logs, tmp_path):
    bad = sorted(glob.glob(os.path.join(logs, IMPRESSIONS, "date=2026-13-45", "*.parquet")))[0]
    _empty(bad)
    summary = build_spans(logs, str(tmp_path / "out"), START, END, SPEC,
                          on_bad_file=bad_files.SKIP_DAY)
    assert summary.built == [d.isoformat() for d in DAY] and summary.bad_days == {}
    assert summary.partitions["impressions/date=2026-13-45"]["bad_file"].startswith(
        f"impressions file {bad} is empty (0 bytes)")
