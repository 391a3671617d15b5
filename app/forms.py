"""The new-experiment form: flat fields named by their dotted config path, presets, and errors per field."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from app.run_config import DataSource, DpConfig, RunConfig, SecureAggregationConfig, SizesPartition, paths_outside_roots
from app.sites.choices import picked_sites, site_error_key, site_values

# The form's presets are the example configs that `fedlens run` takes, so the two cannot disagree. They live in
# examples/ next to app/, as templates/ and static/ do: `pip install -e .` and the Docker image (which copies the
# repository and installs it editable) both keep that layout.
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PRESETS: dict[str, tuple[str, str]] = {
    "quickstart": ("Quick start (synthetic, 1 minute)", "quickstart-synthetic.yaml"),
    "paper-3": ("Study: 3 clients", "paper-3-clients.yaml"),
    "paper-10": ("Study: 10 clients", "paper-10-clients.yaml"),
    "paper-drop": ("Study: intermittent, approach 1 (drop)", "paper-intermittent-drop.yaml"),
    "paper-keep": ("Study: intermittent, approach 2 (keep last)", "paper-intermittent-keep-last.yaml"),
}

EVENT_LINE = re.compile(r"^\s*(?:client\s*)?(\d+)\s+(joins|leaves)\s+(?:at\s+)?(?:round\s*)?(\d+)\s*$", re.IGNORECASE)
MODEL_FIELDS = ("optimizer", "learning_rate", "batch_size", "batchnorm", "calibration_samples", "class_weight")
NUMBER_FIELDS = {
    "seed",
    "data.train.samples",
    "data.image_size",
    "data.test_fraction",
    "model.learning_rate",
    "model.batch_size",
    "model.calibration_samples",
    "federation.clients",
    "federation.rounds",
    "federation.local_epochs",
    "federation.client_test_fraction",
    "federation.client_validation_fraction",
    "evaluation.threshold.target_sensitivity",
    "evaluation.threshold.value",
    "federation.partition.alpha",
    "federation.intermittent.availability",
    "centralized.epochs",
    "data.train.positive_fraction",
    "federation.round_timeout_s",
    "federation.min_sites",
    "privacy.secure_aggregation.threshold",
    "privacy.dp.noise_multiplier",
    "privacy.dp.clip_norm",
    "privacy.dp.delta",
    "privacy.dp.target_epsilon",
}
DP_FIELDS = ("noise_multiplier", "clip_norm", "delta", "target_epsilon")


class FormError(ValueError):
    """A field that cannot even be parsed (text in a number field, a malformed event line)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def preset_config(name: str) -> RunConfig:
    """The example file of a preset (the quick start for an unknown name), validated."""
    _label, file = PRESETS.get(name, PRESETS["quickstart"])
    return RunConfig.model_validate(yaml.safe_load((EXAMPLES / file).read_text()))


def _csv_values(prefix: str, source: DataSource | None) -> dict[str, str]:
    """The csv fields of a source, or their defaults when the source is absent or of another format."""
    fields = {n: f.default for n, f in DataSource.model_fields.items()}
    if source is not None and source.format == "csv":
        fields = source.model_dump()
    return {
        f"{prefix}.image_column": fields["image_column"],
        f"{prefix}.label_column": fields["label_column"],
        f"{prefix}.split_column": fields["split_column"] or "",
        f"{prefix}.positive": ", ".join(fields["positive"]),
        f"{prefix}.negative": ", ".join(fields["negative"]),
    }


