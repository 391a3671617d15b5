"""RunConfig validation and the error lines describe_errors shows to users."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from app.run_config import DirichletPartition, RunConfig, SizesPartition, describe_errors

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def errors_for(config: object) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        RunConfig.model_validate(config)
    return describe_errors(caught.value)


def only_error(config: object) -> str:
    lines = errors_for(config)
    assert len(lines) == 1, lines
    return lines[0]


def federation(**fields: Any) -> dict[str, Any]:
    return {"federation": fields}


def events(*items: dict[str, int], clients: int = 3, rounds: int = 10) -> dict[str, Any]:
    return federation(clients=clients, rounds=rounds, intermittent={"events": list(items)})


def test_defaults_are_a_valid_config() -> None:
    cfg = RunConfig()
    assert cfg.data.train.format == "synthetic"
    assert (cfg.federation.clients, cfg.federation.rounds) == (3, 10)
    assert cfg.federation.intermittent.approach == "drop"
    assert cfg.centralized_epochs == 10  # rounds x local_epochs


# What each example sets up: (clients, rounds, image size, partition, intermittent approach, its events).
EXAMPLE_SETUPS = {
    "paper-10-clients": (10, 10, 150, "iid", "drop", []),
    "paper-3-clients": (3, 10, 150, "sizes", "drop", []),
    "paper-intermittent-drop": (3, 10, 150, "iid", "drop", [(3, 3, None), (2, None, 6)]),
    "paper-intermittent-keep-last": (3, 10, 150, "iid", "keep-last", [(3, 3, None), (2, None, 6)]),
    "quickstart-synthetic": (3, 5, 32, "iid", "drop", []),
}


def test_the_examples_folder_holds_the_quick_start_and_the_four_study_setups() -> None:
    assert [path.stem for path in EXAMPLES] == sorted(EXAMPLE_SETUPS)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_is_named_after_its_file_and_sets_up_its_study(path: Path) -> None:
    cfg = RunConfig.model_validate(yaml.safe_load(path.read_text()))

    f = cfg.federation
    events = [(e.client, e.joins, e.leaves) for e in f.intermittent.events]
    assert cfg.name == path.stem
    assert (f.clients, f.rounds, cfg.data.image_size, f.partition.kind, f.intermittent.approach, events) == (
        EXAMPLE_SETUPS[path.stem]
    )


def test_sizes_and_dirichlet_partitions_parse_into_their_types() -> None:
    sizes = RunConfig.model_validate(federation(clients=2, partition={"kind": "sizes", "fractions": [0.7, 0.3]}))
    dirichlet = RunConfig.model_validate(federation(partition={"kind": "dirichlet", "alpha": 0.5}))
    assert isinstance(sizes.federation.partition, SizesPartition)
    assert isinstance(dirichlet.federation.partition, DirichletPartition)


def test_unknown_field_names_its_path_and_the_allowed_fields() -> None:
    line = only_error(federation(round=5))
    assert line.startswith("federation.round: ")
    assert "not permitted" in line
    assert "(got 5)" in line
    allowed = "clients, rounds, local_epochs, partition, client_test_fraction, client_validation_fraction, intermittent"
    assert f"allowed fields: {allowed}" in line


def test_unknown_field_in_a_partition_lists_that_partitions_fields() -> None:
    line = only_error(federation(clients=1, partition={"kind": "sizes", "fractions": [1.0], "alpha": 2}))
    assert line.startswith("federation.partition.sizes.alpha: ")
    assert line.endswith("allowed fields: kind, fractions")


def test_unknown_field_in_an_event_lists_the_event_fields() -> None:
    line = only_error(events({"client": 1, "leaves": 3, "round": 2}))
    assert line.startswith("federation.intermittent.events.0.round: ")
    assert line.endswith("allowed fields: client, joins, leaves")


def test_zero_rounds_names_the_field_and_the_lower_bound() -> None:
    assert only_error(federation(rounds=0)) == "federation.rounds: Input should be greater than or equal to 1 (got 0)"


def test_unknown_partition_kind_lists_the_allowed_kinds() -> None:
    line = only_error(federation(partition={"kind": "foo"}))
    assert line.startswith("federation.partition: ")
    assert "'foo'" in line
    assert "'iid', 'sizes', 'dirichlet'" in line


def test_fractions_not_adding_up_to_one_are_reported_with_their_sum() -> None:
    line = only_error(federation(clients=2, partition={"kind": "sizes", "fractions": [0.5, 0.6]}))
    assert line.startswith("federation.partition.sizes.fractions: ")
    assert "fractions must add up to 1, they add up to 1.1" in line


def test_fractions_of_the_wrong_length_need_one_per_client() -> None:
    line = only_error(federation(clients=3, partition={"kind": "sizes", "fractions": [0.5, 0.5]}))
    assert line.startswith("federation.partition.sizes.fractions: ")
    assert "2 values given, one per client needed (3 clients)" in line


def test_negative_fraction_names_its_index() -> None:
    lines = errors_for(federation(clients=2, partition={"kind": "sizes", "fractions": [1.5, -0.5]}))
    assert "federation.partition.sizes.fractions.1: Input should be greater than 0 (got -0.5)" in lines


def test_event_for_a_client_beyond_the_federation_names_the_valid_numbers() -> None:
    line = only_error(events({"client": 7, "leaves": 3}))
    assert line.startswith("federation.intermittent.events.0.client: ")
    assert "event for client 7: clients are numbered 1..3" in line


def test_event_with_both_joins_and_leaves_asks_for_exactly_one() -> None:
    line = only_error(events({"client": 1, "joins": 2, "leaves": 4}))
    assert line.startswith("federation.intermittent.events.0: ")
    assert "exactly one of joins or leaves" in line


def test_event_with_neither_joins_nor_leaves_asks_for_exactly_one() -> None:
    assert "exactly one of joins or leaves" in only_error(events({"client": 1}))


def test_leaving_before_joining_names_both_rounds() -> None:
    line = only_error(events({"client": 2, "joins": 4}, {"client": 2, "leaves": 3}))
    assert line.startswith("federation.intermittent.events.1.leaves: ")
    assert "client 2 leaves at round 3, before it joins (4)" in line


def test_leaving_in_round_one_is_below_the_lower_bound() -> None:
    line = only_error(events({"client": 2, "leaves": 1}))
    assert line == "federation.intermittent.events.0.leaves: Input should be greater than or equal to 2 (got 1)"


def test_event_after_the_last_round_names_the_round_range() -> None:
    line = only_error(events({"client": 1, "joins": 12}, rounds=10))
    assert line.startswith("federation.intermittent.events.0.joins: ")
    assert "client 1 joins at round 12; rounds are 1..10" in line


def test_two_leave_events_for_one_client_are_refused() -> None:
    line = only_error(events({"client": 1, "leaves": 3}, {"client": 1, "leaves": 5}))
    assert "client 1 has two 'leaves' events; give at most one of each" in line


def test_zero_availability_names_the_field_and_the_bound() -> None:
    line = only_error(federation(intermittent={"availability": 0}))
    assert line == "federation.intermittent.availability: Input should be greater than 0 (got 0)"


def test_unknown_approach_lists_the_allowed_approaches() -> None:
    line = only_error(federation(intermittent={"approach": "keep"}))
    assert line == "federation.intermittent.approach: Input should be 'drop' or 'keep-last' (got 'keep')"


@pytest.mark.parametrize("fmt", ["npz", "image-folder"])
def test_file_formats_without_a_path_ask_for_one(fmt: str) -> None:
    line = only_error({"data": {"train": {"format": fmt}}})
    assert line.startswith("data.train.path: ")
    assert f"format '{fmt}' needs a path" in line


def test_unknown_data_format_lists_the_allowed_formats() -> None:
    line = only_error({"data": {"train": {"format": "tiff", "path": "x"}}})
    assert line == "data.train.format: Input should be 'image-folder', 'csv', 'npz' or 'synthetic' (got 'tiff')"


def test_missing_data_format_is_reported_without_a_given_value() -> None:
    assert only_error({"data": {"train": {"path": "x.npz"}}}) == "data.train.format: Field required"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"seed": False}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": 7.0}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"federation": {"rounds": True}}, "federation.rounds"),
        ({"model": {"learning_rate": True}}, "model.learning_rate"),
        ({"model": {"augmentation": "yes"}}, "model.augmentation"),
        ({"federation": {"intermittent": {"events": [{"client": 2**70, "leaves": 2}]}}}, "federation"),
    ],
)
def test_numbers_and_flags_are_strict_and_bounded(raw: dict[str, object], field: str) -> None:
    assert only_error(raw).startswith(field)


def test_yaml_numbers_validate_and_an_int_is_a_valid_float() -> None:
    cfg = RunConfig.model_validate(yaml.safe_load("seed: 7\nmodel: {learning_rate: 1}\nfederation: {rounds: 2}"))
    assert (cfg.seed, cfg.model.learning_rate, cfg.federation.rounds) == (7, 1.0, 2)


def test_a_float_written_without_a_dot_in_yaml_still_validates() -> None:
    """PyYAML reads 1e-3 as text (YAML 1.1 wants a dot): a float field takes it as the number it means."""
    cfg = RunConfig.model_validate(yaml.safe_load("model: {learning_rate: 1e-3}"))
    assert cfg.model.learning_rate == 0.001


def test_wrong_types_are_each_reported_with_the_given_value() -> None:
    lines = errors_for({"seed": "x", "federation": {"rounds": "many", "clients": [1]}, "model": {"optimizer": "adamw"}})
    assert sorted(lines) == sorted(
        [
            "seed: Input should be a valid integer (got 'x')",
            "federation.rounds: Input should be a valid integer (got 'many')",
            "federation.clients: Input should be a valid integer (got [1])",
            "model.optimizer: Input should be 'rmsprop', 'adam' or 'sgd' (got 'adamw')",
        ]
    )


def test_a_config_that_is_not_a_mapping_is_reported_at_the_top() -> None:
    line = only_error([1, 2])
    assert line.startswith("config: ")
    assert "(got [1, 2])" in line


PRIVACY_REFUSALS = {
    "keep-last": (
        {"federation": {"intermittent": {"approach": "keep-last"}}, "privacy": {"secure_aggregation": {}}},
        ("federation", "intermittent", "approach"),
        "secure aggregation never shows the server",
    ),
    "keep-last-client-dp": (
        {"federation": {"intermittent": {"approach": "keep-last"}}, "privacy": {"dp": {"level": "client"}}},
        ("federation", "intermittent", "approach"),
        "client-level DP noises each round's sum once",
    ),
    "threshold": (
        {"federation": {"clients": 3}, "privacy": {"secure_aggregation": {"threshold": 4}}},
        ("privacy", "secure_aggregation", "threshold"),
        "more than the 3 clients",
    ),
    "batchnorm": (
        {"model": {"normalization": "batchnorm"}, "privacy": {"dp": {"level": "sample"}}},
        ("model", "normalization"),
        "use groupnorm",
    ),
    "adaptive-sample": (
        {"privacy": {"dp": {"level": "sample", "adaptive_clipping": True}}},
        ("privacy", "dp", "adaptive_clipping"),
        "needs level 'client'",
    ),
    "adaptive-secure": (
        {"privacy": {"secure_aggregation": {}, "dp": {"level": "client", "adaptive_clipping": True}}},
        ("privacy", "dp", "adaptive_clipping"),
        "secure aggregation hides",
    ),
}


@pytest.mark.parametrize("case", PRIVACY_REFUSALS.values(), ids=list(PRIVACY_REFUSALS))
def test_privacy_settings_it_cannot_honour_are_refused_with_the_reason(case: tuple[Any, Any, str]) -> None:
    raw, loc, reason = case
    with pytest.raises(ValidationError) as refused:
        RunConfig.model_validate(raw)
    [error] = refused.value.errors()
    assert error["loc"] == loc and reason in error["msg"]


def test_differential_privacy_swaps_batchnorm_for_groupnorm_unless_told_otherwise() -> None:
    assert RunConfig.model_validate({"privacy": {"dp": {"level": "client"}}}).model.normalization == "groupnorm"
    assert RunConfig.model_validate({}).model.normalization == "batchnorm"


SITES = [{"site": "hospital-a", "dataset": "chest"}, {"site": "hospital-b", "dataset": "chest"}]


def test_a_local_baseline_over_sites_is_kept_and_defaults_to_none() -> None:
    over_sites = {"federation": {"sites": SITES}}

    assert RunConfig.model_validate(over_sites | {"baselines": ["local"]}).baselines == ["local"]
    assert RunConfig.model_validate(over_sites).baselines == []
    assert RunConfig().baselines == []


def test_a_local_baseline_in_a_simulation_is_refused_pointing_at_the_centralized_one() -> None:
    line = only_error({"baselines": ["local"]})

    assert line.startswith("baselines: a local baseline trains at each hospital site on its own data")
    assert "centralized.enabled" in line


@pytest.mark.parametrize("level", ["sample", "client"])
def test_a_local_baseline_with_differential_privacy_is_refused_with_the_reason(level: str) -> None:
    raw = {"federation": {"sites": SITES}, "baselines": ["local"], "privacy": {"dp": {"level": level}}}

    line = only_error(raw)

    assert line.startswith("baselines: a local-only model trains without differential privacy")
    assert "no epsilon accounted" in line


def test_baselines_name_only_local_and_only_once() -> None:
    over_sites = {"federation": {"sites": SITES}}

    assert only_error(over_sites | {"baselines": ["centralized"]}).startswith("baselines.0: Input should be 'local'")
    twice = only_error(over_sites | {"baselines": ["local", "local"]})
    assert twice.startswith("baselines: List should have at most 1")
