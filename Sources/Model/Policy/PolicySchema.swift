import IntegrationModel

/// The JSON Schema (draft 2020-12) of IntegrationPolicy documents, made from the settings
/// catalog so it can never disagree with what the decoder accepts.
package enum PolicySchema {
    package static var document: JSONValue {
        var integrations: [String: JSONValue] = [:]
        for integration in Integration.allCases {
            var properties: [String: JSONValue] = [:]
            var groups: [String: [String: JSONValue]] = [:]
            for field in SettingCatalog.fields(.integration(integration)) {
                if let dot = field.name.firstIndex(of: ".") {
                    groups[String(field.name[..<dot]), default: [:]][String(field.name[field.name.index(after: dot)...])] = schema(for: field)
                } else {
                    properties[field.name] = schema(for: field)
                }
            }
            for (group, members) in groups {
                properties[group] = ["type": "object", "additionalProperties": false, "properties": .object(members)]
            }
            properties["serverCertificate"] = [
                "type": "string",
                "description": "A PEM or DER certificate file inside the repository, pinned as the only trust anchor.",
            ]
            properties["clientCertificate"] = [
                "type": "object",
                "description": "A PKCS#12 container on the device (never in git); relative paths are taken from the state directory.",
                "additionalProperties": false,
                "required": ["file"],
                "properties": [
                    "file": ["type": "string"],
                    "passwordFile": ["type": "string"],
                ],
            ]
            integrations[integration.rawValue] = [
                "type": "object",
                "description": .string("\(integration.displayName) (task \(integration.taskName))."),
                "additionalProperties": false,
                "properties": .object(properties),
            ]
        }
        var spec: [String: JSONValue] = [
            "priority": ["type": "integer", "default": 0, "description": "The higher wins, field by field."],
            "mode": ["enum": ["enforce", "observe"], "default": "enforce",
                     "description": "observe: the keys this policy wins are reported, never corrected."],
            "allowRollback": ["type": "boolean", "default": false,
                              "description": "Allow applying this revision although it does not descend from the last applied one."],
            "observe": ["type": "array", "items": ["type": "string"], "description": "Setting paths reported, never corrected."],
            "ignore": ["type": "array", "items": ["type": "string"], "description": "Setting paths neither reported nor corrected."],
            "exceptions": [
                "type": "array",
                "items": [
                    "type": "object", "additionalProperties": false, "required": ["path", "reason", "expires"],
                    "properties": ["path": ["type": "string"], "reason": ["type": "string"], "expires": ["type": "string"]],
                ],
            ],
            "selector": [
                "type": "object",
                "additionalProperties": false,
                "properties": ["matchLabels": ["type": "object", "additionalProperties": ["type": "string"]]],
            ],
        ]
        var proxy: [String: JSONValue] = [:]
        for field in SettingCatalog.app {
            if field.name.hasPrefix("proxy.") {
                proxy[String(field.name.dropFirst("proxy.".count))] = schema(for: field)
            } else {
                spec[field.name] = schema(for: field)
            }
        }
        spec["proxy"] = ["type": "object", "additionalProperties": false, "properties": .object(proxy)]
        spec.merge(integrations) { current, _ in current }
        return [
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://tether.invalid/schemas/integration-policy.schema.json",
            "title": "Tether IntegrationPolicy",
            "type": "object",
            "additionalProperties": false,
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": [
                "apiVersion": ["const": .string(PolicyDecoder.apiVersion)],
                "kind": ["const": .string(PolicyDecoder.kind)],
                "metadata": [
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["name"],
                    "properties": [
                        "name": ["type": "string", "pattern": "^[a-z0-9][a-z0-9.-]*$", "maxLength": 253],
                        "labels": ["type": "object", "additionalProperties": ["type": "string"]],
                        "annotations": ["type": "object", "additionalProperties": ["type": "string"]],
                    ],
                ],
                "spec": ["type": "object", "additionalProperties": false, "properties": .object(spec)],
            ],
        ]
    }

    private static func schema(for field: SettingField) -> JSONValue {
        var schema: [String: JSONValue] = ["description": .string(field.summary + (field.vendorKey.map { " Vendor key: \($0)." } ?? ""))]
        schema["default"] = field.defaultValue.json
        switch field.kind {
        case .bool:
            schema["type"] = "boolean"
        case .integer(let range, _):
            schema["type"] = "integer"
            schema["minimum"] = .number(Double(range.lowerBound))
            if range.upperBound != SettingKind.unbounded { schema["maximum"] = .number(Double(range.upperBound)) }
        case .choice(let words):
            schema["enum"] = .array(words.map(JSONValue.string))
        case .host, .text:
            schema["type"] = "string"
        case .paths:
            schema["type"] = "array"
            schema["minItems"] = 1
            schema["maxItems"] = .number(Double(FolderList.limit))
            schema["uniqueItems"] = true
            schema["items"] = ["type": "string", "pattern": "^/"]
        case .endpoints:
            schema["type"] = "array"
            schema["minItems"] = 1
            schema["items"] = [
                "type": "object",
                "additionalProperties": false,
                "required": ["address", "port"],
                "properties": [
                    "address": ["type": "string"],
                    "port": ["type": "integer", "minimum": 1, "maximum": 65535],
                ],
            ]
        }
        return .object(schema)
    }
}
