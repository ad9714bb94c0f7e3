"""The spec's JSON Schema, for editors (a YAML language server) and other tools.

It is generated from the same models `validate` uses, so the two cannot drift. `provider` is
one of the providers' option sets, chosen by its `name`.
"""
from __future__ import annotations

from typing import Any

from .load import API_VERSION
from .model import PROVIDER_OPTIONS, Spec

# The file name `init`'s modeline points at: `provision schema > provision-spec-v1.schema.json`
# beside the spec makes an editor check the spec as it is typed.
SCHEMA_FILE = "provision-spec-v1.schema.json"
MODELINE = f"# yaml-language-server: $schema={SCHEMA_FILE}"


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a spec file, as `validate` reads it."""
    schema = Spec.model_json_schema(mode="validation")
    defs = schema.setdefault("$defs", {})
    variants = []
    for name, options in PROVIDER_OPTIONS.items():
        sub = options.model_json_schema(mode="validation")
        defs.update(sub.pop("$defs", {}))
        sub["title"] = f"provider {name}"
        sub["properties"] = {"name": {"const": name, "description": "the provider"}, **sub["properties"]}
        sub["required"] = ["name", *sub.get("required", [])]
        variants.append(sub)
    properties = schema["properties"]
    properties["provider"] = {"description": properties["provider"].get("description", ""),
                              "oneOf": variants}
    schema["properties"] = {"apiVersion": {"const": API_VERSION,
                                           "description": "the spec contract this file follows"},
                            **properties}
    defs.pop("ProviderSpec", None)  # replaced by the variants above
    schema["title"] = "provision cluster spec (version 1)"
    schema.pop("description", None)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
