"""Presets are frozen specs that refuse numbers the model cannot run with."""

import pytest
from pydantic import ValidationError

from hw_model.config import PRESETS, preset, system_spec


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("quantum_ps", 0),
        ("engine_clock_mhz", 0),
        ("wavefront_size", 0),
        ("hqd_slots", 0),
        ("memory_bandwidth_gbps", -1.0),
        ("cp_packet_latency_ps", -5),
    ],
)
def test_bad_numbers_are_refused_with_the_field_name(field, value):
    with pytest.raises(ValidationError, match=field):
        type(PRESETS["gfx900"]).model_validate({**PRESETS["gfx900"].model_dump(), field: value})


def test_presets_are_frozen_and_valid():
    for name, spec in PRESETS.items():
        type(spec).model_validate(spec.model_dump())  # every preset passes its own checks
        with pytest.raises(ValidationError):
            spec.num_cus = 1  # type: ignore[misc]
        assert system_spec(name).gpu is spec
    with pytest.raises(ValueError, match="unknown preset"):
        preset("gfx1100")
