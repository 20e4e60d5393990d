#!/usr/bin/env python3
"""Turn a Kubernetes OpenAPI v2 document (api/openapi-spec/swagger.json of
k8s.io/kubernetes) into the standalone JSON schemas kubeconform reads with
  -schema-location 'DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json'
one file per group/version/kind: <kind>-<version>.json for the core group,
<kind>-<first label of the group>-<version>.json otherwise, all lower case.

Every $ref is inlined, so each file stands alone; a type that refers to
itself (JSONSchemaProps) becomes "anything" at the point of recursion.
Objects that list their properties reject unknown fields, so a misspelt
field in a manifest is an error, as it is for `kubectl apply --validate`.

usage: openapi2schemas.py SWAGGER_JSON OUT_DIR
"""
import json
import os
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        definitions = json.load(f)["definitions"]
    out_dir = sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)

    def expand(node, seen):
        if isinstance(node, list):
            return [expand(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            return {} if name in seen else expand(definitions[name], seen | {name})
        result = {}
        for key, value in node.items():
            if key == "format" and value == "int-or-string":
                continue
            result[key] = expand(value, seen)
        if node.get("format") == "int-or-string":
            result.pop("type", None)
            result["oneOf"] = [{"type": "string"}, {"type": "integer"}]
        if "properties" in result and "additionalProperties" not in result:
            result["additionalProperties"] = False
        return result

    written = 0
    for name, definition in sorted(definitions.items()):
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            group, version, kind = gvk.get("group", ""), gvk["version"], gvk["kind"]
            schema = expand(definition, frozenset([name]))
            schema["$schema"] = "http://json-schema.org/schema#"
            api_version = f"{group}/{version}" if group else version
            props = schema.setdefault("properties", {})
            props["apiVersion"] = {"type": "string", "enum": [api_version]}
            props["kind"] = {"type": "string", "enum": [kind]}
            suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
            path = os.path.join(out_dir, (kind + suffix).lower() + ".json")
            with open(path, "w") as f:
                json.dump(schema, f)
            written += 1
    print(f"wrote {written} schemas to {out_dir}")


if __name__ == "__main__":
    main()
