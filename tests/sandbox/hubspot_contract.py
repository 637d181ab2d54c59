"""Checks a JSON body against hubspot-api-client's models: required fields, enums, no unknown keys."""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

import hubspot.crm.associations.v4.api_client as v4_client
import hubspot.crm.associations.v4.models as v4_models
import hubspot.crm.associations.v4.schema.api_client as v4_schema_client
import hubspot.crm.associations.v4.schema.models as v4_schema_models
import hubspot.crm.contacts.api_client as contacts_client
import hubspot.crm.contacts.models as contacts_models
import hubspot.crm.properties.api_client as properties_client
import hubspot.crm.properties.models as properties_models

_FAMILIES: dict[str, tuple[ModuleType, Any]] = {
    "contacts": (contacts_models, contacts_client.ApiClient),
    "properties": (properties_models, properties_client.ApiClient),
    "associations": (v4_models, v4_client.ApiClient),
    "association_schema": (v4_schema_models, v4_schema_client.ApiClient),
}
_PRIMITIVES = {"str", "int", "float", "bool", "object", "datetime", "date"}


def fits(family: str, model: str, data: Any, *, extra_keys: frozenset[str] = frozenset()) -> Any:
    """Deserialize `data` as the SDK's `model` (which validates required fields and enums) and
    fail on any key the model does not declare (except `extra_keys`). Returns the model object."""
    models, client_class = _FAMILIES[family]
    _no_unknown_keys(models, model, data, "$", extra_keys)
    client = client_class()
    client.configuration.client_side_validation = True  # off by default in the SDK
    return client._ApiClient__deserialize(data, model)


def _no_unknown_keys(
    models: ModuleType, kind: str, data: Any, where: str, extra: frozenset[str]
) -> None:
    if data is None or kind in _PRIMITIVES:
        return
    if kind.startswith("list["):
        inner = re.fullmatch(r"list\[(.*)\]", kind)
        assert inner and isinstance(data, list), f"{where}: expected a list"
        for i, item in enumerate(data):
            _no_unknown_keys(models, inner.group(1), item, f"{where}[{i}]", extra)
        return
    if kind.startswith("dict["):
        inner = re.fullmatch(r"dict\(?\[[^,]*, (.*)\]", kind)
        assert inner and isinstance(data, dict), f"{where}: expected an object"
        for key, item in data.items():
            _no_unknown_keys(models, inner.group(1), item, f"{where}.{key}", extra)
        return
    cls = getattr(models, kind)
    assert isinstance(data, dict), f"{where}: expected an object for {kind}"
    known = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    unknown = set(data) - set(known) - extra
    assert not unknown, f"{where}: {kind} has no {sorted(unknown)}"
    for key, item in data.items():
        if key in known:
            _no_unknown_keys(models, cls.openapi_types[known[key]], item, f"{where}.{key}", extra)
