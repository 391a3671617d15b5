"""The new-experiment form's "Hospital sites" mode: one checkbox and one dataset select per registered site."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.run_config import RunConfig
from app.sites.schemas import SiteRead

#: a training set whose smaller class is under this share gets a label-skew note (as on the Sites page)
SKEW_BELOW = 0.2
SPLITS = ("train", "validation", "test")


def pick_field(site: str) -> str:
    """The checkbox of a site; ':' never occurs in a site name, so the two names cannot collide."""
    return f"site:{site}"


def dataset_field(site: str) -> str:
    return f"site:{site}:dataset"


@dataclass(frozen=True)
class DatasetChoice:
    name: str
    counts: str  # "train 120 + 380 · validation … · test …" (normal + pneumonia)
    skew: str  # "" or a sentence on the training set's label skew


@dataclass(frozen=True)
class SiteChoice:
    name: str
    state: str  # online, training, offline, not enrolled, disabled
    datasets: list[DatasetChoice]


def _state(site: SiteRead) -> str:
    if site.disabled:
        return "disabled"
    if not site.enrolled:
        return "not enrolled"
    if not site.online:
        return "offline"
    return "training" if site.busy_with else "online"


def _dataset(summary: Mapping[str, Any]) -> DatasetChoice:
    counts: Mapping[str, Mapping[str, int]] = summary.get("counts", {})
    shown = " · ".join(
        f"{split} {counts.get(split, {}).get('negative', 0)} + {counts.get(split, {}).get('positive', 0)}"
        for split in SPLITS
    )
    train = counts.get("train", {})
    negative, positive = train.get("negative", 0), train.get("positive", 0)
    share = positive / (negative + positive) if negative + positive else 0.5
    skew = ""
    if min(share, 1 - share) < SKEW_BELOW:
        skew = f"label skew: {share:.0%} of its training images are PNEUMONIA"
    return DatasetChoice(name=str(summary["name"]), counts=shown, skew=skew)


def site_choices(sites: Sequence[SiteRead], values: Mapping[str, str]) -> list[SiteChoice]:
    """Every registered site, those the form has picked first and in the form's order (client i is the i-th
    site), then the others by name."""
    picked = [key.removeprefix("site:") for key in values if key.count(":") == 1 and values[key] == "on"]
    rank = {name: i for i, name in enumerate(picked)}
    ordered = sorted(sites, key=lambda s: (rank.get(s.name, len(rank)), s.name))
    return [SiteChoice(s.name, _state(s), [_dataset(d) for d in s.datasets]) for s in ordered]


def site_values(cfg: RunConfig) -> dict[str, str]:
    """The form fields of a config's sites, in the config's order, and of its local baseline."""
    values: dict[str, str] = {
        "mode": "sites" if cfg.over_sites else "simulation",
        "federation.round_timeout_s": f"{cfg.federation.round_timeout_s:g}",
        "federation.min_sites": str(cfg.federation.min_sites),
        "baselines": "on" if "local" in cfg.baselines else "",
    }
    for ref in cfg.federation.sites:
        values |= {pick_field(ref.site): "on", dataset_field(ref.site): ref.dataset}
    return values


def picked_sites(form: Mapping[str, str]) -> tuple[list[dict[str, str]], dict[str, str]]:
    """The ``federation.sites`` a form picks, in the form's order, and the fields too incomplete to send."""
    refs: list[dict[str, str]] = []
    errors: dict[str, str] = {}
    for key, value in form.items():
        if key.count(":") != 1 or not key.startswith("site:") or value != "on":
            continue
        site = key.removeprefix("site:")
        dataset = form.get(dataset_field(site), "").strip()
        if not dataset:
            errors[dataset_field(site)] = "choose a dataset; this site's agent has declared none yet"
        refs.append({"site": site, "dataset": dataset})
    if not refs:
        errors["federation.sites"] = "pick at least one site"
    return refs, errors


def site_error_key(loc: Sequence[int | str], sites: Sequence[Mapping[str, str]]) -> str | None:
    """The form field of a validation error about one listed site (``federation.sites.<i>.dataset``), if it is."""
    if len(loc) < 4 or tuple(loc[:2]) != ("federation", "sites") or not isinstance(loc[2], int):
        return None
    if loc[2] >= len(sites):
        return "federation.sites"
    site = sites[loc[2]]["site"]
    return dataset_field(site) if loc[3] == "dataset" else pick_field(site)
