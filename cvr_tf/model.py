"""The CVR model: ``probability = dense_part(embedding_part(features))``.

The boundary between the two parts is the serving split (docs/ARCHITECTURE.md §5, §7):

* ``embedding_part``: raw serving columns -> ``[batch, D]`` (lookups and table gathers, CPU);
* ``dense_part``: ``[batch, D]`` -> conversion probability ``[batch]`` (backbone + logit head,
  GPU when present). It holds no embedding table, and ``embedding_part`` holds no dense weight.

A multi-task model (``--tasks``, :mod:`cvr_tf.tasks`) has the same two parts; its
``dense_part`` returns every task's probability by name, ``{task: [batch]}`` (e.g. ``ctr``,
``cvr``, ``ctcvr`` for ESMM), from towers over experts that are instances of the backbone.

Position debiasing. Features the spec marks ``train_only`` (the simulator's ``position``) feed a
shallow bias tower, a linear layer on their own embeddings, whose logit is added in training only:

    train logit  = s(x) + b(position)        (the label is explained by relevance + examination)
    served score = sigmoid(s(x))             (items ranked as if shown at the same position)

so the served model never reads the position, and the relevance tower is not credited with what
the position explains. In a multi-task model the bias logit joins the click tower's logit
(:attr:`cvr_tf.tasks.TaskSet.bias_tower`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from cvr_tf import losses as losses_lib
from cvr_tf import tasks as tasks_lib
from cvr_tf.backbones import Backbone, build_backbone, json_form, read_options_file
from cvr_tf.compat import keras, register_keras_serializable, tf
from cvr_tf.embedding import FeatureEmbedding
from cvr_tf.features import FeatureSpec, spec_from_dict
from cvr_tf.flops import Cost
from cvr_tf.layers.esmm import EntireSpaceProduct, log_probabilities
from cvr_tf.optimization import embedding_l2_penalty


def _field(default: Any, help_text: str, **metadata: Any) -> Any:
    """A config field whose help text is its training-job flag's help (cvr_tf.config_flags)."""
    return dataclasses.field(default=default, metadata={"help": help_text, **metadata})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What the training flags choose about the model; each field's ``metadata["help"]`` says
    what it does (``python -m cvr_tf.train --helpfull``)."""

    backbone: str = _field("dcnv2", "mlp, dcnv2, masknet, dhen, ensemble, ensemble:a+b.")
    backbone_scale: float = _field(1.0, "The backbone's scaling knob (see cvr_tf.backbones).")
    backbone_config: dict = dataclasses.field(default_factory=dict, metadata={
        "help": "JSON/YAML file of the backbone's options (README 'Backbone options'); "
                "empty for the defaults.", "parse": read_options_file})
    dropout: float | None = _field(
        None, "Dropout rate of every MLP in the backbone, in training only; unset: each "
        "backbone's own tuned default (README '--backbone_config'). A backbone_config "
        "'dropout' overrides it.")
    embedding_dim_scale: float = _field(1.0, "Multiplies every embedding dim.")
    vocab_scale: float = _field(1.0, "Multiplies every vocabulary cap and hash-bucket count.")
    loss: str = _field("logloss", "Training loss: pointwise logloss, or softmax cross-entropy "
                       "per request.", choices=losses_lib.LOSS_NAMES)
    position_debiasing: bool = _field(True, "Add the train_only bias tower's logit in training.")
    tasks: str = _field(
        "", "Comma-separated tasks of a multi-task model: ctr, cvr, ctcvr (ctr,ctcvr: ESMM, "
        "pCTCVR = pCTR x pCVR on every impression; cvr alone: trained on clicked impressions); "
        "structure, towers and loss weights in the 'tasks' section of --backbone_config. "
        "Empty: one conversion model on the spec's label.")

    def __post_init__(self) -> None:
        # JSON's form, so the config equals the one model_config.json gives back on resume.
        object.__setattr__(self, "backbone_config", json_form(self.backbone_config))


@register_keras_serializable(package="cvr_tf")
class CVRModel(keras.Model):
    """Embedding part, dense part, and a training-only position-bias tower.

    Build it with :func:`build_model`. ``model(features)`` returns served probabilities
    ``[batch]`` (no bias), or ``{task: [batch]}`` for a multi-task model (:attr:`task_set`);
    :meth:`training_logits` adds the bias-tower logit. ``fit`` trains on dicts of parsed
    columns as :func:`cvr_tf.input.make_dataset` yields them.

    Args:
      spec_config: the (already scaled) feature spec, as ``FeatureSpec.to_dict()``.
      vocabularies: table -> tokens, cut to the scaled spec's caps.
      config: the model config, as ``dataclasses.asdict(ModelConfig)``.
    """

    def __init__(self, spec_config: Mapping[str, Any], vocabularies: Mapping[str, Sequence[str]],
                 config: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec_from_dict(spec_config)
        self.vocabularies = {t: list(v) for t, v in vocabularies.items()}
        self.config = ModelConfig(**config)
        self._loss_fn = losses_lib.get_loss(self.config.loss)
        self.fake_negative_weighting = False
        self.task_labels: dict[str, str] = {}  # multi-task: label role -> the spec's column
        spec = self.spec
        backbone_options, _ = tasks_lib.split_options(self.config.backbone_config)
        self.task_set = tasks_lib.parse_tasks(self.config.tasks, self.config.backbone_config)
        if self.task_set is not None:
            if self.config.loss != "logloss":
                raise ValueError(f"--tasks={self.config.tasks} trains with --loss=logloss only, "
                                 f"not {self.config.loss}")
            self.task_labels = self.task_set.label_columns(spec.label_names, spec.label)

        serving_inputs = spec.keras_inputs()
        self._serving_column_names = list(serving_inputs)
        embedding = FeatureEmbedding.from_spec(spec, self.vocabularies)
        self.embedding_part = keras.Model(serving_inputs, embedding(serving_inputs),
                                          name="embedding_part")

        experts = self.task_set.gates()[0] if self.task_set is not None else 1
        backbones = [build_backbone(
            self.config.backbone, input_dim=embedding.output_dim,
            field_dims=spec.field_dims(), scale=self.config.backbone_scale,
            options=backbone_options, dropout=self.config.dropout) for _ in range(experts)]
        self.backbone: Backbone = backbones[0]
        embeddings = keras.Input(shape=(embedding.output_dim,), name="embeddings")
        if self.task_set is None:
            logits = keras.layers.Reshape((), name="logit")(
                keras.layers.Dense(1, name="logit_head")(self.backbone.layer(embeddings)))
            probabilities = keras.layers.Activation("sigmoid", name="probabilities")(logits)
            self._dense_cost = Cost(self.backbone.flops_per_example
                                    + 2 * self.backbone.output_dim)
        else:
            logits, self._dense_cost = self.task_set.build_logits(
                embeddings, [b.layer for b in backbones], embedding.output_dim,
                self.config.dropout)
            probabilities = EntireSpaceProduct(self.task_set.outputs,
                                               name="probabilities")(logits)
        self.dense_logits = keras.Model(embeddings, logits, name="dense_logits")
        self.dense_part = keras.Model(embeddings, probabilities, name="dense_part")

        self.bias_tower: keras.Model | None = None
        self._bias_embedding: keras.layers.Layer | None = None
        self.embedding_optimizer: keras.optimizers.Optimizer | None = None
        self.embedding_l2 = 0.0
        if self.config.position_debiasing and spec.train_only_features:
            bias_columns = {f.column for f in spec.train_only_features}
            bias_inputs = {c: keras.Input(shape=(), dtype=d, name=c)
                           for c, d in spec.column_dtypes().items() if c in bias_columns}
            self._bias_column_names = list(bias_inputs)
            bias_embedding = FeatureEmbedding.from_spec(spec, self.vocabularies, train_only=True)
            self._bias_embedding = bias_embedding
            bias_logit = keras.layers.Dense(1, name="bias_logit")(bias_embedding(bias_inputs))
            self.bias_tower = keras.Model(bias_inputs, keras.layers.Reshape(())(bias_logit),
                                          name="bias_tower")
        # Every weight exists now (the parts are functional models built above).
        self.built = True
        # The served forward pass as one graph, traced once and reused by every evaluation.
        self.served_probabilities = tf.function(
            lambda features: self(features),
            input_signature=[{c: tf.TensorSpec([None], tf.dtypes.as_dtype(d), name=c)
                              for c, d in spec.column_dtypes(train_only=False).items()}],
            autograph=False)
        # Every replica returns the same logs (metrics aggregate over replicas, the loss is
        # averaged in train_step): "first" keeps fit from summing them over workers, which its
        # "auto" reduction does under MultiWorkerMirroredStrategy.
        self.distribute_reduction_method = "first"

    # ------------------------------------------------------------------------------------------
    # Forward passes
    def call(self, features: Mapping[str, tf.Tensor], training: bool = False
             ) -> tf.Tensor | dict[str, tf.Tensor]:
        """Served probabilities ``[batch]`` (by task for a multi-task model): no bias tower,
        whatever ``training`` is."""
        return self.dense_part(self.embedding_part(self._serving_columns(features),
                                                   training=training), training=training)

    def training_logits(self, features: Mapping[str, tf.Tensor], training: bool = True
                        ) -> tf.Tensor | dict[str, tf.Tensor]:
        """Relevance logit plus, when debiasing, the bias tower's logit (tower logits by name
        for a multi-task model, the bias joining :attr:`cvr_tf.tasks.TaskSet.bias_tower`)."""
        logits = self.dense_logits(self.embedding_part(self._serving_columns(features),
                                                       training=training), training=training)
        if self.bias_tower is not None:
            bias_features = {c: features[c] for c in self._bias_column_names}
            bias = self.bias_tower(bias_features, training=training)
            if self.task_set is None:
                return logits + bias
            tower = self.task_set.bias_tower
            logits = {**logits, tower: logits[tower] + bias}
        return logits

    def _serving_columns(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        missing = [c for c in self._serving_column_names if c not in features]
        if missing:
            raise ValueError(f"features lack serving column(s) {', '.join(missing)}; the model "
                             f"reads {', '.join(self._serving_column_names)}")
        return {c: features[c] for c in self._serving_column_names}

    # ------------------------------------------------------------------------------------------
    # Keras training hooks
    def compute_training_loss(self, features: Mapping[str, tf.Tensor], training: bool = True
                              ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(loss, labels, training probabilities) of a batch of parsed columns; the last two
        of the primary task (:attr:`cvr_tf.tasks.TaskSet.primary`) in a multi-task model."""
        spec = self.spec
        weights = tf.cast(features[spec.weight], tf.float32) if spec.weight else None
        logits = self.training_logits(features, training=training)
        if self.task_set is not None:
            loss, labels, probabilities = self._task_loss(features, logits, weights)
        else:
            labels = tf.cast(features[spec.label], tf.float32)
            probabilities = tf.sigmoid(logits)
            if self.fake_negative_weighting:
                loss = losses_lib.fake_negative_weighted_logloss(
                    labels, *log_probabilities(logits), weights)
            else:
                loss = self._loss_fn(labels, logits, group_ids=features[spec.group_key],
                                     weights=weights)
        if self.losses:
            loss = loss + tf.add_n(self.losses)
        return loss, labels, probabilities

    def _task_loss(self, features: Mapping[str, tf.Tensor], logits: Mapping[str, tf.Tensor],
                   weights: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """``sum_t w_t L_t`` over the trained tasks (:mod:`cvr_tf.tasks`), and the primary
        task's labels and probabilities."""
        task_set = self.task_set
        labels = {role: tf.cast(features[column], tf.float32)
                  for role, column in self.task_labels.items()}
        loss_fn = (losses_lib.fake_negative_weighted_logloss if self.fake_negative_weighting
                   else losses_lib.log_probability_logloss)
        losses = []
        targets = task_set.training_targets(labels["click"], labels.get("conversion"))
        for task, (task_labels, mask) in targets.items():
            rows = mask if weights is None else (weights if mask is None else weights * mask)
            losses.append(task_set.loss_weight(task) * loss_fn(
                task_labels, *task_set.log_probabilities(logits, task), rows))
        primary = task_set.primary
        _, primary_labels, _ = task_set.evaluation_targets(
            labels["click"], labels.get("conversion"))[primary]
        return tf.add_n(losses), primary_labels, tf.exp(
            task_set.log_probabilities(logits, primary)[0])

    def compile(self, optimizer: Any = "adam",
                embedding_optimizer: keras.optimizers.Optimizer | None = None,
                embedding_l2: float = 0.0, fake_negative_weighting: bool = False,
                **kwargs: Any) -> None:
        """Keras ``compile``, plus the tables' own optimizer and their L2 penalty.

        Args:
          optimizer: updates the dense variables (and the tables without
            ``embedding_optimizer``).
          embedding_optimizer: updates the embedding tables (:attr:`embedding_variables`).
          embedding_l2: ``lambda`` of :func:`cvr_tf.optimization.embedding_l2_penalty`.
          fake_negative_weighting: train every task with
            :func:`cvr_tf.losses.fake_negative_weighted_logloss` (``--delayed_feedback``;
            pointwise log loss only).
          **kwargs: the rest of Keras ``compile``'s arguments.
        """
        if fake_negative_weighting and self.config.loss != "logloss":
            raise ValueError("fake negative weighting replaces --loss=logloss; it has no "
                             f"form for --loss={self.config.loss}")
        super().compile(optimizer=optimizer, **kwargs)
        self.embedding_optimizer = embedding_optimizer
        self.embedding_l2 = float(embedding_l2)
        self.fake_negative_weighting = bool(fake_negative_weighting)

    @property
    def embedding_variables(self) -> list[tf.Variable]:
        """The embedding tables: every trainable variable of the embedding layers."""
        layers = [self.embedding_part, self._bias_embedding]
        return [v for layer in layers if layer is not None for v in layer.trainable_variables]

    @property
    def dense_variables(self) -> list[tf.Variable]:
        """Every trainable variable that is not an embedding table."""
        tables = {id(v) for v in self.embedding_variables}
        return [v for v in self.trainable_variables if id(v) not in tables]

    def train_step(self, data: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        tables, dense = self.embedding_variables, self.dense_variables
        with tf.GradientTape() as tape:
            loss, labels, probabilities = self.compute_training_loss(data, training=True)
            # Gradients are summed over replicas: scale each replica's mean loss accordingly.
            replica_loss = loss / replicas
        gradients = tape.gradient(replica_loss, tables + dense)
        table_gradients, dense_gradients = gradients[:len(tables)], gradients[len(tables):]
        if self.embedding_l2:
            global_batch = tf.shape(labels)[0] * replicas
            table_gradients, penalty = embedding_l2_penalty(
                table_gradients, tables, self.embedding_l2, global_batch)
            replica_loss += penalty
        if self.embedding_optimizer is None:
            self.optimizer.apply_gradients(zip(table_gradients + dense_gradients,
                                               tables + dense, strict=True))
        else:
            self.embedding_optimizer.apply_gradients(zip(table_gradients, tables, strict=True))
            self.optimizer.apply_gradients(zip(dense_gradients, dense, strict=True))
        loss = replica_loss
        if replicas > 1:  # log the global batch's loss
            loss = tf.distribute.get_replica_context().all_reduce("SUM", replica_loss)
        return self._update_metrics(loss, labels, probabilities)

    def test_step(self, data: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        loss, labels, probabilities = self.compute_training_loss(data, training=False)
        return self._update_metrics(loss, labels, probabilities)

    def _update_metrics(self, loss: tf.Tensor, labels: tf.Tensor, probabilities: tf.Tensor
                        ) -> dict[str, tf.Tensor]:
        self.compiled_metrics.update_state(labels, probabilities)
        results = {m.name: m.result() for m in self.metrics}
        results["loss"] = loss
        return results

    # ------------------------------------------------------------------------------------------
    # Accounting and serialization
    @property
    def dense_flops_per_example(self) -> int:
        """Forward FLOPs of ``dense_part`` per example (2 per MAC): backbone + logit head, or
        for a multi-task model experts, gates, towers and logit heads."""
        return self._dense_cost.flops

    @property
    def dense_parameter_count(self) -> int:
        return self.dense_part.count_params()

    @property
    def embedding_parameter_count(self) -> int:
        return self.embedding_part.count_params()

    def get_config(self) -> dict[str, Any]:
        return {"spec_config": self.spec.to_dict(), "vocabularies": self.vocabularies,
                "config": dataclasses.asdict(self.config), "name": self.name}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], custom_objects: Any = None) -> CVRModel:
        return cls(**config)


def build_model(spec: FeatureSpec, vocabularies: Mapping[str, Sequence[str]],
                config: ModelConfig = ModelConfig()) -> CVRModel:
    """A :class:`CVRModel` for ``spec`` scaled by ``config``'s embedding knobs.

    Args:
      spec: the unscaled feature spec.
      vocabularies: table -> tokens, most frequent first (e.g. from
        :func:`cvr_tf.vocabulary.window_vocabularies`); cut here to the scaled caps.
      config: backbone, scales, loss, debiasing.
    """
    scaled = spec.scaled(embedding_dim_scale=config.embedding_dim_scale,
                         vocab_scale=config.vocab_scale)
    return CVRModel(spec_config=scaled.to_dict(),
                    vocabularies=scaled.cut_vocabularies(vocabularies),
                    config=dataclasses.asdict(config), name="cvr_model")
