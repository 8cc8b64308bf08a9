"""The daily retraining loop (``python -m cvr_tf.retrain``), one concept per module.

```
config.py     RetrainConfig: the loop's flags, with the candidate's TrainConfig nested
holdout.py    the holdout day's rows, every model's served scores, query counts, vocabularies
slices.py     value, query-frequency and new/returning-item slices and their metrics
blessing.py   the gate: computable, calibrated, no worse than the served model
report.py     retrain_report.json, its markdown table and the metric-history plot
loop.py       the orchestration: spans, warm start, gate, export (the only module of cvr_tf
              that imports pipelines and serving; docs/ARCHITECTURE.md section 1)
```
"""
