"""Training callbacks: the periodic evaluation's log line."""

from cvr_tf import callbacks


def test_periodic_evaluation_logs_na_for_a_metric_that_is_not_computable(monkeypatch):
    lines = []
    monkeypatch.setattr(callbacks.logging, "info", lambda message, *args: lines.append(
        message % args))
    evaluation = callbacks.PeriodicEvaluation(
        every_steps=1, total_steps=1,
        evaluate=lambda: {"logloss": 0.123456, "auc": None, "mean_average_precision": None})
    evaluation.on_train_batch_end(0)
    assert lines == ["eval at step 1: logloss 0.12346  auc n/a  mAP n/a"]
    assert evaluation.curve[0]["auc"] is None and evaluation.curve[0]["step"] == 1
