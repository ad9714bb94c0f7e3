"""The cluster spec: model, loading and validation (contract: spec-v1)."""
from .load import SpecError, load_spec, parse_spec, read_yaml
from .model import (PROVIDER_OPTIONS, HeadroomSpec, PoolSpec, Reserve, Spec, parse_duration)

__all__ = ["SpecError", "load_spec", "parse_spec", "read_yaml", "PROVIDER_OPTIONS", "HeadroomSpec",
           "PoolSpec", "Reserve", "Spec", "parse_duration"]
