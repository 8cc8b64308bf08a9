"""The progress logger's throughput counts training steps only, not validation between them."""

import time

from cvr_tf.callbacks import ProgressLogger


class _Model:
    class optimizer:  # noqa: N801 - a Keras optimizer's step counter
        class iterations:  # noqa: N801
            @staticmethod
            def numpy() -> int:
                return 0


def test_time_between_steps_is_not_charged_to_training():
    progress = ProgressLogger(total_steps=4, batch_size=100, every_steps=1)
    progress.set_model(_Model())
    progress.on_train_begin()
    for batch in range(4):
        progress.on_train_batch_begin(batch)
        time.sleep(0.02)  # the step
        progress.on_train_batch_end(batch)
        time.sleep(0.2)  # a validation or backup in a later callback
    progress.on_train_end()
    # 3 steps after the first period at ~0.02 s each: ~5,000 examples/s, not ~450.
    assert 3_000 < progress.examples_per_second < 5_100
