"""The one table of metrics and of the models they need.

A metric class registers itself with :func:`register_metric` (in its own module); a model loader
registers itself with :func:`register_model` (next to the loader). Everything else is derived from
these two tables: the metric names and aliases, which inputs and models a metric needs, the
loaders of :class:`~recapture.metrics.collection.MetricModels`, the builders of
:class:`~recapture.metrics.collection.MetricSet` and the ``--metrics`` help of ``recapture evaluate``.

This module imports nothing from the metric modules (they import it), so it can be imported first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from recapture.utils import RecaptureError

if TYPE_CHECKING:
    from recapture.metrics.backbones import MetricWeights

# what ``MetricSet.update`` hands to a metric's ``update``, by name (``pred`` is always there)
INPUTS = ("pred", "target", "mask", "fps", "pred_c2w", "target_c2w")


@dataclass(frozen=True)
class ModelSpec:
    """A model some metrics need, loaded once per :class:`MetricModels`.

    Args:
        key: the name metrics refer to it by (and ``MetricModels(**prebuilt)`` accepts).
        load: ``MetricWeights -> model``.
        fields: the ``MetricWeights`` fields ``load`` reads (``device`` aside).
    """

    key: str
    load: Callable[[MetricWeights], Any]
    fields: tuple[str, ...]


@dataclass(frozen=True)
class MetricSpec:
    """A metric class and how a :class:`MetricSet` builds and feeds it.

    Args:
        outputs: the names it produces (one, or several when ``compute`` returns a dict).
        cls: the ``torchmetrics.Metric`` class.
        model: the :class:`ModelSpec` key passed as the first constructor argument (None: no model).
        inputs: what ``update`` takes, in order, from :data:`INPUTS`.
        options: constructor keyword -> ``MetricSet`` option (``fps``, ``object_class``).
        aliases: names that request it together with others (``vbench``, ``camera``).
        masked: the name of its masked variant, if it has one.
    """

    outputs: tuple[str, ...]
    cls: type
    model: str | None = None
    inputs: tuple[str, ...] = ("pred",)
    options: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    masked: str | None = None

    def build(self, get_model: Callable[[str], Any], options: Mapping[str, Any]) -> Any:
        """A fresh metric: its model from ``get_model`` and its options from ``options``."""
        args = () if self.model is None else (get_model(self.model),)
        return self.cls(*args, **{kw: options[opt] for kw, opt in self.options.items()})


METRICS: list[MetricSpec] = []
MODELS: dict[str, ModelSpec] = {}

T = TypeVar("T", bound=type)


def register_metric(
    *outputs: str,
    model: str | None = None,
    inputs: tuple[str, ...] = ("pred",),
    options: Mapping[str, str] | None = None,
    aliases: tuple[str, ...] = (),
    masked: bool = False,
) -> Callable[[T], T]:
    """Class decorator: add a metric (and, with ``masked``, its ``<name>_masked`` variant) to the table.

    Args:
        *outputs: the name(s) it produces, as users request them.
        model: key of the model it needs (see :func:`register_model`).
        inputs: what its ``update`` takes, in order (see :data:`INPUTS`).
        options: constructor keyword -> ``MetricSet`` option, e.g. ``{"fps": "fps"}``.
        aliases: group names that include it.
        masked: also register ``<name>_masked``: the same class, updated with the mask as well.
    """
    bad = set(inputs) - set(INPUTS)
    if bad or not outputs:
        raise ValueError(f"register_metric{outputs}: unknown inputs {sorted(bad)} or no name")

    def add(cls: T) -> T:
        variant = f"{outputs[0]}_masked" if masked else None
        specs = [MetricSpec(outputs, cls, model, inputs, dict(options or {}), aliases, variant)]
        if variant is not None:
            specs.append(MetricSpec((variant,), cls, model, (*inputs, "mask"), dict(options or {})))
        for spec in specs:
            taken = set(spec.outputs) & set(metric_names())
            if taken:
                raise ValueError(f"metric name(s) {sorted(taken)} registered twice")
            METRICS.append(spec)
        return cls

    return add


Loader = Callable[["MetricWeights"], Any]


def register_model(key: str, *fields: str) -> Callable[[Loader], Loader]:
    """Function decorator: ``load(weights) -> model`` becomes the loader of model ``key``.

    Args:
        key: the model's name (what :func:`register_metric`'s ``model`` refers to).
        *fields: the ``MetricWeights`` fields the loader reads (``device`` aside).
    """

    def add(load: Loader) -> Loader:
        if key in MODELS:
            raise ValueError(f"metric model {key!r} registered twice")
        MODELS[key] = ModelSpec(key, load, fields)
        return load

    return add


def _rank(spec: MetricSpec) -> int:
    if "pred_c2w" in spec.inputs:
        return 3
    if "target" not in spec.inputs:
        return 2
    return 1 if "mask" in spec.inputs else 0


def _listed() -> list[MetricSpec]:
    """The specs by what they compare (with a target, with a target under a mask, the prediction
    alone, camera poses), in registration order within each kind."""
    return sorted(METRICS, key=_rank)


def metric_names() -> tuple[str, ...]:
    """Every name a metric produces (see :func:`_listed` for the order)."""
    return tuple(n for spec in _listed() for n in spec.outputs)


def aliases() -> dict[str, tuple[str, ...]]:
    """Alias -> the names it stands for, in the order of :func:`metric_names`."""
    out: dict[str, tuple[str, ...]] = {}
    for spec in _listed():
        for alias in spec.aliases:
            out[alias] = out.get(alias, ()) + spec.outputs
    return out


def spec_of(name: str) -> MetricSpec:
    """The spec producing metric ``name`` (a name from :func:`metric_names`)."""
    for spec in METRICS:
        if name in spec.outputs:
            return spec
    raise RecaptureError(f"unknown metric {name!r}; valid names: {', '.join(metric_names())}")


def model_spec(key: str) -> ModelSpec:
    """The spec of model ``key``."""
    if key not in MODELS:
        raise RecaptureError(f"unknown metric model(s) [{key!r}]; known: {list(MODELS)}")
    return MODELS[key]


def describe() -> str:
    """The valid names and aliases, for help texts."""
    groups = "; ".join(f"{a} ({', '.join(names)})" for a, names in aliases().items())
    return f"{', '.join(metric_names())}; aliases: {groups}"
