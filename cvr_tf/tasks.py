"""Multi-task models: which probabilities a model predicts, from which labels, with which losses.

``--tasks`` (``ModelConfig.tasks``) names the tasks; empty (the default) is today's one-output
conversion model on the spec's ``label``. With ``y`` the click label and ``z`` the conversion
label of an impression (``click_label``/``conversion_label`` below):

``ctr``
    pCTR = P(click | impression), its own tower; label ``y``, loss over every impression.
``ctcvr``
    pCTCVR = pCTR x pCVR (ESMM), needs ``ctr``; label ``y z``, loss over every impression.
``cvr``
    pCVR = P(conversion | click, impression), its own tower; label ``z``. Beside ``ctcvr`` it
    has no loss of its own (ESMM learns it through the product); without ``ctcvr`` its loss
    is over the clicked impressions only (the click-space CVR model, biased by their
    selection).

So ``--tasks=ctr,ctcvr`` is ESMM (Ma et al., SIGIR 2018; it outputs ``ctr``, ``cvr`` and
``ctcvr``), ``--tasks=cvr`` a click-space pCVR model and ``--tasks=ctr,cvr`` two towers
trained apart on their own spaces. The loss is ``sum_t w_t L_t`` over the trained tasks, each
``L_t`` the (weighted) mean log loss over its impressions
(:func:`cvr_tf.losses.log_probability_logloss`), from log-probabilities that never round to 0
or 1 (:mod:`cvr_tf.layers.esmm`).

Evaluation (:mod:`cvr_tf.evaluation`): every output on its label over all impressions, and
pCVR again on the clicked impressions only (``cvr_on_clicks``); pCVR's label is ``z`` in both.

**Structure** (the ``tasks`` section of ``--backbone_config``, :class:`TaskOptions`). The towers
(``ctr``, ``cvr``; ``ctcvr`` has none) each put an MLP and a logit on their own input, which
comes from experts that are instances of the chosen backbone at its scale and options:

* ``shared_bottom``: one backbone, read by every tower;
* ``mmoe``: ``experts`` backbones (default 4), mixed for each tower by its own softmax gate
  (:class:`cvr_tf.layers.mmoe.MultiGateMixture`);
* ``ple``: PLE's customized gate control (one extraction level): ``experts`` shared backbones
  (default 2) and ``task_experts`` per tower (default 1); a tower's gate mixes its own and the
  shared ones.

So the dense FLOPs grow with the experts: ``mmoe`` with 4 experts costs about four backbones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from cvr_tf.backbones.options import OptionError, option, parse_options
from cvr_tf.compat import keras, tf
from cvr_tf.flops import Cost, dense_cost
from cvr_tf.layers.esmm import CTCVR, CTR, CVR, log_probabilities, product_log_probabilities
from cvr_tf.layers.mlp import MLP
from cvr_tf.layers.mmoe import MultiGateMixture

TASKS = (CTR, CVR, CTCVR)
CVR_ON_CLICKS = "cvr_on_clicks"
"""The evaluation of pCVR on the clicked impressions only."""
TASKS_KEY = "tasks"
"""The section of ``--backbone_config`` holding :class:`TaskOptions`."""
EXPERTS = "experts"
"""The name of the dense part's :class:`~cvr_tf.layers.mmoe.MultiGateMixture` layer."""
STRUCTURES = ("shared_bottom", "mmoe", "ple")
DEFAULT_TOWER = (64,)
_DEFAULT_EXPERTS = {"mmoe": 4, "ple": 2}


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """The ``tasks`` section of ``--backbone_config`` (see the module docstring).

    Attributes:
        structure: ``shared_bottom``, ``mmoe`` or ``ple``.
        experts: ``mmoe``: the experts every gate mixes (default 4); ``ple``: the shared
            experts (default 2).
        task_experts: ``ple`` only: each tower's own experts (default 1).
        towers: tower (``ctr``, ``cvr``) -> its MLP widths before the logit (default [64]; an
            empty list puts the logit on the tower's input).
        loss_weights: trained task -> its weight ``w_t`` in the loss (default 1).
        click_label: the spec's click label.
        conversion_label: the spec's conversion label (default: the spec's ``label``).
    """

    structure: str = option("shared_bottom", choices=STRUCTURES)
    experts: int | None = option(None, minimum=1)
    task_experts: int | None = option(None, minimum=1)
    towers: dict | None = option(None)
    loss_weights: dict | None = option(None)
    click_label: str = option("clicked")
    conversion_label: str | None = option(None)

    def __post_init__(self) -> None:
        if self.structure == "shared_bottom" and self.experts is not None:
            raise OptionError("experts", "only structure mmoe or ple has experts to set")
        if self.structure != "ple" and self.task_experts is not None:
            raise OptionError("task_experts", "only structure ple has experts per task")


