"""The new-experiment form without a server: flat fields to RunConfig and back, parse errors, errors per field."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app import forms
from app.run_config import RunConfig
from tests.api.pages import PRESET_CONFIGS, PRESET_FORMS, QUICKSTART_FORM


def config(overrides: dict[str, Any]) -> RunConfig:
    return RunConfig.model_validate(overrides)


def errors_of(overrides: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        RunConfig.model_validate(overrides)
    return forms.field_errors(caught.value)


ROUND_TRIPS = {
    "sizes partition": {"federation": {"clients": 3, "partition": {"kind": "sizes", "fractions": [0.5, 0.3, 0.2]}}},
    "dirichlet partition": {"federation": {"partition": {"kind": "dirichlet", "alpha": 0.3}}},
    "separate npz test source": {
        "data": {
            "train": {"format": "npz", "path": "data/pneumoniamnist.npz", "split": "train"},
            "test": {"format": "npz", "path": "data/pneumoniamnist.npz", "split": "test"},
            "image_size": 28,
        }
    },
    "availability 0.7 with events": {
        "federation": {
            "clients": 4,
            "rounds": 8,
            "intermittent": {
                "approach": "keep-last",
                "events": [{"client": 4, "joins": 2}, {"client": 1, "leaves": 5}],
                "availability": 0.7,
            },
        }
    },
    "centralized disabled": {"centralized": {"enabled": False}},
    "secure aggregation and client-level dp": {
        "federation": {"clients": 4},
        "privacy": {
            "secure_aggregation": {"threshold": 3},
            "dp": {"level": "client", "noise_multiplier": 5, "clip_norm": 0.5, "delta": 1e-6, "target_epsilon": 4},
        },
    },
    "sample-level dp without a target": {"privacy": {"dp": {"level": "sample", "noise_multiplier": 1.1}}},
    "adaptive clipping": {"privacy": {"dp": {"level": "client", "adaptive_clipping": True}}},
    "centralized epochs and model settings": {
        "seed": 7,
        "model": {"optimizer": "sgd", "learning_rate": 0.01, "batch_size": 16, "batchnorm": "keras"},
        "centralized": {"enabled": True, "epochs": 12},
    },
}


def test_the_presets_are_the_quick_start_and_the_four_study_setups() -> None:
    assert list(forms.PRESETS) == list(PRESET_CONFIGS) == list(PRESET_FORMS)


def test_the_presets_are_the_example_files_and_the_docker_image_keeps_them() -> None:
    root = Path(__file__).resolve().parents[2]
    files = [file for _label, file in forms.PRESETS.values()]
    assert files == [
        "quickstart-synthetic.yaml",
        "paper-3-clients.yaml",
        "paper-10-clients.yaml",
        "paper-intermittent-drop.yaml",
        "paper-intermittent-keep-last.yaml",
    ]
    assert root / "examples" == forms.EXAMPLES
    assert all((root / "examples" / file).is_file() for file in files)
    ignored = [
        line.strip() for line in (root / ".dockerignore").read_text().splitlines() if line.strip()[:1] not in "#"
    ]
    assert not [p for p in ignored for f in files if fnmatch.fnmatch(f"examples/{f}", p.rstrip("/") + "*")]


@pytest.mark.parametrize("preset", list(PRESET_CONFIGS))
def test_each_preset_is_its_config_and_fills_the_form_with_its_values(preset: str) -> None:
    cfg = forms.preset_config(preset)

    assert cfg.model_dump(mode="json", exclude_none=True) == PRESET_CONFIGS[preset]
    assert forms.form_values(cfg) == PRESET_FORMS[preset]


@pytest.mark.parametrize("preset", list(PRESET_FORMS))
def test_each_presets_form_validates_to_its_config(preset: str) -> None:
    validated, _raw, errors = forms.validate_form(PRESET_FORMS[preset])

    assert errors == {}
    assert validated is not None
    assert validated.model_dump(mode="json", exclude_none=True) == PRESET_CONFIGS[preset]


@pytest.mark.parametrize("overrides", ROUND_TRIPS.values(), ids=list(ROUND_TRIPS))
def test_a_config_survives_form_values_and_validate_form(overrides: dict[str, Any]) -> None:
    cfg = config(overrides)

    validated, _raw, errors = forms.validate_form(forms.form_values(cfg))

    assert errors == {}
    assert validated == cfg


def test_form_values_writes_fractions_events_and_the_unchecked_baseline_as_text() -> None:
    cfg = config(
        {
            "federation": {
                "clients": 3,
                "partition": {"kind": "sizes", "fractions": [0.5, 0.3, 0.2]},
                "intermittent": {"events": [{"client": 3, "joins": 3}, {"client": 2, "leaves": 6}]},
            },
            "centralized": {"enabled": False},
        }
    )

    values = forms.form_values(cfg)

    assert values["federation.partition.kind"] == "sizes"
    assert values["federation.partition.fractions"] == "0.5, 0.3, 0.2"
    assert values["federation.intermittent.events"] == "3 joins 3\n2 leaves 6"
    assert (values["centralized.enabled"], values["centralized.epochs"]) == ("", "")
    assert (values["data.test.format"], values["data.test.path"]) == ("holdout", "")


def test_form_values_of_a_test_source_fill_the_test_fields() -> None:
    cfg = config({"data": {"test": {"format": "image-folder", "path": "data/chest_xray", "split": "test"}}})

    values = forms.form_values(cfg)

    assert (values["data.test.format"], values["data.test.path"], values["data.test.split"]) == (
        "image-folder",
        "data/chest_xray",
        "test",
    )


def test_empty_fields_fall_back_to_the_defaults_and_an_absent_checkbox_disables_the_baseline() -> None:
    cfg, raw, errors = forms.validate_form({"name": "", "federation.rounds": " ", "data.train.format": "synthetic"})

    assert errors == {}
    assert raw["centralized"] == {"enabled": False, "epochs": None}
    assert cfg is not None
    assert (cfg.name, cfg.federation.rounds, cfg.federation.clients) == ("experiment", 10, 3)
    assert cfg.centralized.enabled is False


def test_numbers_are_parsed_as_int_or_float() -> None:
    form = QUICKSTART_FORM | {"federation.rounds": "4", "model.learning_rate": "0.0005"}

    raw, errors = forms.config_from_form(form)

    assert errors == {}
    assert raw["federation"]["rounds"] == 4
    assert raw["model"]["learning_rate"] == 0.0005


def test_event_lines_accept_the_long_form_and_any_case() -> None:
    form = QUICKSTART_FORM | {
        "federation.clients": "3",
        "federation.rounds": "10",
        "federation.intermittent.events": "client 3 joins at round 3\n\n  2 LEAVES 6  ",
    }

    cfg, _raw, errors = forms.validate_form(form)

    assert errors == {}
    assert cfg is not None
    assert [(e.client, e.joins, e.leaves) for e in cfg.federation.intermittent.events] == [(3, 3, None), (2, None, 6)]


def test_a_malformed_event_line_is_reported_with_its_line_number_and_blocks_the_config() -> None:
    form = QUICKSTART_FORM | {"federation.intermittent.events": "3 joins 3\n2 goes away at 6"}

    cfg, _raw, errors = forms.validate_form(form)

    assert cfg is None
    assert errors == {
        "federation.intermittent.events": "line 2 '2 goes away at 6': write one event per line as "
        "'<client> joins <round>' or '<client> leaves <round>'"
    }


def test_a_malformed_event_line_is_reported_together_with_the_other_errors() -> None:
    form = QUICKSTART_FORM | {"federation.rounds": "0", "federation.intermittent.events": "soon"}

    cfg, _raw, errors = forms.validate_form(form)

    assert cfg is None
    assert set(errors) == {"federation.rounds", "federation.intermittent.events"}
    assert errors["federation.rounds"] == "Input should be greater than or equal to 1 (got 0)"
    assert errors["federation.intermittent.events"].startswith("line 1 'soon':")


def test_text_in_a_number_field_is_an_error_on_that_field_quoting_the_text() -> None:
    form = QUICKSTART_FORM | {"federation.clients": "three"}

    cfg, _raw, errors = forms.validate_form(form)

    assert cfg is None
    assert list(errors) == ["federation.clients"]
    assert errors["federation.clients"].endswith("(got 'three')")


def test_fractions_that_do_not_add_up_to_one_are_an_error_on_the_fractions_field() -> None:
    errors = errors_of({"federation": {"clients": 2, "partition": {"kind": "sizes", "fractions": [0.5, 0.4]}}})

    assert errors == {"federation.partition.fractions": "fractions must add up to 1, they add up to 0.9"}


def test_a_non_positive_fraction_is_an_error_on_the_fractions_field() -> None:
    errors = errors_of({"federation": {"clients": 2, "partition": {"kind": "sizes", "fractions": [1.0, 0]}}})

    assert errors == {"federation.partition.fractions": "Input should be greater than 0 (got 0)"}


def test_sizes_without_fractions_is_an_error_on_the_fractions_field() -> None:
    form = QUICKSTART_FORM | {"federation.partition.kind": "sizes", "federation.partition.fractions": ""}

    _cfg, _raw, errors = forms.validate_form(form)

    assert errors == {"federation.partition.fractions": "List should have at least 1 item after validation, not 0"}


def test_an_event_with_both_joins_and_leaves_is_an_error_on_the_events_field() -> None:
    errors = errors_of({"federation": {"intermittent": {"events": [{"client": 1, "joins": 2, "leaves": 3}]}}})

    assert errors == {"federation.intermittent.events": "an event has exactly one of joins or leaves"}


def test_an_out_of_range_event_round_is_an_error_on_the_events_field() -> None:
    form = QUICKSTART_FORM | {"federation.intermittent.events": "1 joins 2\n2 leaves 1"}

    _cfg, _raw, errors = forms.validate_form(form)

    assert errors == {"federation.intermittent.events": "Input should be greater than or equal to 2 (got 1)"}


def test_a_cross_field_error_about_an_event_goes_to_the_events_field() -> None:
    errors = errors_of({"federation": {"clients": 3, "intermittent": {"events": [{"client": 4, "joins": 2}]}}})

    assert errors == {"federation.intermittent.events": "event for client 4: clients are numbered 1..3"}


def test_a_cross_field_error_about_fractions_goes_to_the_fractions_field() -> None:
    errors = errors_of({"federation": {"clients": 3, "partition": {"kind": "sizes", "fractions": [0.5, 0.5]}}})

    assert errors == {"federation.partition.fractions": "2 values given, one per client needed (3 clients)"}


def test_a_source_without_its_path_is_an_error_on_that_source() -> None:
    form = QUICKSTART_FORM | {"data.train.format": "npz", "data.train.path": ""}

    _cfg, _raw, errors = forms.validate_form(form)

    assert errors == {"data.train.path": "format 'npz' needs a path (a folder or an .npz file)"}


def test_privacy_switched_off_ignores_its_fields_and_a_bad_threshold_is_shown_at_its_field() -> None:
    off = QUICKSTART_FORM | {"privacy.secure_aggregation.threshold": "9", "privacy.dp.noise_multiplier": "5"}
    too_high = QUICKSTART_FORM | {"privacy.secure_aggregation": "on", "privacy.secure_aggregation.threshold": "4"}

    cfg, _raw, errors = forms.validate_form(off)
    _none, _raw, too_high_errors = forms.validate_form(too_high)

    assert errors == {} and cfg is not None and cfg.privacy.model_dump() == {"secure_aggregation": None, "dp": None}
    assert "more than the 3 clients" in too_high_errors["privacy.secure_aggregation.threshold"]
