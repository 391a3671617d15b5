"""RunConfig: the validated experiment description shared by the CLI, the API, the UI and the worker."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictInt,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from app.limits.bounds import Text


def _not_a_flag(value: object) -> object:
    """true/false is not a number; text stays accepted, since YAML reads 1e-3 (no dot) as text."""
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "Input should be a number, not true or false")
    return value


Number = Annotated[float, BeforeValidator(_not_a_flag)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _invalid(model: str, loc: tuple[str | int, ...], message: str, given: object) -> ValidationError:
    """A cross-field error placed on the field it concerns, so the API's 422 and the form both name that field.

    ``given`` is the object the message describes (an event, a source): its values are in the message already.
    """
    error = PydanticCustomError("value_error", message.replace("{", "{{").replace("}", "}}"))
    return ValidationError.from_exception_data(model, [InitErrorDetails(type=error, loc=loc, input=given)])


_CSV_ONLY = ("image_column", "label_column", "positive", "negative", "split_column")
_Label = Annotated[Text, Field(min_length=1, max_length=100)]


class DataSource(_Strict):
    """Where images come from; every source yields grayscale images in [0, 1]."""

    format: Literal["image-folder", "csv", "npz", "synthetic"]
    path: str | None = Field(None, description="image-folder root, CSV label table or .npz file; not for synthetic")
    split: str | None = Field(
        None,
        max_length=100,
        description=(
            "image-folder: sub-folder; csv: value of split_column; npz: MedMNIST key prefix. "
            "Default: train for data.train, test for data.test"
        ),
    )
    samples: StrictInt = Field(600, ge=20, le=100_000, description="synthetic only: number of images")
    positive_fraction: Number = Field(0.5, gt=0, lt=1, description="synthetic only: share of PNEUMONIA images")
    image_column: Text = Field("path", min_length=1, max_length=100, description="csv only: image path column")
    label_column: Text = Field("label", min_length=1, max_length=100, description="csv only: label column")
    positive: list[_Label] = Field(
        ["PNEUMONIA", "1"], min_length=1, max_length=50, description="csv only: labels meaning PNEUMONIA"
    )
    negative: list[_Label] = Field(
        ["NORMAL", "0"], min_length=1, max_length=50, description="csv only: labels meaning NORMAL"
    )
    split_column: str | None = Field(
        None, min_length=1, max_length=100, description="csv only: column that names each row's split"
    )

    @model_validator(mode="after")
    def _fields_fit_format(self) -> Self:
        dump = self.model_dump()
        if self.format != "synthetic" and not self.path:
            wanted = "a .csv label table" if self.format == "csv" else "a folder or an .npz file"
            message = f"format {self.format!r} needs a path ({wanted})"
            raise _invalid("DataSource", ("path",), message, dump)
        if self.format != "csv":
            for name in _CSV_ONLY:  # compared with the default: a stored config holds every field
                if getattr(self, name) != type(self).model_fields[name].default:
                    raise _invalid("DataSource", (name,), f"{name} applies to format 'csv' only", dump)
            return self
        both = sorted(set(self.positive) & set(self.negative))
        if both:
            raise _invalid("DataSource", ("positive",), f"label(s) {both} are both positive and negative", dump)
        if self.split and not self.split_column:
            message = "a csv source selects a split through split_column; give split_column or omit split"
            raise _invalid("DataSource", ("split",), message, dump)
        return self

    @model_serializer(mode="wrap")
    def _without_csv_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Stored configs and previews of other formats do not carry the csv-only defaults."""
        dumped: dict[str, Any] = handler(self)
        if self.format != "csv":
            for name in _CSV_ONLY:
                dumped.pop(name, None)
        return dumped


class DataConfig(_Strict):
    train: DataSource = DataSource(format="synthetic")
    test: DataSource | None = Field(
        None, description="the common test set (split test by default); omit to hold out test_fraction of train"
    )
    test_fraction: Number = Field(0.2, gt=0, lt=1)
    image_size: StrictInt = Field(150, ge=16, le=512, description="images are resized to image_size x image_size")


