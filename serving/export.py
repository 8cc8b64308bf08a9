"""Export a trained model as a split SavedModel for TF Serving.

``python -m serving.export --model_dir=M --export_base=E --model_name=cvr [--version=N]`` writes

```
E/cvr/N/saved_model.pb, variables/        embed / dense / serving_default (serving.signatures)
E/cvr/N/assets.extra/tf_serving_warmup_requests
E/models.config                            every model under E, latest version
E/batching_parameters.txt                  for server-side batching when in-graph batching is off
E/monitoring.config                        Prometheus metrics on the REST port
E/README.md                                the tensorflow_model_server command for these files
```

The version is written to a hidden temporary directory and renamed into place, so a server
polling ``E/cvr`` never sees half a version. In-graph batching and server-side batching are
never both on: the command line enables ``--enable_batching`` only for ``--batch_scope=none``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
from absl import app, flags, logging
from tensorflow.python.saved_model import loader_impl
from tf_keras.src.saving.legacy.saved_model import utils as keras_saved_model_utils

from cvr_tf import model_dir as model_dir_lib
from cvr_tf.compat import tf
from cvr_tf.model import CVRModel
from serving import signatures, tf_serving_config, warmup

MODELS_CONFIG = "models.config"
BATCHING_FILE = "batching_parameters.txt"
MONITORING_FILE = "monitoring.config"
README = "README.md"
WARMUP_ROWS = 100  # the typical request: one query's candidates


def existing_versions(model_base: str) -> list[int]:
    """Integer version directories under a model's base path, ascending."""
    if not os.path.isdir(model_base):
        return []
    return sorted(int(name) for name in os.listdir(model_base) if name.isdigit())


