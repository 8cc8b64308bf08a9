"""Suite-wide set-up and the shared small data set.

Importing ``cvr_tf`` first selects the Keras 2 API before any test module imports TensorFlow.
``simulated_spans`` runs the real simulator and the real Beam pipeline once per session on a
small world, for the tests of training, export and serving that need real spans.
"""

import dataclasses
import datetime

import pytest

import cvr_tf  # noqa: F401


@dataclasses.dataclass(frozen=True)
class SimulatedSpans:
    logs: str
    spans: str
    first_day: datetime.date
    days: int

    def day(self, index: int) -> datetime.date:
        return self.first_day + datetime.timedelta(days=index)


@pytest.fixture(scope="session")
def simulated_spans(tmp_path_factory) -> SimulatedSpans:
    """Six days of simulated logs (300 requests x 10 candidates a day) built into spans."""
    from pipelines.simulate import simulate_logs
    from pipelines.span_pipeline import build_spans

    root = tmp_path_factory.mktemp("simulated")
    first_day, days = datetime.date(2026, 2, 2), 6
    simulate_logs(root / "logs", first_day, days, requests_per_day=300, candidates_per_request=10)
    build_spans(root / "logs", root / "spans", first_day,
                first_day + datetime.timedelta(days=days - 1))
    return SimulatedSpans(str(root / "logs"), str(root / "spans"), first_day, days)