class ModelConfig(_Strict):
    optimizer: Literal["rmsprop", "adam", "sgd"] = "rmsprop"
    learning_rate: Number = Field(0.001, gt=0, le=1)
    batch_size: StrictInt = Field(32, ge=1, le=1024)
    batchnorm: Literal["federated", "local", "keras"] = Field(
        "federated",
        description=(
            "how BatchNorm moving statistics are set: federated (recomputed for the global model from the "
            "clients' data each round), local (recomputed by each client for its own update), keras (as trained)"
        ),
    )
    calibration_samples: StrictInt = Field(512, ge=32, le=100_000, description="images per client used for BatchNorm")
    class_weight: Literal["balanced", "none"] = Field(
        "balanced",
        description="balanced: weight each class's loss by n / (2 n_class) from the clients' summed label counts",
    )
    augmentation: StrictBool = Field(
        True, description="random rotation (5 degrees), shift (5%) and zoom (10%) while training; no flips"
    )
    normalization: Literal["batchnorm", "groupnorm"] = Field(
        "batchnorm",
        description="the study's BatchNorm, or GroupNorm (no batch statistics; what differential privacy needs)",
    )


class IidPartition(_Strict):
    kind: Literal["iid"] = "iid"


class SizesPartition(_Strict):
    kind: Literal["sizes"]
    fractions: list[Annotated[Number, Field(gt=0, le=1)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> Self:
        if abs(sum(self.fractions) - 1.0) > 1e-6:
            message = f"fractions must add up to 1, they add up to {sum(self.fractions):g}"
            raise _invalid("SizesPartition", ("fractions",), message, self.fractions)
        return self


class DirichletPartition(_Strict):
    kind: Literal["dirichlet"]
    alpha: Number = Field(gt=0, le=1000, description="smaller alpha = stronger label skew")


Partition = Annotated[IidPartition | SizesPartition | DirichletPartition, Field(discriminator="kind")]


class ClientEvent(_Strict):
    """One client joining (first round it trains) or leaving (first round it is gone)."""

    client: StrictInt = Field(ge=1, le=100)
    joins: StrictInt | None = Field(None, ge=1, le=1000)
    leaves: StrictInt | None = Field(None, ge=2, le=1000)

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.joins is None) == (self.leaves is None):
            raise ValueError("an event has exactly one of joins or leaves")
        return self


class IntermittentConfig(_Strict):
    approach: Literal["drop", "keep-last"] = Field(
        "drop", description="drop: a client that left no longer counts; keep-last: its last weights keep counting"
    )
    events: list[ClientEvent] = []
    availability: Number = Field(1.0, gt=0, le=1, description="chance that a present client answers in a round")


NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class SiteRef(_Strict):
    """One hospital site of a real federation and the dataset it trains on (declared by its agent)."""

    site: str = Field(pattern=NAME, description="the site's name in the Sites page")
    dataset: str = Field(pattern=NAME, description="one of the datasets the site's agent declares")


class FederationConfig(_Strict):
    clients: StrictInt = Field(3, ge=1, le=100)
    rounds: StrictInt = Field(10, ge=1, le=1000)
    local_epochs: StrictInt = Field(1, ge=1, le=100)
    partition: Partition = IidPartition()
    client_test_fraction: Number = Field(0.25, ge=0, lt=1)
    client_validation_fraction: Number = Field(
        0.1, ge=0, lt=1, description="share of each client's training part that chooses the operating threshold"
    )
    intermittent: IntermittentConfig = IntermittentConfig()
    sites: list[SiteRef] = Field(
        [],
        max_length=100,
        description="hospital sites (each keeps its images): replaces partitioning data.train; client i is site i",
    )
    round_timeout_s: Number = Field(
        3600, ge=5, le=7 * 86400, description="with sites: how long a round waits for them; later answers are late"
    )
    min_sites: StrictInt = Field(
        1, ge=1, le=100, description="with sites: fewer answers than this by the timeout fail the run"
    )

    @model_validator(mode="after")
    def _sites_are_the_clients(self) -> Self:
        if not self.sites:
            return self
        names = [ref.site for ref in self.sites]
        if len(set(names)) != len(names):
            message = "a site appears twice; give each site once, with one dataset"
            raise _invalid("FederationConfig", ("sites",), message, names)
        if self.min_sites > len(self.sites):
            message = f"min_sites {self.min_sites} is more than the {len(self.sites)} sites listed"
            raise _invalid("FederationConfig", ("min_sites",), message, self.min_sites)
        self.clients = len(self.sites)
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if isinstance(self.partition, SizesPartition) and len(self.partition.fractions) != self.clients:
            raise _invalid(
                "FederationConfig",
                ("partition", "sizes", "fractions"),
                f"{len(self.partition.fractions)} values given, one per client needed ({self.clients} clients)",
                self.partition.fractions,
            )
        seen: set[tuple[int, str]] = set()
        for i, event in enumerate(self.intermittent.events):
            kind = "joins" if event.joins is not None else "leaves"
            at = event.joins if event.joins is not None else event.leaves
            here = ("intermittent", "events", i)
            if event.client > self.clients:
                message = f"event for client {event.client}: clients are numbered 1..{self.clients}"
                raise _invalid("FederationConfig", (*here, "client"), message, event.model_dump())
            if at is not None and at > self.rounds:
                message = f"client {event.client} {kind} at round {at}; rounds are 1..{self.rounds}"
                raise _invalid("FederationConfig", (*here, kind), message, event.model_dump())
            if (event.client, kind) in seen:
                message = f"client {event.client} has two '{kind}' events; give at most one of each"
                raise _invalid("FederationConfig", (*here, kind), message, event.model_dump())
            seen.add((event.client, kind))
        for i, event in enumerate(self.intermittent.events):
            if event.leaves is not None:
                join = next((e.joins for e in self.intermittent.events if e.client == event.client and e.joins), 1)
                if event.leaves <= join:
                    message = f"client {event.client} leaves at round {event.leaves}, before it joins ({join})"
                    raise _invalid(
                        "FederationConfig", ("intermittent", "events", i, "leaves"), message, event.model_dump()
                    )
        return self


class ThresholdConfig(_Strict):
    """How the operating threshold is chosen, on the clients' validation parts (counts only, no predictions)."""

    method: Literal["youden", "sensitivity", "fixed"] = Field(
        "youden",
        description="youden: maximise sensitivity + specificity; sensitivity: highest threshold reaching "
        "target_sensitivity; fixed: value",
    )
    target_sensitivity: Number = Field(0.9, gt=0, lt=1, description="sensitivity method only")
    value: Number = Field(0.5, gt=0, lt=1, description="fixed method only")


class EvaluationConfig(_Strict):
    threshold: ThresholdConfig = ThresholdConfig()


class CentralizedConfig(_Strict):
    enabled: StrictBool = True
    epochs: StrictInt | None = Field(None, ge=1, le=1000, description="default: rounds x local_epochs")


class SecureAggregationConfig(_Strict):
    """Pairwise-masked sums (SecAgg+, Bell et al., CCS 2020): the server learns only the sum of the updates."""

    threshold: StrictInt = Field(
        2,
        ge=2,
        le=100,
        description="sites whose secret shares recover one that drops after masking; fewer survivors fail the round",
    )
    clip_range: Number = Field(
        8.0,
        gt=0,
        le=1000,
        description="each weight's change in a round is clipped to [-clip_range, clip_range] before fixed-point "
        "quantization over 32 bits",
    )
    weight_cap: StrictInt = Field(
        10_000, ge=1, le=10_000_000, description="a site's sample count above this counts as this in the average"
    )


class DpConfig(_Strict):
    """Differential privacy of one run; the epsilon is measured with dp-accounting's RDP accountant."""

    level: Literal["sample", "client"] = Field(
        description="sample: DP-SGD at each site protects each patient's images (Abadi et al., 2016); client: "
        "DP-FedAvg protects each site's whole contribution (McMahan et al., 2018)"
    )
    noise_multiplier: Number = Field(
        1.0, gt=0, le=100, description="Gaussian noise standard deviation in units of clip_norm"
    )
    clip_norm: Number = Field(
        1.0, gt=0, le=1000, description="L2 bound of one example's gradient (sample) or one site's update (client)"
    )
    adaptive_clipping: StrictBool = Field(
        False, description="client level: move clip_norm toward the median update norm (Andrew et al., 2021)"
    )
    delta: Number = Field(1e-5, gt=0, lt=0.01, description="the delta of (epsilon, delta)-DP; below 1/examples")
    target_epsilon: Number | None = Field(
        None, gt=0, le=1000, description="stop before the round that would take epsilon above this"
    )

    @model_validator(mode="after")
    def _adaptive_is_client_level(self) -> Self:
        if self.adaptive_clipping and self.level != "client":
            message = "adaptive clipping sets the bound of a site's update: it needs level 'client'"
            raise _invalid("DpConfig", ("adaptive_clipping",), message, True)
        return self


class PrivacyConfig(_Strict):
    secure_aggregation: SecureAggregationConfig | None = Field(
        None, description="mask each site's update so the server sees only their sum"
    )
    dp: DpConfig | None = Field(None, description="differential privacy, with its epsilon after every round")


class RunConfig(_Strict):
    name: Text = Field("experiment", min_length=1, max_length=200)
    seed: StrictInt = Field(42, ge=0, le=2**31 - 1)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    federation: FederationConfig = FederationConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    centralized: CentralizedConfig = CentralizedConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    baselines: list[Literal["local"]] = Field(
        [],
        max_length=1,
        description="over hospital sites: local, each site also trains the same model on its own data alone for "
        "rounds x local_epochs epochs and evaluates it on its own test split",
    )

    @model_validator(mode="after")
    def _threshold_needs_validation(self) -> Self:
        method = self.evaluation.threshold.method
        if method != "fixed" and self.federation.client_validation_fraction == 0:
            message = f"threshold method {method!r} is chosen on the clients' validation parts; give "
            message += "federation.client_validation_fraction > 0 or use method 'fixed'"
            raise _invalid("RunConfig", ("evaluation", "threshold", "method"), message, method)
        return self

    @model_validator(mode="after")
    def _no_pooled_baseline_over_sites(self) -> Self:
        """Hospital sites never pool their data, so a centralized baseline cannot exist: it is off by default there
        and asking for it is an error."""
        if not self.federation.sites:
            return self
        if self.centralized.enabled and "enabled" in self.centralized.model_fields_set:
            message = "a centralized baseline needs pooled data, which hospital sites never share; set it to false"
            raise _invalid("RunConfig", ("centralized", "enabled"), message, True)
        self.centralized.enabled = False
        return self

    @model_validator(mode="after")
    def _local_baseline_fits(self) -> Self:
        """A local-only model is trained at each hospital site, without differential privacy: a simulation has no
        sites (its baseline is the centralized one), and a DP run cannot release metrics of a model trained without
        noise, since they are a function of the site's training images that no epsilon accounts for."""
        if "local" not in self.baselines:
            return self
        if not self.federation.sites:
            message = "a local baseline trains at each hospital site on its own data; a simulation has no sites "
            message += "(its baseline is centralized.enabled)"
            raise _invalid("RunConfig", ("baselines",), message, self.baselines)
        if self.privacy.dp is not None:
            message = "a local-only model trains without differential privacy, and its metrics, a function of each "
            message += "site's training images, would leave the site with no epsilon accounted; remove the local "
            message += "baseline or privacy.dp"
            raise _invalid("RunConfig", ("baselines",), message, self.baselines)
        return self

    @model_validator(mode="after")
    def _privacy_fits(self) -> Self:
        """What secure aggregation and differential privacy cannot do is refused here, with the reason."""
        secure = self.privacy.secure_aggregation
        if secure is not None:
            if self.federation.intermittent.approach == "keep-last":
                message = "keep-last reuses a departed site's own update, which secure aggregation never shows the "
                message += "server; use approach 'drop' or turn secure aggregation off"
                raise _invalid("RunConfig", ("federation", "intermittent", "approach"), message, "keep-last")
            if self.privacy.dp and self.privacy.dp.adaptive_clipping:
                message = "adaptive clipping needs each site's update norm, which secure aggregation hides"
                raise _invalid("RunConfig", ("privacy", "dp", "adaptive_clipping"), message, True)
            if secure.threshold > self.federation.clients:
                message = f"threshold {secure.threshold} is more than the {self.federation.clients} clients of a round"
                raise _invalid("RunConfig", ("privacy", "secure_aggregation", "threshold"), message, secure.threshold)
        if self.privacy.dp is not None:
            if self.privacy.dp.level == "client" and self.federation.intermittent.approach == "keep-last":
                message = "client-level DP noises each round's sum once; keep-last would reuse a departed site's "
                message += "update unclipped and count it again; use approach 'drop'"
                raise _invalid("RunConfig", ("federation", "intermittent", "approach"), message, "keep-last")
            if self.model.normalization == "batchnorm" and "normalization" in self.model.model_fields_set:
                message = "BatchNorm mixes the examples of a batch and releases its statistics without noise, which "
                message += "differential privacy cannot bound; use groupnorm (the default under dp)"
                raise _invalid("RunConfig", ("model", "normalization"), message, "batchnorm")
            self.model.normalization = "groupnorm"
        return self

    @property
    def over_sites(self) -> bool:
        """A real federation of hospital sites (else a simulation that partitions data.train)."""
        return bool(self.federation.sites)

    @property
    def centralized_epochs(self) -> int:
        return self.centralized.epochs or self.federation.rounds * self.federation.local_epochs


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models(arg)]


