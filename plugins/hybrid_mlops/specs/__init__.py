"""Model specs: ``include/models/<name>.yaml`` parsed into frozen, validated objects."""

from hybrid_mlops.specs.model import ModelSpec, SpecError, load_spec, load_specs, parse_spec

__all__ = ["ModelSpec", "SpecError", "load_spec", "load_specs", "parse_spec"]
