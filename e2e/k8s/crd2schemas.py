#!/usr/bin/python3
"""Write kubeconform schemas for the custom resources defined by
CustomResourceDefinition YAML files, next to those of openapi2schemas.py:
<kind>-<first label of the group>-<version>.json, all lower case, one per
served version.

Objects that list their properties reject unknown fields (unless the CRD
says x-kubernetes-preserve-unknown-fields), as the API server prunes and
`kubectl apply --validate=strict` rejects them; apiVersion, kind and
metadata are added where the CRD leaves them out.

usage: crd2schemas.py OUT_DIR CRD_YAML...
Needs PyYAML (Debian: python3-yaml), hence /usr/bin/python3.
"""
import json
import os
import sys

import yaml


def closed(node):
    """node with additionalProperties false wherever properties are listed"""
    if isinstance(node, list):
        return [closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {key: closed(value) for key, value in node.items()}
    if ("properties" in result and "additionalProperties" not in result
            and not result.get("x-kubernetes-preserve-unknown-fields")):
        result["additionalProperties"] = False
    return result


def schemas_of(crd):
    """(file name, schema) for every served version of one CRD"""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = closed(version["schema"]["openAPIV3Schema"])
        schema["$schema"] = "http://json-schema.org/schema#"
        props = schema.setdefault("properties", {})
        props["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
        props["kind"] = {"type": "string", "enum": [kind]}
        props.setdefault("metadata", {"type": "object"})
        name = f"{kind}-{group.split('.')[0]}-{version['name']}".lower() + ".json"
        yield name, schema


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out_dir, written = sys.argv[1], 0
    os.makedirs(out_dir, exist_ok=True)
    for path in sys.argv[2:]:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                for name, schema in schemas_of(doc):
                    with open(os.path.join(out_dir, name), "w") as out:
                        json.dump(schema, out)
                    written += 1
    print(f"wrote {written} custom resource schemas to {out_dir}")


if __name__ == "__main__":
    main()
