"""Search-log simulator and Beam pipelines that turn raw logs into TFRecord spans."""