def export_model(
    model_dir: str,
    export_base: str,
    model_name: str,
    version: int | None = None,
    batching: signatures.BatchingConfig | None = None,
    dense_device: str = "gpu",
    jit_compile_dense: bool = False,
    dense_precision: str = "float32",
) -> str:
    """Exports the latest checkpoint of ``model_dir``; returns the version directory.

    Args:
      model_dir: a training job's model dir.
      export_base: TF Serving's base directory (one subdirectory per model).
      model_name: the model's name, and its subdirectory.
      version: the version number; default one more than the newest existing version.
      batching: in-graph batching parameters (``scope="none"`` disables it); default
        :class:`~serving.signatures.BatchingConfig`.
      dense_device: ``gpu``, ``cpu`` or ``none`` (unpinned) for the dense part's ops.
      jit_compile_dense: compile the dense part with XLA (tensorflow_model_server then needs
        ``--xla_cpu_compilation_enabled=true`` on CPU hosts).
      dense_precision: ``float32``, or ``bfloat16`` for the backbone's products (see
        :mod:`serving.signatures`; pays on CPUs with AVX512_BF16/AMX under oneDNN).

    Raises:
      ValueError: for an invalid ``model_name`` (see ``tf_serving_config.validate_model_name``),
        ``dense_device`` or ``dense_precision``.
    """
    tf_serving_config.validate_model_name(model_name)
    if tasks := model_dir_lib.read_model_definition(model_dir)[1].tasks:
        raise ValueError(f"{model_dir} is a multi-task model (--tasks={tasks}); exporting several "
                         "outputs is multi-output serving, issue 13 item 5, not done yet")
    if dense_device not in signatures.DEVICES:
        raise ValueError(
            f"dense_device {dense_device!r} unknown; use one of {', '.join(signatures.DEVICES)}"
        )
    model_base = os.path.join(os.path.abspath(export_base), model_name)
    versions = existing_versions(model_base)
    version = version if version is not None else (versions[-1] + 1 if versions else 1)
    if version <= 0:
        raise ValueError(f"--version must be a positive integer, got {version}")
    final = os.path.join(model_base, str(version))
    if os.path.exists(final):
        raise FileExistsError(
            f"{final} exists; servers may be serving it. Export a new --version "
            f"(the next free one is {versions[-1] + 1})"
        )

    batching = batching or signatures.BatchingConfig()
    model = model_dir_lib.load_model(model_dir)
    module = signatures.ServingModule(
        model, batching, signatures.DEVICES[dense_device], jit_compile_dense, dense_precision
    )
    staging = os.path.join(model_base, f".tmp-{version}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    # Without Keras' traced call function of every layer: TF Serving runs the signatures only,
    # and the traces doubled the time of a DHEN export. tf_keras' own option (it has no public
    # one for tf.saved_model.save).
    with keras_saved_model_utils.keras_option_scope(save_traces=False):
        tf.saved_model.save(module, staging, signatures=module.signatures())
    warmup.write_warmup_requests(staging, model_name, _warmup_requests(model, module, batching))
    os.replace(staging, final)
    write_server_files(export_base, batching)
    logging.info("Exported %s version %d to %s", model_name, version, final)
    return final


def _warmup_requests(
    model: CVRModel, module: signatures.ServingModule, batching: signatures.BatchingConfig
) -> list[tuple[str, dict[str, np.ndarray]]]:
    sizes = (
        sorted({WARMUP_ROWS, *batching.allowed_batch_sizes})
        if batching.scope != "none"
        else [WARMUP_ROWS]
    )
    requests = []
    for size in sizes:
        features = warmup.synthetic_features(model.spec, model.vocabularies, size, seed=size)
        embeddings = module.embed(features)[signatures.EMBEDDINGS].numpy()
        requests += [
            (signatures.EMBED_SIGNATURE, features),
            (signatures.DENSE_SIGNATURE, {signatures.EMBEDDINGS: embeddings}),
            (signatures.DEFAULT_SIGNATURE, features),
        ]
    return requests


def compiles_with_xla(version_dir: str) -> bool:
    """Whether a SavedModel holds ``jit_compile`` functions (tensorflow_model_server on CPU then
    needs ``--xla_cpu_compilation_enabled=true``)."""
    meta_graph = loader_impl.parse_saved_model(version_dir).meta_graphs[0]
    return any(f.attr["_XlaMustCompile"].b for f in meta_graph.graph_def.library.function)


def write_server_files(export_base: str, batching: signatures.BatchingConfig) -> dict[str, str]:
    """(Re)writes models.config for every model under ``export_base``, and the other files.

    The README's tensorflow_model_server command turns XLA on for CPU hosts when the latest
    version of any model there is compiled with it.
    """
    export_base = os.path.abspath(export_base)
    models = sorted(
        name
        for name in os.listdir(export_base)
        if existing_versions(os.path.join(export_base, name))
    )
    paths = {
        name: os.path.join(export_base, name)
        for name in (MODELS_CONFIG, BATCHING_FILE, MONITORING_FILE, README)
    }
    tf_serving_config.write_models_config(
        paths[MODELS_CONFIG],
        [
            tf_serving_config.ModelEntry(
                name, os.path.join(export_base, name), tf_serving_config.latest_versions(1)
            )
            for name in models
        ],
    )
    # Server-side batching (for --batch_scope=none exports) does not split requests here, so its
    # file caps requests at the executed batch size: the last allowed size.
    tf_serving_config.write_batching_parameters(
        paths[BATCHING_FILE],
        max_batch_size=batching.max_execution_batch_size,
        batch_timeout_micros=batching.batch_timeout_micros,
        max_enqueued_batches=batching.max_enqueued_batches,
        num_batch_threads=batching.num_batch_threads,
        allowed_batch_sizes=batching.allowed_batch_sizes,
    )
    tf_serving_config.write_monitoring_config(paths[MONITORING_FILE])
    server_side = batching.scope == "none"
    xla = any(
        compiles_with_xla(os.path.join(export_base, name, str(existing_versions(
            os.path.join(export_base, name))[-1])))
        for name in models
    )
    command = tf_serving_config.model_server_command(
        paths[MODELS_CONFIG],
        batching_parameters_file=paths[BATCHING_FILE] if server_side else None,
        monitoring_config_file=paths[MONITORING_FILE],
        xla_cpu_compilation_enabled=xla,
    )
    local = tf_serving_config.model_server_command(
        paths[MODELS_CONFIG],
        batching_parameters_file=paths[BATCHING_FILE] if server_side else None,
    ).replace("tensorflow_model_server", "python -m serving.server", 1)
    with open(paths[README], "w", encoding="utf-8") as handle:
        handle.write(_readme(models, command, local, batching))
    return paths


def _readme(
    models: list[str], command: str, local: str, batching: signatures.BatchingConfig
) -> str:
    if batching.scope == "none":
        batching_note = (
            "In-graph batching is off, so the server batches requests itself "
            f"(`--enable_batching` with `{BATCHING_FILE}`)."
        )
    else:
        batching_note = (
            f"Batching happens inside the graph (`BatchFunction`, scope "
            f"`{batching.scope}`), so the server must NOT also batch: do not add "
            f"`--enable_batching`. `{BATCHING_FILE}` holds the same parameters for "
            "an export with `--batch_scope=none`."
        )
    return (
        f"# Serving {', '.join(models)}\n\n"
        f"With TF Serving:\n\n```\n{command}\n```\n\n"
        f"With the local development server (same gRPC API):\n\n```\n{local}\n```\n\n"
        f"{batching_note} Prometheus metrics: REST port, "
        f"`{tf_serving_config.PROMETHEUS_METRICS_PATH}`.\n"
    )


FLAGS = flags.FLAGS


def _define_flags() -> None:
    defaults = signatures.BatchingConfig()
    flags.DEFINE_string("model_dir", None, "The training job's model dir.")
    flags.DEFINE_string("export_base", None, "TF Serving base directory.")
    flags.DEFINE_string("model_name", "cvr", "Model name (its subdirectory of --export_base).")
    flags.DEFINE_integer("version", None, "Version number; default the next free one.")
    flags.DEFINE_enum(
        "batch_scope",
        defaults.scope,
        list(signatures.BATCH_SCOPES),
        "In-graph batching: dense part only, whole model, or none.",
    )
    flags.DEFINE_string(
        "batching_parameters_file",
        "",
        "Read the batching parameters from this BatchingParameters text proto.",
    )
    flags.DEFINE_integer(
        "max_batch_size",
        defaults.max_batch_size,
        "Largest request accepted, in rows; requests over the last --allowed_batch_sizes are "
        "split into batches of at most that size.",
    )
    flags.DEFINE_integer(
        "batch_timeout_micros",
        defaults.batch_timeout_micros,
        "How long a batch waits for more requests.",
    )
    flags.DEFINE_integer("num_batch_threads", defaults.num_batch_threads, "Batches in parallel.")
    flags.DEFINE_integer("max_enqueued_batches", defaults.max_enqueued_batches, "Queue depth.")
    flags.DEFINE_list(
        "allowed_batch_sizes",
        [str(s) for s in defaults.allowed_batch_sizes],
        "Padded batch sizes, increasing; the last (at most --max_batch_size) is the largest "
        "batch that runs. Empty: no padding and no splitting.",
    )
    flags.DEFINE_enum(
        "dense_device",
        "gpu",
        list(signatures.DEVICES),
        "Device the dense ops are pinned to (soft placement falls back to CPU).",
    )
    flags.DEFINE_bool(
        "jit_compile_dense",
        False,
        "Compile the dense part with XLA; tensorflow_model_server needs "
        "--xla_cpu_compilation_enabled=true for it on CPU hosts.",
    )
    flags.DEFINE_enum(
        "dense_precision",
        "float32",
        list(signatures.DENSE_PRECISIONS),
        "bfloat16: the backbone's products in bfloat16 (float32 accumulation, norms and logit "
        "head); for CPUs with AVX512_BF16/AMX under oneDNN.",
    )
    flags.mark_flags_as_required(["model_dir", "export_base"])


def batching_from_flags() -> signatures.BatchingConfig:
    if FLAGS.batching_parameters_file:
        params = tf_serving_config.read_batching_parameters(FLAGS.batching_parameters_file)
        fields = {
            "max_batch_size": params.max_batch_size,
            "num_batch_threads": params.num_batch_threads,
            "max_enqueued_batches": params.max_enqueued_batches,
            "batch_timeout_micros": params.batch_timeout_micros,
        }
        values = {k: v.value for k, v in fields.items() if params.HasField(k)}
        values["allowed_batch_sizes"] = tuple(params.allowed_batch_sizes)
        return dataclasses.replace(signatures.BatchingConfig(scope=FLAGS.batch_scope), **values)
    return signatures.BatchingConfig(
        scope=FLAGS.batch_scope,
        max_batch_size=FLAGS.max_batch_size,
        batch_timeout_micros=FLAGS.batch_timeout_micros,
        num_batch_threads=FLAGS.num_batch_threads,
        max_enqueued_batches=FLAGS.max_enqueued_batches,
        allowed_batch_sizes=tuple(int(s) for s in FLAGS.allowed_batch_sizes),
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        batching = batching_from_flags()
        path = export_model(
            FLAGS.model_dir,
            FLAGS.export_base,
            FLAGS.model_name,
            FLAGS.version,
            batching,
            FLAGS.dense_device,
            FLAGS.jit_compile_dense,
            FLAGS.dense_precision,
        )
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error
    print(path)
    with open(os.path.join(FLAGS.export_base, README), encoding="utf-8") as handle:
        print(handle.read())


if __name__ == "__main__":
    _define_flags()
    app.run(main)