def form_values(cfg: RunConfig) -> dict[str, str]:
    """The form's field values for a config."""
    values: dict[str, str] = {
        "name": cfg.name,
        "seed": str(cfg.seed),
        "data.train.format": cfg.data.train.format,
        "data.train.path": cfg.data.train.path or "",
        "data.train.split": cfg.data.train.split or "",
        "data.train.samples": str(cfg.data.train.samples),
        "data.train.positive_fraction": str(cfg.data.train.positive_fraction),
        "data.test.format": cfg.data.test.format if cfg.data.test else "holdout",
        "data.test.path": cfg.data.test.path or "" if cfg.data.test else "",
        "data.test.split": cfg.data.test.split or "" if cfg.data.test else "",
        **_csv_values("data.train", cfg.data.train),
        **_csv_values("data.test", cfg.data.test),
        "data.test_fraction": str(cfg.data.test_fraction),
        "data.image_size": str(cfg.data.image_size),
        "model.optimizer": cfg.model.optimizer,
        "model.learning_rate": str(cfg.model.learning_rate),
        "model.batch_size": str(cfg.model.batch_size),
        "model.batchnorm": cfg.model.batchnorm,
        "model.calibration_samples": str(cfg.model.calibration_samples),
        "model.class_weight": cfg.model.class_weight,
        "model.augmentation": "on" if cfg.model.augmentation else "",
        "federation.clients": str(cfg.federation.clients),
        "federation.rounds": str(cfg.federation.rounds),
        "federation.local_epochs": str(cfg.federation.local_epochs),
        "federation.partition.kind": cfg.federation.partition.kind,
        "federation.partition.fractions": ", ".join(f"{f:g}" for f in cfg.federation.partition.fractions)
        if isinstance(cfg.federation.partition, SizesPartition)
        else "",
        "federation.partition.alpha": str(getattr(cfg.federation.partition, "alpha", 0.5)),
        "federation.client_test_fraction": str(cfg.federation.client_test_fraction),
        "federation.client_validation_fraction": str(cfg.federation.client_validation_fraction),
        "evaluation.threshold.method": cfg.evaluation.threshold.method,
        "evaluation.threshold.target_sensitivity": str(cfg.evaluation.threshold.target_sensitivity),
        "evaluation.threshold.value": str(cfg.evaluation.threshold.value),
        "federation.intermittent.approach": cfg.federation.intermittent.approach,
        "federation.intermittent.events": "\n".join(
            f"{e.client} joins {e.joins}" if e.joins is not None else f"{e.client} leaves {e.leaves}"
            for e in cfg.federation.intermittent.events
        ),
        "federation.intermittent.availability": str(cfg.federation.intermittent.availability),
        "centralized.enabled": "on" if cfg.centralized.enabled else "",
        "centralized.epochs": str(cfg.centralized.epochs or ""),
    }
    return values | site_values(cfg) | _privacy_values(cfg)


def _privacy_values(cfg: RunConfig) -> dict[str, str]:
    """The privacy fields; a section that is off shows its defaults, ready to switch on."""
    secure = cfg.privacy.secure_aggregation
    dp = cfg.privacy.dp
    dp_fields = (dp or DpConfig(level="sample")).model_dump()
    return {
        "privacy.secure_aggregation": "on" if secure else "off",
        "privacy.secure_aggregation.threshold": str((secure or SecureAggregationConfig()).threshold),
        "privacy.dp.level": dp.level if dp else "off",
        **{f"privacy.dp.{k}": "" if dp_fields[k] is None else str(dp_fields[k]) for k in DP_FIELDS},
        "privacy.dp.adaptive_clipping": "on" if dp and dp.adaptive_clipping else "",
    }


def _privacy(form: Mapping[str, str], get: Callable[[str], Any]) -> dict[str, Any]:
    """The privacy section: the sections switched on, with their fields (empty ones fall back to the defaults)."""
    privacy: dict[str, Any] = {}
    if form.get("privacy.secure_aggregation") == "on":
        privacy["secure_aggregation"] = {"threshold": get("privacy.secure_aggregation.threshold")}
    level = get("privacy.dp.level")
    if level not in ("", "off"):
        privacy["dp"] = {"level": level, **{k: get(f"privacy.dp.{k}") for k in DP_FIELDS}}
        privacy["dp"]["adaptive_clipping"] = form.get("privacy.dp.adaptive_clipping") == "on"
    return privacy


def _number(text: str) -> int | float | str:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text  # left as text: validation then says which number it should be


def _events(text: str) -> list[dict[str, int]]:
    events = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = EVENT_LINE.match(line)
        if not match:
            raise FormError(
                {
                    "federation.intermittent.events": f"line {number} '{line.strip()}': write one event "
                    "per line as '<client> joins <round>' or '<client> leaves <round>'"
                }
            )
        events.append({"client": int(match[1]), match[2].lower(): int(match[3])})
    return events


