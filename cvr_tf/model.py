"""The CVR model: ``probability = dense_part(embedding_part(features))``.

The boundary between the two parts is the serving split (docs/ARCHITECTURE.md §5, §7):

* ``embedding_part``: raw serving columns -> ``[batch, D]`` (lookups and table gathers, CPU);
* ``dense_part``: ``[batch, D]`` -> conversion probability ``[batch]`` (backbone + logit head,
  GPU when present). It holds no embedding table, and ``embedding_part`` holds no dense weight.

Position debiasing. Features the spec marks ``train_only`` (the simulator's ``position``) feed a
shallow bias tower, a linear layer on their own embeddings, whose logit is added in training only:

    train logit  = s(x) + b(position)        (the label is explained by relevance + examination)
    served score = sigmoid(s(x))             (items ranked as if shown at the same position)

so the served model never reads the position, and the relevance tower is not credited with what
the position explains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from cvr_tf import losses as losses_lib
from cvr_tf.backbones import Backbone, build_backbone, json_form, read_options_file
from cvr_tf.compat import keras, register_keras_serializable, tf
from cvr_tf.embedding import FeatureEmbedding
from cvr_tf.features import FeatureSpec, spec_from_dict
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

    def __post_init__(self) -> None:
        # JSON's form, so the config equals the one model_config.json gives back on resume.
        object.__setattr__(self, "backbone_config", json_form(self.backbone_config))


@register_keras_serializable(package="cvr_tf")
class CVRModel(keras.Model):
    """Embedding part, dense part, and a training-only position-bias tower.

    Build it with :func:`build_model`. ``model(features)`` returns served probabilities
    ``[batch]`` (no bias); :meth:`training_logits` adds the bias-tower logit. ``fit`` trains on
    dicts of parsed columns as :func:`cvr_tf.input.make_dataset` yields them.

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
        spec = self.spec

        serving_inputs = spec.keras_inputs()
        self._serving_column_names = list(serving_inputs)
        embedding = FeatureEmbedding.from_spec(spec, self.vocabularies)
        self.embedding_part = keras.Model(serving_inputs, embedding(serving_inputs),
                                          name="embedding_part")

        self.backbone: Backbone = build_backbone(
            self.config.backbone, input_dim=embedding.output_dim,
            field_dims=spec.field_dims(), scale=self.config.backbone_scale,
            options=self.config.backbone_config, dropout=self.config.dropout)
        embeddings = keras.Input(shape=(embedding.output_dim,), name="embeddings")
        hidden = self.backbone.layer(embeddings)
        logits = keras.layers.Reshape((), name="logit")(
            keras.layers.Dense(1, name="logit_head")(hidden))
        self.dense_logits = keras.Model(embeddings, logits, name="dense_logits")
        self.dense_part = keras.Model(
            embeddings, keras.layers.Activation("sigmoid", name="probabilities")(logits),
            name="dense_part")

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
    def call(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Served probabilities ``[batch]``: no bias tower, whatever ``training`` is."""
        return self.dense_part(self.embedding_part(self._serving_columns(features),
                                                   training=training), training=training)

    def training_logits(self, features: Mapping[str, tf.Tensor], training: bool = True
                        ) -> tf.Tensor:
        """Relevance logit plus, when debiasing, the bias tower's logit."""
        logits = self.dense_logits(self.embedding_part(self._serving_columns(features),
                                                       training=training), training=training)
        if self.bias_tower is not None:
            bias_features = {c: features[c] for c in self._bias_column_names}
            logits = logits + self.bias_tower(bias_features, training=training)
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
        """(loss, labels, logits) of a batch of parsed columns."""
        spec = self.spec
        labels = tf.cast(features[spec.label], tf.float32)
        weights = tf.cast(features[spec.weight], tf.float32) if spec.weight else None
        logits = self.training_logits(features, training=training)
        loss = self._loss_fn(labels, logits, group_ids=features[spec.group_key], weights=weights)
        if self.losses:
            loss = loss + tf.add_n(self.losses)
        return loss, labels, logits

    def compile(self, optimizer: Any = "adam",
                embedding_optimizer: keras.optimizers.Optimizer | None = None,
                embedding_l2: float = 0.0, **kwargs: Any) -> None:
        """Keras ``compile``, plus the tables' own optimizer and their L2 penalty.

        Args:
          optimizer: updates the dense variables (and the tables without
            ``embedding_optimizer``).
          embedding_optimizer: updates the embedding tables (:attr:`embedding_variables`).
          embedding_l2: ``lambda`` of :func:`cvr_tf.optimization.embedding_l2_penalty`.
          **kwargs: the rest of Keras ``compile``'s arguments.
        """
        super().compile(optimizer=optimizer, **kwargs)
        self.embedding_optimizer = embedding_optimizer
        self.embedding_l2 = float(embedding_l2)

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
            loss, labels, logits = self.compute_training_loss(data, training=True)
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
        return self._update_metrics(loss, labels, logits)

    def test_step(self, data: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        loss, labels, logits = self.compute_training_loss(data, training=False)
        return self._update_metrics(loss, labels, logits)

    def _update_metrics(self, loss: tf.Tensor, labels: tf.Tensor, logits: tf.Tensor
                        ) -> dict[str, tf.Tensor]:
        self.compiled_metrics.update_state(labels, tf.sigmoid(logits))
        results = {m.name: m.result() for m in self.metrics}
        results["loss"] = loss
        return results

    # ------------------------------------------------------------------------------------------
    # Accounting and serialization
    @property
    def dense_flops_per_example(self) -> int:
        """Forward FLOPs of ``dense_part`` per example: backbone + logit head (2 per MAC)."""
        return self.backbone.flops_per_example + 2 * self.backbone.output_dim

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
