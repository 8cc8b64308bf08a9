"""Suite-wide set-up and the shared small data set.

Importing ``cvr_tf`` first selects the Keras 2 API before any test module imports TensorFlow.
``simulated_spans`` runs the real simulator and the real Beam pipeline once per session on a
small world, for the tests of training, export and serving that need real spans;
``funnel_spans`` adds a click log to those logs and builds spans with two labels, on which
``esmm_run`` and ``click_space_run`` train a multi-task model each, once per session, for the
tests of multi-task training, multi-output serving and retraining; ``esmm_export`` exports the
first as version 1 of model ``esmm``.
"""

import dataclasses
import datetime
import os

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


FUNNEL_LABELS = {"clicked": {"events": "clicks", "window_hours": 1},
                 "converted": {"events": "conversions", "attribution_days": 3}}


def write_synthetic_clicks(logs: str, seed: int = 0) -> None:
    """Adds a click log to simulated logs: every converted impression and a position-biased
    share of the others (about 20 % at position 1), clicked 30 s after the impression. The log
    goes on the day after the last impressions (an empty partition), as a live log does."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    impressions = pq.read_table(os.path.join(logs, "impressions"),
                                columns=["request_id", "item_id", "ts", "position"])
    conversions = pq.read_table(os.path.join(logs, "conversions"),
                                columns=["request_id", "item_id"])
    converted = {(r, i) for r, i in zip(conversions.column("request_id").to_pylist(),
                                        conversions.column("item_id").to_pylist(), strict=True)}
    rng = np.random.default_rng(seed)
    position = impressions.column("position").to_numpy()
    pairs = zip(impressions.column("request_id").to_pylist(),
                impressions.column("item_id").to_pylist(), strict=True)
    clicked = np.array([pair in converted for pair in pairs])
    clicked |= rng.random(len(position)) < 0.2 / np.sqrt(position)
    clicks = impressions.filter(pa.array(clicked)).select(["request_id", "item_id", "ts"])
    clicks = clicks.set_column(2, "ts", pc.add(clicks.column("ts"), 30_000))
    days = pc.strftime(pc.cast(clicks.column("ts"), pa.timestamp("ms")), "%Y-%m-%d")
    last = max(datetime.date.fromisoformat(d) for d in days.to_pylist())
    for day in sorted({*days.to_pylist(), (last + datetime.timedelta(days=1)).isoformat()}):
        directory = os.path.join(logs, "clicks", f"date={day}")
        os.makedirs(directory)
        pq.write_table(clicks.filter(pc.equal(days, day)), os.path.join(directory, "part.parquet"))


@pytest.fixture(scope="session")
def funnel_spans(simulated_spans, tmp_path_factory) -> SimulatedSpans:
    """The simulated logs with a click log (:func:`write_synthetic_clicks`), built into spans
    with two labels: ``clicked`` (1 h) and ``converted`` (3 days)."""
    from cvr_tf.features import default_spec, spec_from_dict
    from pipelines.span_pipeline import build_spans

    root = tmp_path_factory.mktemp("funnel")
    logs = root / "logs"
    logs.mkdir()
    for kind in ("impressions", "conversions"):
        os.symlink(os.path.join(simulated_spans.logs, kind), logs / kind)
    write_synthetic_clicks(str(logs))
    spec = spec_from_dict({**default_spec().to_dict(), "labels": FUNNEL_LABELS})
    build_spans(logs, root / "spans", simulated_spans.first_day,
                simulated_spans.day(simulated_spans.days - 1), spec)
    return SimulatedSpans(str(logs), str(root / "spans"), simulated_spans.first_day,
                          simulated_spans.days)


def multitask_config(spans: SimulatedSpans, model_dir, **overrides):
    """A few steps of an ESMM (``--tasks=ctr,ctcvr``, mlp backbone) training run on ``spans``:
    days 0-3 train, days 4-5 test; ``overrides`` replace any field."""
    from cvr_tf import training
    from cvr_tf.model import ModelConfig

    values = dict(data_dir=spans.spans, model_dir=str(model_dir), train_start=spans.day(0),
                  train_end=spans.day(3), eval_start=spans.day(4), eval_end=spans.day(5),
                  batch_size=128, steps=8, eval_every_steps=4, log_every_steps=4,
                  checkpoint_every_steps=4, model=ModelConfig(backbone="mlp", tasks="ctr,ctcvr"))
    values.update(overrides)
    return training.TrainConfig(**values)


@pytest.fixture(scope="session")
def esmm_run(funnel_spans, tmp_path_factory):
    """(config, metrics record) of ESMM trained for 8 steps on the funnel spans."""
    from cvr_tf import training

    config = multitask_config(funnel_spans, tmp_path_factory.mktemp("esmm"))
    return config, training.train(config)


@pytest.fixture(scope="session")
def click_space_run(funnel_spans, tmp_path_factory):
    """(config, metrics record) of a click-space pCVR model (``--tasks=cvr``) trained for 4
    steps on the funnel spans, selected on pCVR's log loss on the clicked impressions."""
    from cvr_tf import training
    from cvr_tf.model import ModelConfig

    config = multitask_config(
        funnel_spans, tmp_path_factory.mktemp("click_space"), steps=4, eval_every_steps=2,
        model=ModelConfig(backbone="mlp", tasks="cvr"), early_stopping_task="cvr_on_clicks",
        early_stopping_metric="logloss")
    return config, training.train(config)


@pytest.fixture(scope="session")
def esmm_export(esmm_run, tmp_path_factory) -> str:
    """``esmm_run``'s model exported as ``<base>/esmm/1`` (outputs ``ctr``, ``cvr``, ``ctcvr``),
    its dense part behind small in-graph batching (executed batches of 16 or 64 rows)."""
    from serving import export
    from serving.batching import BatchingConfig

    batching = BatchingConfig(max_batch_size=200, allowed_batch_sizes=(16, 64),
                              batch_timeout_micros=100)
    return export.export_model(esmm_run[0].model_dir, str(tmp_path_factory.mktemp("base")),
                               "esmm", batching=batching)
