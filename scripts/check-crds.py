#!/usr/bin/env python3
"""Checks Istio and prometheus-operator objects against their upstream CRD
schemas, strictly: unknown fields are errors, as `kubectl apply` makes them
by default (server-side field validation).

    check-crds.py FILE...      # YAML files, several documents each

The schemas are the pydantic models generated from the upstream CRDs by the
cloudcoil project (PyPI `cloudcoil-models-istio`, `cloudcoil-models-
prometheus-operator`, pinned in the Makefile; `make setup` installs them
into .venv). The models ignore unknown fields, so this script also compares
each object with the model's own dump of it: a key the model dropped is a
field the CRD does not have. Free-form fields (a WasmPlugin's pluginConfig,
an EnvoyFilter's patch value: `google.protobuf.Struct`) are kept whole by
the models and so are not looked into.

Kinds without a model here (Envoy Gateway's, the built-ins) are listed as
not checked; built-ins are kubernetes-validate's. Exits 1 naming the
object and the field path of every problem.
"""

import sys

import yaml
from pydantic import ValidationError

from cloudcoil.models.istio.extensions import v1alpha1 as istio_extensions
from cloudcoil.models.istio.networking import v1alpha3 as istio_networking
from cloudcoil.models.istio.security import v1 as istio_security
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

MODELS = {
    ("extensions.istio.io/v1alpha1", "WasmPlugin"): istio_extensions.WasmPlugin,
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): istio_networking.EnvoyFilter,
    ("security.istio.io/v1", "PeerAuthentication"): istio_security.PeerAuthentication,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): prometheus_operator.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): prometheus_operator.PrometheusRule,
}

BUILT_IN_GROUPS = ("v1", "apps/v1", "policy/v1", "batch/v1", "rbac.authorization.k8s.io/v1")


def dropped(given, kept, path):
    """The field paths in `given` that the model's dump `kept` lacks."""
    out = []
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            where = f"{path}.{key}" if path else key
            if key not in kept:
                out.append(where)
            else:
                out.extend(dropped(value, kept[key], where))
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (g, k) in enumerate(zip(given, kept)):
            out.extend(dropped(g, k, f"{path}[{i}]"))
    return out


def check(doc):
    """Problems with one object, or None if no model covers its kind."""
    model = MODELS.get((doc.get("apiVersion"), doc.get("kind")))
    if model is None:
        return None
    try:
        obj = model.model_validate(doc)
    except ValidationError as e:
        return [
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        ]
    kept = obj.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"{p}: unknown field" for p in dropped(doc, kept, "")]


def main(paths):
    failed = False
    for path in paths:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            name = f"{path}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            problems = check(doc)
            if problems is None:
                if doc.get("apiVersion") not in BUILT_IN_GROUPS:
                    print(f"{name}: no schema here for {doc.get('apiVersion')}, not checked")
                continue
            for p in problems:
                print(f"{name}: {p}")
                failed = True
            if not problems:
                print(f"{name}: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