def config_from_form(form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The raw config a form describes, and the fields too malformed to parse; RunConfig validates the rest.

    Empty fields fall back to the defaults.
    """

    def get(key: str) -> Any:
        value = form.get(key, "").strip()
        return _number(value) if key in NUMBER_FIELDS and value else value

    def source(prefix: str) -> dict[str, Any]:
        fmt = get(f"{prefix}.format")
        raw: dict[str, Any] = {"format": fmt}
        if fmt == "synthetic":
            raw |= {k: get(f"{prefix}.{k}") for k in ("samples", "positive_fraction") if get(f"{prefix}.{k}") != ""}
            return raw
        raw |= {k: get(f"{prefix}.{k}") or None for k in ("path", "split")}
        if fmt == "csv":
            raw |= {k: get(f"{prefix}.{k}") for k in ("image_column", "label_column") if get(f"{prefix}.{k}")}
            raw["split_column"] = get(f"{prefix}.split_column") or None
            for k in ("positive", "negative"):
                if get(f"{prefix}.{k}"):
                    raw[k] = [label.strip() for label in str(get(f"{prefix}.{k}")).split(",") if label.strip()]
        return raw

    parse_errors: dict[str, str] = {}
    try:
        events = _events(form.get("federation.intermittent.events", ""))
    except FormError as error:
        events, parse_errors = [], error.errors
    kind = get("federation.partition.kind") or "iid"
    partition: dict[str, Any] = {"kind": kind}
    if kind == "sizes":
        fractions = [f.strip() for f in str(get("federation.partition.fractions")).split(",") if f.strip()]
        partition["fractions"] = [_number(f) for f in fractions]
    elif kind == "dirichlet":
        partition["alpha"] = get("federation.partition.alpha")
    data: dict[str, Any] = {
        "train": source("data.train"),
        "image_size": get("data.image_size"),
        "test_fraction": get("data.test_fraction"),
    }
    if get("data.test.format") not in ("", "holdout"):
        data["test"] = source("data.test")
    over_sites = form.get("mode") == "sites"
    sites, site_errors = picked_sites(form) if over_sites else ([], {})
    raw: dict[str, Any] = {
        "name": get("name"),
        "seed": get("seed"),
        "data": data,
        "model": {
            **{
                k: get(f"model.{k}")
                for k in (
                    "optimizer",
                    "learning_rate",
                    "batch_size",
                    "batchnorm",
                    "calibration_samples",
                    "class_weight",
                )
            },
            "augmentation": form.get("model.augmentation") == "on",
        },
        "federation": {
            **{
                k: get(f"federation.{k}")
                for k in ("clients", "rounds", "local_epochs", "client_test_fraction", "client_validation_fraction")
            },
            "partition": partition,
            "intermittent": {
                "approach": get("federation.intermittent.approach"),
                "events": events,
                "availability": get("federation.intermittent.availability"),
            },
        },
        "evaluation": {
            "threshold": {k: get(f"evaluation.threshold.{k}") for k in ("method", "target_sensitivity", "value")}
        },
        "centralized": {
            "enabled": form.get("centralized.enabled") == "on",
            "epochs": get("centralized.epochs") or None,
        },
        "privacy": _privacy(form, get),
    }
    if over_sites:  # the sites hold the data: nothing to partition, no pooled baseline
        del data["train"], raw["federation"]["clients"], raw["federation"]["partition"], raw["centralized"]
        raw["federation"] |= {
            "sites": sites,
            "round_timeout_s": get("federation.round_timeout_s"),
            "min_sites": get("federation.min_sites"),
        }
        raw["baselines"] = ["local"] if form.get("baselines") == "on" else []
    cleaned: dict[str, Any] = _drop_empty(raw)
    return cleaned, parse_errors | site_errors


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v != ""}
    return value


def field_errors(error: ValidationError, sites: Sequence[Mapping[str, str]] = ()) -> dict[str, str]:
    """Validation messages keyed by form field; a message about a whole section goes to that section, one about a
    listed site to that site's fields."""
    errors: dict[str, str] = {}
    for item in error.errors():
        parts = [str(p) for p in item["loc"] if not isinstance(p, int) and p not in ("iid", "sizes", "dirichlet")]
        if "events" in parts:
            parts = parts[: parts.index("events") + 1]
        key = site_error_key(item["loc"], sites) or ".".join(parts) or "config"
        given = item.get("input")
        shown = f" (got {given!r})" if isinstance(given, str | int | float) and item["type"] != "missing" else ""
        errors.setdefault(key, f"{item['msg'].removeprefix('Value error, ')}{shown}")
    return errors


def validate_form(
    form: Mapping[str, str], roots: Sequence[Path] | None = None
) -> tuple[RunConfig | None, dict[str, Any], dict[str, str]]:
    """(config or None, the raw config, errors per field); with ``roots`` (the service's data roots), a data path
    outside them is an error at its field too."""
    raw, parse_errors = config_from_form(form)
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as error:
        listed = raw.get("federation", {}).get("sites", [])
        return None, raw, field_errors(error, listed) | parse_errors
    errors = dict(parse_errors)
    if roots is not None:
        errors |= {".".join(loc): message for loc, message in paths_outside_roots(cfg, roots).items()}
    return (None, raw, errors) if errors else (cfg, raw, {})
