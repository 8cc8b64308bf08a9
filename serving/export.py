"""Export a trained model as a split SavedModel for TF Serving.

``python -m serving.export --model_dir=M --export_base=E --model_name=cvr [--version=N]`` writes

```
E/cvr/N/saved_model.pb, variables/        embed / dense / serving_default (serving.signatures)
E/cvr/N/assets.extra/tf_serving_warmup_requests
E/cvr/N/assets.extra/cvr_tf_export.json   the model dir it was exported from (exported_from)
E/models.config                            every model under E, latest version (logging kept)
E/batching_parameters.txt                  for server-side batching when in-graph batching is off
E/monitoring.config                        Prometheus metrics on the REST port
E/README.md                                the tensorflow_model_server command for these files
```

The version is written to a hidden temporary directory (``.tmp-<version>-<pid>``) and renamed
into place, so a server polling ``E/cvr`` never sees half a version; the staging directory of an
export killed before its rename stays hidden until :func:`remove_stale_staging` removes it.
In-graph batching and server-side batching are never both on: the command line enables
``--enable_batching`` only for ``--batch_scope=none``.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
from collections.abc import Mapping

import numpy as np
from absl import app, flags, logging
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.python.saved_model import loader_impl
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import logging_config_pb2
from tf_keras.src.saving.legacy.saved_model import utils as keras_saved_model_utils

from cvr_tf import config_flags, job
from cvr_tf import model_dir as model_dir_lib
from cvr_tf.compat import tf
from cvr_tf.model import CVRModel
from serving import signatures, tf_serving_config, warmup
from serving.batching import BatchingConfig, read_batching_parameters, write_batching_parameters
from serving.logged_warmup import warmup_records
from serving.request_log import read_request_logs

MODELS_CONFIG = "models.config"
BATCHING_FILE = "batching_parameters.txt"
MONITORING_FILE = "monitoring.config"
README = "README.md"
WARMUP_ROWS = 100  # the typical request: one query's candidates
EXPORT_RECORD = "cvr_tf_export.json"  # in assets.extra: which model dir a version came from
_STAGING = re.compile(r"^\.tmp-\d+-(\d+)$")


def existing_versions(model_base: str) -> list[int]:
    """Integer version directories under a model's base path, ascending."""
    if not os.path.isdir(model_base):
        return []
    return sorted(int(name) for name in os.listdir(model_base) if name.isdigit())


def exported_from(version_dir: str) -> str | None:
    """The model dir a version was exported from (its export record), or None without one."""
    path = os.path.join(version_dir, warmup.WARMUP_DIR, EXPORT_RECORD)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)["model_dir"]


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(model_base: str) -> list[str]:
    """Removes the staging directories of exports whose process is gone (killed before the
    rename); returns their paths. Exports still running keep theirs."""
    if not os.path.isdir(model_base):
        return []
    removed = []
    for name in sorted(os.listdir(model_base)):
        match = _STAGING.match(name)
        if match and not _process_exists(int(match.group(1))):
            shutil.rmtree(os.path.join(model_base, name), ignore_errors=True)
            removed.append(os.path.join(model_base, name))
    return removed