def split_options(backbone_config: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """(the backbone's own options, the raw ``tasks`` section or None) of ``--backbone_config``."""
    options = dict(backbone_config or {})
    return options, options.pop(TASKS_KEY, None)


@dataclasses.dataclass(frozen=True)
class TaskSet:
    """The tasks of a multi-task model (:func:`parse_tasks`) and everything derived from them.

    Attributes:
        tasks: the ``--tasks`` names, in the order given.
        options: the ``tasks`` section of ``--backbone_config``.
    """

    tasks: tuple[str, ...]
    options: TaskOptions = TaskOptions()

    @property
    def towers(self) -> tuple[str, ...]:
        """The towers, each an MLP and a logit: ``ctr`` and ``cvr`` as the tasks need them."""
        needs_cvr = CVR in self.tasks or CTCVR in self.tasks
        return tuple(t for t in (CTR, CVR) if t in self.tasks or (t == CVR and needs_cvr))

    @property
    def outputs(self) -> tuple[str, ...]:
        """The probabilities the model returns by name: the towers' and ``ctcvr``."""
        return self.towers + ((CTCVR,) if CTCVR in self.tasks else ())

    @property
    def trained(self) -> tuple[str, ...]:
        """The tasks with a loss: every one named, except ``cvr`` beside ``ctcvr`` (ESMM)."""
        return tuple(t for t in self.outputs
                     if t in self.tasks and not (t == CVR and CTCVR in self.tasks))

    @property
    def evaluated(self) -> tuple[str, ...]:
        """The evaluations: every output, and ``cvr_on_clicks`` when pCVR is an output."""
        return self.outputs + ((CVR_ON_CLICKS,) if CVR in self.outputs else ())

    @property
    def primary(self) -> str:
        """The default task of validation and early stopping: the last one of ``--tasks``."""
        return self.tasks[-1]

    @property
    def bias_tower(self) -> str:
        """The tower whose logit the position-bias logit joins in training: the click tower
        (position changes what is examined, hence clicked), else the conversion tower."""
        return self.towers[0]

    def loss_weight(self, task: str) -> float:
        return float((self.options.loss_weights or {}).get(task, 1.0))

    def tower_widths(self, tower: str) -> tuple[int, ...]:
        return tuple((self.options.towers or {}).get(tower, DEFAULT_TOWER))

    def label_columns(self, label_names: Sequence[str], default_conversion: str
                      ) -> dict[str, str]:
        """``{"click": column, "conversion": column}`` of the labels the tasks read.

        Raises:
          ValueError: a label the tasks need is not a label of the spec.
        """
        columns = {"click": self.options.click_label}
        if CVR in self.outputs:
            columns["conversion"] = self.options.conversion_label or default_conversion
        for role, column in columns.items():
            if column not in label_names:
                raise ValueError(
                    f"--tasks={','.join(self.tasks)} needs the {role} label {column!r}, which is "
                    f"not a label of the spans ({', '.join(label_names)}); name it in "
                    f"backbone_config.{TASKS_KEY}.{role}_label or rebuild the spans with a spec "
                    "whose \"labels\" have it")
        return columns

    # ----------------------------------------------------------------------------------------
    # Structure
    def gates(self) -> tuple[int, dict[str, list[int]]]:
        """(number of experts, tower -> indices of the experts its gate mixes)."""
        structure = self.options.structure
        if structure == "shared_bottom":
            return 1, {tower: [0] for tower in self.towers}
        shared = self.options.experts or _DEFAULT_EXPERTS[structure]
        if structure == "mmoe":
            return shared, {tower: list(range(shared)) for tower in self.towers}
        own = self.options.task_experts or 1
        return shared + own * len(self.towers), {
            tower: [shared + own * i + k for k in range(own)] + list(range(shared))
            for i, tower in enumerate(self.towers)}

    def build_logits(self, embeddings: Any, experts: Sequence[keras.layers.Layer],
                     input_dim: int, dropout: float | None) -> tuple[dict[str, Any], Cost]:
        """Tower logits ``[batch]`` by tower on the Keras tensor ``embeddings`` and their cost.

        Args:
          embeddings: the dense part's input ``[batch, input_dim]``.
          experts: ``gates()[0]`` unbuilt backbone layers, each with ``cost(input_dim)``.
          input_dim: the embeddings' width.
          dropout: dropout of the tower MLPs in training (None: none).
        """
        count, gates = self.gates()
        if len(experts) != count:
            raise ValueError(f"structure {self.options.structure} needs {count} experts, got "
                             f"{len(experts)}")
        mixture = MultiGateMixture(experts, gates, name=EXPERTS)
        inputs = mixture(embeddings)
        width = int(experts[0].compute_output_shape((None, input_dim))[-1])
        cost = mixture.cost(input_dim)
        logits = {}
        for tower in self.towers:
            hidden, widths = inputs[tower], self.tower_widths(tower)
            if widths:
                mlp = MLP(widths, dropout=dropout or 0.0, name=f"{tower}_tower")
                hidden, cost = mlp(hidden), cost + mlp.cost(width)
            cost += dense_cost(widths[-1] if widths else width, 1)
            logit = keras.layers.Dense(1, name=f"{tower}_logit")(hidden)
            logits[tower] = keras.layers.Reshape((), name=f"{tower}_logit_flat")(logit)
        return logits, cost

    # ----------------------------------------------------------------------------------------
    # Targets and losses
    def training_targets(self, click: Any, conversion: Any | None) -> dict[str, tuple[Any, Any]]:
        """Trained task -> (labels, row mask or None); tensors or arrays of 0/1 floats."""
        targets = {CTR: (click, None)}
        if conversion is not None:
            targets[CTCVR] = (click * conversion, None)
            targets[CVR] = (conversion, click)  # trained alone: the clicked impressions only
        return {task: targets[task] for task in self.trained}

    def evaluation_targets(self, click: Any, conversion: Any | None
                           ) -> dict[str, tuple[str, Any, Any]]:
        """Evaluation -> (output it reads, labels, row mask or None)."""
        targets = {CTR: (CTR, click, None)}
        if conversion is not None:
            targets.update({CVR: (CVR, conversion, None), CTCVR: (CTCVR, click * conversion, None),
                            CVR_ON_CLICKS: (CVR, conversion, click)})
        return {name: targets[name] for name in self.evaluated}

    def log_probabilities(self, logits: Mapping[str, tf.Tensor], task: str
                          ) -> tuple[tf.Tensor, tf.Tensor]:
        """``(log p, log(1 - p))`` of a task's probability from the tower logits."""
        if task == CTCVR:
            return product_log_probabilities(logits[CTR], logits[CVR])
        return log_probabilities(logits[task])


def parse_tasks(tasks: str, backbone_config: Mapping[str, Any] | None = None) -> TaskSet | None:
    """The :class:`TaskSet` of ``--tasks`` and the ``tasks`` section of ``--backbone_config``;
    None for empty ``--tasks`` (a single-task model).

    Raises:
      ValueError: one line naming the flag or the option key path and the fix.
    """
    _, raw = split_options(backbone_config or {})
    names = [name.strip() for name in (tasks or "").split(",") if name.strip()]
    if not names:
        if raw is not None:
            raise ValueError(f"backbone_config.{TASKS_KEY} configures multi-task heads but "
                             "--tasks is empty; name the tasks (e.g. --tasks=ctr,ctcvr) or drop "
                             "the section")
        return None
    unknown = [name for name in names if name not in TASKS]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"--tasks={tasks}: name each of {', '.join(TASKS)} at most once, "
                         f"comma-separated (e.g. ctr,ctcvr)")
    if CTCVR in names and CTR not in names:
        raise ValueError(f"--tasks={tasks}: ctcvr is pCTR x pCVR (ESMM) and needs ctr; use "
                         "--tasks=ctr,ctcvr")
    task_set = TaskSet(tuple(names), parse_options(TaskOptions, raw or {},
                                                   f"backbone_config.{TASKS_KEY}"))
    _check_names(task_set.options.towers, task_set.towers, "towers")
    _check_names(task_set.options.loss_weights, task_set.trained, "loss_weights")
    for tower, widths in (task_set.options.towers or {}).items():
        if not isinstance(widths, list) or not all(
                isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
            raise ValueError(f"backbone_config.{TASKS_KEY}.towers.{tower}: expected a list of "
                             f"positive widths, got {widths!r}")
    for task, weight in (task_set.options.loss_weights or {}).items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ValueError(f"backbone_config.{TASKS_KEY}.loss_weights.{task}: expected a "
                             f"number >= 0, got {weight!r}")
    return task_set


def _check_names(mapping: Mapping[str, Any] | None, allowed: Sequence[str], key: str) -> None:
    for name in mapping or {}:
        if name not in allowed:
            raise ValueError(f"backbone_config.{TASKS_KEY}.{key}: {name!r} is not one of "
                             f"{', '.join(allowed)} (of these --tasks)")


__all__ = ["CVR_ON_CLICKS", "DEFAULT_TOWER", "EXPERTS", "STRUCTURES", "TASKS", "TASKS_KEY",
           "TaskOptions", "TaskSet", "parse_tasks", "split_options"]
