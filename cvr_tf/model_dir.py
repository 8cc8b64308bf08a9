"""The layout of a training job's model directory, and rebuilding a model from one.

```
<model_dir>/
  model_config.json     scaled feature spec + ModelConfig: enough to rebuild the model
  vocab/<table>.txt     the vocabularies the model was built with (row i + 1 = token i)
  checkpoints/          tf.train.Checkpoint of model (+ optimizers), ckpt-<step>: the restored
                        best validated step of each run
  backup/               ckpt-<step> + state-<step>.json while a run is in flight (cvr_tf.resume)
  best/                 the best validated checkpoint while a run is in flight
  logs/                 TensorBoard event files
  run_config.json       the exact flags of the last run
  metrics.json          eval metrics, params, FLOPs, throughput, wall time
  warm_start.json       what a warm start carried over, remapped or initialized fresh
```

Export, warm start and experiments read a model dir only through this module.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from cvr_tf.compat import tf
from cvr_tf.features import spec_from_dict
from cvr_tf.model import CVRModel, ModelConfig
from cvr_tf.vocabulary import write_vocabularies

MODEL_CONFIG = "model_config.json"
VOCAB_DIR = "vocab"
CHECKPOINT_DIR = "checkpoints"
BACKUP_DIR = "backup"
BEST_DIR = "best"
LOG_DIR = "logs"
RUN_CONFIG = "run_config.json"
METRICS = "metrics.json"
WARM_START = "warm_start.json"


def path(model_dir: str | os.PathLike, name: str) -> str:
    return os.path.join(os.fspath(model_dir), name)


def write_json(file_path: str, data: Any) -> None:
    """Writes JSON atomically (temp file + rename), so a killed job never leaves half a file."""
    os.makedirs(os.path.dirname(file_path) or ".", exist_ok=True)
    tmp = f"{file_path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
    os.replace(tmp, file_path)


def read_json(file_path: str) -> Any:
    with open(file_path, encoding="utf-8") as handle:
        return json.load(handle)


def save_model_definition(model_dir: str | os.PathLike, model: CVRModel) -> None:
    """Writes ``model_config.json`` and ``vocab/`` so the model can be rebuilt elsewhere."""
    write_vocabularies(path(model_dir, VOCAB_DIR), model.vocabularies)
    write_json(path(model_dir, MODEL_CONFIG), {
        "spec": model.spec.to_dict(), "model": dataclasses.asdict(model.config),
        "vocabulary_tables": sorted(model.vocabularies)})


def has_model_definition(model_dir: str | os.PathLike) -> bool:
    return os.path.exists(path(model_dir, MODEL_CONFIG))


def read_model_definition(model_dir: str | os.PathLike
                          ) -> tuple[dict[str, Any], ModelConfig, dict[str, list[str]]]:
    """(scaled spec dict, model config, vocabularies) of a model dir."""
    config_path = path(model_dir, MODEL_CONFIG)
    if not os.path.exists(config_path):
        raise FileNotFoundError(
            f"{config_path} does not exist: {model_dir} is not a cvr_tf model dir (train one with "
            "python -m cvr_tf.train --model_dir=...)")
    record = read_json(config_path)
    vocabularies = {}
    for table in record["vocabulary_tables"]:
        with open(os.path.join(path(model_dir, VOCAB_DIR), f"{table}.txt"),
                  encoding="utf-8") as handle:
            vocabularies[table] = [line.rstrip("\n") for line in handle if line.rstrip("\n")]
    return record["spec"], ModelConfig(**record["model"]), vocabularies


def build_from_definition(spec_dict: Mapping[str, Any], config: ModelConfig,
                          vocabularies: Mapping[str, Sequence[str]]) -> CVRModel:
    """A model of exactly the recorded (already scaled) spec and vocabularies."""
    spec_from_dict(spec_dict)  # validates before building
    return CVRModel(spec_config=spec_dict, vocabularies=vocabularies,
                    config=dataclasses.asdict(config), name="cvr_model")


def checkpoint(model: CVRModel, with_optimizers: bool = False) -> tf.train.Checkpoint:
    """The object graph saved in ``checkpoints/``: the model, and with ``with_optimizers`` its
    dense and embedding optimizers (training state, for resume and ``--continue``)."""
    if not with_optimizers:
        return tf.train.Checkpoint(model=model)
    if model.embedding_optimizer is None:
        return tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    return tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                               embedding_optimizer=model.embedding_optimizer)


def is_finished(model_dir: str | os.PathLike) -> bool:
    """Whether a training run completed in ``model_dir``: it writes ``metrics.json`` last."""
    return os.path.exists(path(model_dir, METRICS))


def checkpoint_step(checkpoint_path: str) -> int:
    """The step a ``.../ckpt-<step>`` checkpoint path is numbered by."""
    return int(checkpoint_path.rsplit("-", 1)[1])


def latest_checkpoint(model_dir: str | os.PathLike) -> str | None:
    return tf.train.latest_checkpoint(path(model_dir, CHECKPOINT_DIR))


def load_model(model_dir: str | os.PathLike) -> CVRModel:
    """Rebuilds the model of ``model_dir`` and restores its latest checkpoint's weights."""
    spec_dict, config, vocabularies = read_model_definition(model_dir)
    model = build_from_definition(spec_dict, config, vocabularies)
    ckpt_path = latest_checkpoint(model_dir)
    if ckpt_path is None:
        raise FileNotFoundError(
            f"no checkpoint in {path(model_dir, CHECKPOINT_DIR)}; the training run did not "
            "finish a checkpoint (run it again with the same flags to resume)")
    checkpoint(model).restore(ckpt_path).expect_partial().assert_existing_objects_matched()
    return model