def export_model(
    model_dir: str,
    export_base: str,
    model_name: str,
    version: int | None = None,
    batching: BatchingConfig | None = None,
    dense_device: str = "gpu",
    jit_compile_dense: bool = False,
    dense_precision: str = "float32",
    warmup_requests: str = "",
) -> str:
    """Exports the latest checkpoint of ``model_dir``; returns the version directory.

    Args:
      model_dir: a training job's model dir.
      export_base: TF Serving's base directory (one subdirectory per model).
      model_name: the model's name, and its subdirectory.
      version: the version number; default one more than the newest existing version.
      batching: in-graph batching parameters (``scope="none"`` disables it); default
        :class:`~serving.batching.BatchingConfig`.
      dense_device: ``gpu``, ``cpu`` or ``none`` (unpinned) for the dense part's ops.
      jit_compile_dense: compile the dense part with XLA (tensorflow_model_server then needs
        ``--xla_cpu_compilation_enabled=true`` on CPU hosts).
      dense_precision: ``float32``, or ``bfloat16`` for the backbone's products (see
        :mod:`serving.signatures`; pays on CPUs with AVX512_BF16/AMX under oneDNN).
      warmup_requests: a file of logged requests (``python -m serving.logged_warmup``) to ship
        as the warmup records instead of synthetic ones; empty: synthetic.

    Raises:
      ValueError: for an invalid ``model_name`` (see ``tf_serving_config.validate_model_name``),
        ``dense_device`` or ``dense_precision``, or warmup requests the model cannot answer.
      NotADirectoryError: ``export_base`` is a file.
      FileExistsError: the version exists.
    """
    tf_serving_config.validate_model_name(model_name)
    if dense_device not in signatures.DEVICES:
        raise ValueError(
            f"dense_device {dense_device!r} unknown; use one of {', '.join(signatures.DEVICES)}"
        )
    if os.path.exists(export_base) and not os.path.isdir(export_base):
        raise NotADirectoryError(f"--export_base={export_base} is not a directory; pass the "
                                 "serving base directory (created if missing)")
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

    batching = batching or BatchingConfig()
    model = model_dir_lib.load_model(model_dir)
    module = signatures.ServingModule(
        model, batching, signatures.DEVICES[dense_device], jit_compile_dense, dense_precision
    )
    functions = module.signatures()
    logged = _logged_warmup(warmup_requests, model_name, functions) if warmup_requests else None
    staging = os.path.join(model_base, f".tmp-{version}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        # Without Keras' traced call function of every layer: TF Serving runs the signatures only,
        # and the traces doubled the time of a DHEN export. tf_keras' own option (it has no public
        # one for tf.saved_model.save).
        with keras_saved_model_utils.keras_option_scope(save_traces=False):
            tf.saved_model.save(module, staging, signatures=functions)
        if logged is not None:
            warmup.write_warmup_logs(staging, logged)
        else:
            warmup.write_warmup_requests(staging, model_name,
                                         _warmup_requests(model, module, batching))
        with open(os.path.join(staging, warmup.WARMUP_DIR, EXPORT_RECORD), "w",
                  encoding="utf-8") as handle:
            json.dump({"model_dir": os.path.abspath(model_dir), "version": version,
                       "exported_at": datetime.datetime.now(datetime.UTC).isoformat()}, handle)
    except BaseException:  # a failed export leaves nothing behind (a killed one: staging)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.replace(staging, final)
    write_server_files(export_base, batching)
    logging.info("Exported %s version %d to %s", model_name, version, final)
    return final


def _logged_warmup(path: str, model_name: str,
                   functions: Mapping[str, tf.types.experimental.ConcreteFunction]
                   ) -> list[prediction_log_pb2.PredictionLog]:
    """The warmup records of a logged-requests file, checked against the signatures about to be
    exported (their names, and the input and output keys TF Serving will read from their
    ``SignatureDef``s), before anything is written.

    Raises:
      ValueError: a request calls a signature the model lacks, sends other inputs, or filters
        on an output the signature lacks (e.g. ``probabilities`` logged for a single-task model
        replayed against a multi-task one, whose outputs are named by task).
    """
    served = {name: ({spec.name for spec in tf.nest.flatten(function.structured_input_signature)},
                     set(function.structured_outputs))
              for name, function in functions.items()}
    records = warmup_records(read_request_logs([path]), model_name)
    for index, record in enumerate(records, start=1):
        if record.WhichOneof("log_type") != "predict_log":
            continue
        request = record.predict_log.request
        name = request.model_spec.signature_name or signatures.DEFAULT_SIGNATURE
        if name not in served:
            raise ValueError(f"--warmup_requests={path}: record {index} calls signature "
                             f"{name!r}; the model has {', '.join(sorted(served))}")
        wanted, outputs = served[name]
        if set(request.inputs) != wanted:
            raise ValueError(f"--warmup_requests={path}: record {index} sends inputs "
                             f"{sorted(request.inputs)}; signature {name!r} takes "
                             f"{sorted(wanted)} (were the requests logged for another model?)")
        unknown = sorted(set(request.output_filter) - outputs)
        if unknown:
            raise ValueError(f"--warmup_requests={path}: record {index} asks for outputs "
                             f"{unknown}; signature {name!r} returns {sorted(outputs)} (were "
                             "the requests logged for another model?)")
    if not records:
        raise ValueError(f"--warmup_requests={path} holds no request")
    return records


def _warmup_requests(
    model: CVRModel, module: signatures.ServingModule, batching: BatchingConfig
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
    return _compiles_with_xla(loader_impl.parse_saved_model(version_dir).meta_graphs[0])


def _compiles_with_xla(meta_graph: meta_graph_pb2.MetaGraphDef) -> bool:
    return any(f.attr["_XlaMustCompile"].b for f in meta_graph.graph_def.library.function)


def _logging_configs(models_config: str) -> dict[str, logging_config_pb2.LoggingConfig]:
    """Model -> the ``logging_config`` an existing ``models.config`` gives it (request logging
    a team set up survives the next export's rewrite)."""
    if not os.path.exists(models_config):
        return {}
    config = tf_serving_config.read_models_config(models_config)
    return {model.name: model.logging_config for model in config.model_config_list.config
            if model.HasField("logging_config")}


def write_server_files(export_base: str, batching: BatchingConfig) -> dict[str, str]:
    """(Re)writes models.config for every model under ``export_base`` (keeping each model's
    ``logging_config``), and the other files.

    The README's tensorflow_model_server command turns XLA on for CPU hosts when the latest
    version of any model there is compiled with it, and the README names each model's outputs
    (those of its latest version's ``serving_default``).
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
    logging_configs = _logging_configs(paths[MODELS_CONFIG])
    tf_serving_config.write_models_config(
        paths[MODELS_CONFIG],
        [
            tf_serving_config.ModelEntry(
                name, os.path.join(export_base, name), tf_serving_config.latest_versions(1),
                logging=logging_configs.get(name),
            )
            for name in models
        ],
    )
    # Server-side batching (for --batch_scope=none exports) does not split requests, so its file
    # caps requests at the executed batch size: the last allowed size.
    write_batching_parameters(paths[BATCHING_FILE], batching.server_side())
    tf_serving_config.write_monitoring_config(paths[MONITORING_FILE])
    server_side = batching.scope == "none"
    latest = {name: loader_impl.parse_saved_model(os.path.join(export_base, name, str(
        existing_versions(os.path.join(export_base, name))[-1]))).meta_graphs[0]
        for name in models}
    xla = any(_compiles_with_xla(meta_graph) for meta_graph in latest.values())
    outputs = {name: sorted(meta_graph.signature_def[signatures.DEFAULT_SIGNATURE].outputs)
               for name, meta_graph in latest.items()
               if signatures.DEFAULT_SIGNATURE in meta_graph.signature_def}
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
        handle.write(_readme(models, command, local, batching, outputs))
    return paths


def _readme(
    models: list[str], command: str, local: str, batching: BatchingConfig,
    outputs: dict[str, list[str]],
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
        f"`{tf_serving_config.PROMETHEUS_METRICS_PATH}`.\n\n"
        "Outputs of `serving_default` and `dense`, one probability per candidate each (a "
        "Predict `output_filter` picks some; every one comes from the same dense call): "
        + "; ".join(f"{name}: " + ", ".join(f"`{output}`" for output in names)
                    for name, names in outputs.items()) + ".\n"
    )


FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("model_dir", None, "The training job's model dir.")
    flags.DEFINE_string("export_base", None, "TF Serving base directory.")
    flags.DEFINE_string("model_name", "cvr", "Model name (its subdirectory of --export_base).")
    flags.DEFINE_integer("version", None, "Version number; default the next free one.")
    config_flags.define_flags(BatchingConfig)  # --batch_scope, --max_batch_size, ...
    flags.DEFINE_string(
        "batching_parameters_file",
        "",
        "Read the batching parameters from this BatchingParameters text proto instead of the "
        "flags (fields it leaves out keep the flags' defaults).",
    )
    flags.DEFINE_string(
        "warmup_requests",
        "",
        "Ship these logged requests (python -m serving.logged_warmup) as the warmup records "
        "instead of synthetic ones.",
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


def batching_from_flags() -> BatchingConfig:
    """The batching flags, or the ``--batching_parameters_file`` (with ``--batch_scope``)."""
    if FLAGS.batching_parameters_file:
        return read_batching_parameters(FLAGS.batching_parameters_file,
                                        BatchingConfig(scope=FLAGS.batch_scope))
    return config_flags.build(BatchingConfig, FLAGS)


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
            FLAGS.warmup_requests,
        )
    except (ValueError, FileExistsError, FileNotFoundError, NotADirectoryError) as error:
        raise app.UsageError(str(error)) from error
    print(path)
    with open(os.path.join(FLAGS.export_base, README), encoding="utf-8") as handle:
        print(handle.read())


if __name__ == "__main__":
    _define_flags()
    job.run(main)