def allowed_fields(loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the section that an unknown field at ``loc`` was given in."""
    models: list[type[BaseModel]] = [RunConfig]
    for part in loc[:-1]:
        if any(part in m.model_fields for m in models if isinstance(part, str)):
            models = [n for m in models if part in m.model_fields for n in _models(m.model_fields[part].annotation)]
        elif isinstance(part, str):  # the tag of a discriminated union, e.g. partition kind "sizes"
            models = [m for m in models if part in get_args(getattr(m.model_fields.get("kind"), "annotation", None))]
    return list(dict.fromkeys(name for m in models for name in m.model_fields))


def describe_errors(error: ValidationError) -> list[str]:
    """One line per wrong field: its dotted path, what was given and what is allowed."""
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "config"
        given = item.get("input")
        shown = "" if isinstance(given, dict) or item["type"] == "missing" else f" (got {given!r})"
        if item["type"] == "extra_forbidden":
            shown += f"; allowed fields: {', '.join(allowed_fields(item['loc']))}"
        lines.append(f"{path}: {item['msg']}{shown}")
    return lines


class OutsideDataRoots(ValueError):
    """A data path that resolves outside every data root. The message names the roots and nothing about the path,
    so two refused paths read the same whether or not they exist."""

    def __init__(self, roots: Sequence[Path]) -> None:
        shown = ", ".join(str(root) for root in roots) or "none are configured"
        super().__init__(
            f"outside the data roots ({shown}); training data is read only under them: move the data into one, "
            "or ask the administrator to add its folder to FEDLENS_DATA_ROOTS"
        )


def within_roots(path: str | os.PathLike[str], roots: Sequence[Path]) -> Path:
    """The path to open: ``..`` removed as written, then symbolic links followed (a relative path starts at the
    working directory). Raises OutsideDataRoots unless it lies in one of ``roots``.

    Removing ``..`` first means nothing outside the roots is ever looked at to decide. Open the returned path, not
    ``path``: it is the one checked. The service's workers and the hospital site agent call this with their roots.
    """
    try:
        resolved = Path(os.path.realpath(os.path.abspath(path)))
    except ValueError as error:  # a NUL byte: refused like any other path outside
        raise OutsideDataRoots(roots) from error
    if not any(resolved.is_relative_to(os.path.realpath(root)) for root in roots):
        raise OutsideDataRoots(roots)
    return resolved


def paths_outside_roots(cfg: RunConfig, roots: Sequence[Path]) -> dict[tuple[str, ...], str]:
    """Each data field of ``cfg`` that leads outside ``roots``, by its location in the config, with the reason.

    An image folder is checked with its split too, since the split is a sub-folder that could climb out.
    """
    problems: dict[tuple[str, ...], str] = {}
    for name, source, default_split in (("train", cfg.data.train, "train"), ("test", cfg.data.test, "test")):
        if source is None or source.path is None:
            continue
        checks: list[tuple[str, str | Path, str]] = [("path", source.path, "this path is")]
        if source.format == "image-folder":
            checks.append(("split", Path(source.path) / (source.split or default_split), "the folder of this split is"))
        for field, path, what in checks:
            try:
                within_roots(path, roots)
            except OutsideDataRoots as error:
                problems[("data", name, field)] = f"{what} {error}"
                break
    return problems
