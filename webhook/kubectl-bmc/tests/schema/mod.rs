//! Checks a document against the real definitions vendored in `testdata/schemas` (see its
//! README for where each comes from):
//!
//! * a CRD's structural OpenAPI v3 schema, the subset kube-apiserver enforces on create
//!   (k8s.io/apiextensions-apiserver `pkg/apiserver/schema` and `validation`): `type`,
//!   `properties` (an unknown field is an error here: the API server would prune it silently,
//!   which for a BMC address or a Secret name is as bad as a refusal), `additionalProperties`,
//!   `x-kubernetes-preserve-unknown-fields`, `required`, `enum`, `pattern` (ECMA-262, not
//!   anchored), `minLength`/`maxLength`, `minimum`/`maximum`, `minItems`/`maxItems`, `items`,
//!   `nullable`. The root `metadata` is ObjectMeta, which the API server checks itself: here a
//!   name and a namespace that are DNS labels/subdomains. `format` and CEL rules are not
//!   checked (none of the vendored schemas puts one on a field we write).
//! * Go struct definitions (openshift/installer `pkg/types/baremetal/platform.go`), the way the
//!   installer reads install-config.yaml: unknown fields refused (installer
//!   `pkg/asset/installconfig`: `yaml.UnmarshalStrict(file.Data, config,
//!   yaml.DisallowUnknownFields)`), field names from `json:` tags,
//!   `validate:"required"` fields present and not empty, and a named string type's values from
//!   its `const` block.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/schemas")
        .join(name)
}

/// The `openAPIV3Schema` of `version` in a vendored CRD file.
pub fn crd_schema(file: &str, version: &str) -> Value {
    let text = std::fs::read_to_string(testdata(file)).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let crd = docs
        .into_iter()
        .find(|d| d["kind"] == "CustomResourceDefinition")
        .expect("a CRD in the file");
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .expect("the version")["schema"]["openAPIV3Schema"]
        .clone()
}

/// Every violation of `schema` by the custom resource `doc`, each with its JSON path.
pub fn validate_crd(schema: &Value, doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check_metadata(&doc["metadata"], &mut errors);
    let mut without_metadata = doc.clone();
    if let Some(o) = without_metadata.as_object_mut() {
        o.remove("metadata");
    }
    check(schema, &without_metadata, "", &mut errors);
    errors
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn check_metadata(meta: &Value, errors: &mut Vec<String>) {
    match meta["name"].as_str() {
        Some(name) if name.len() <= 253 && name.split('.').all(is_dns_label) => {}
        other => errors.push(format!(".metadata.name: {other:?} is not a DNS subdomain")),
    }
    if let Some(ns) = meta.get("namespace")
        && !ns.as_str().is_some_and(is_dns_label)
    {
        errors.push(format!(".metadata.namespace: {ns} is not a DNS label"));
    }
}

fn type_ok(kind: &str, value: &Value) -> bool {
    match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => false,
    }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema["nullable"] != true {
            errors.push(format!("{path}: null is not allowed"));
        }
        return;
    }
    if let Some(kind) = schema["type"].as_str()
        && !type_ok(kind, value)
    {
        errors.push(format!("{path}: {value} is not of type {kind}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema["minLength"].as_u64()
            && len < min
        {
            errors.push(format!("{path}: shorter than {min}"));
        }
        if let Some(max) = schema["maxLength"].as_u64()
            && len > max
        {
            errors.push(format!("{path}: longer than {max}"));
        }
        if let Some(pattern) = schema["pattern"].as_str() {
            let re = regex::Regex::new(pattern).expect("the CRD's pattern compiles");
            if !re.is_match(s) {
                errors.push(format!("{path}: {s:?} does not match {pattern:?}"));
            }
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64()
            && n < min
        {
            errors.push(format!("{path}: below the minimum {min}"));
        }
        if let Some(max) = schema["maximum"].as_f64()
            && n > max
        {
            errors.push(format!("{path}: above the maximum {max}"));
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(min) = schema["minItems"].as_u64()
            && (items.len() as u64) < min
        {
            errors.push(format!("{path}: fewer than {min} items"));
        }
        if let Some(max) = schema["maxItems"].as_u64()
            && (items.len() as u64) > max
        {
            errors.push(format!("{path}: more than {max} items"));
        }
        for (i, item) in items.iter().enumerate() {
            check(&schema["items"], item, &format!("{path}[{i}]"), errors);
        }
    }
    if let Some(object) = value.as_object() {
        for key in schema["required"].as_array().into_iter().flatten() {
            let key = key.as_str().unwrap_or_default();
            if !object.contains_key(key) {
                errors.push(format!("{path}: required field {key:?} is missing"));
            }
        }
        let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
        for (key, field) in object {
            let at = format!("{path}.{key}");
            if let Some(sub) = schema["properties"].get(key) {
                check(sub, field, &at, errors);
            } else if schema["additionalProperties"].is_object() {
                check(&schema["additionalProperties"], field, &at, errors);
            } else if !preserve {
                errors.push(format!(
                    "{at}: unknown field (the API server would prune it)"
                ));
            }
        }
    }
}

/// One field of a Go struct, from its `json:` tag.
#[derive(Debug, Clone)]
pub struct GoField {
    pub go_type: String,
    pub required: bool,
}

/// Go type definitions of one file: structs (json name -> field) and the values of named
/// string types declared in `const` blocks.
#[derive(Debug, Default)]
pub struct GoTypes {
    pub structs: BTreeMap<String, BTreeMap<String, GoField>>,
    pub string_values: BTreeMap<String, Vec<String>>,
}

/// A reader for gofmt'ed type declarations: enough for `platform.go`, not a Go parser.
pub fn go_types(file: &str) -> GoTypes {
    let text = std::fs::read_to_string(testdata(file)).unwrap();
    let mut types = GoTypes::default();
    let mut current: Option<String> = None;
    let mut in_const = false;
    let field_re =
        regex::Regex::new(r#"^\t(\w+)\s+(\S+)\s+`json:"([^"]*)"(?:\s+validate:"([^"]*)")?`"#)
            .unwrap();
    let const_re = regex::Regex::new(r#"^\t(\w+)\s+(\w+)\s+=\s+"([^"]*)""#).unwrap();
    let struct_re = regex::Regex::new(r"^type (\w+) struct \{").unwrap();
    for line in text.lines() {
        if let Some(c) = struct_re.captures(line) {
            current = Some(c[1].to_owned());
            types.structs.entry(c[1].to_owned()).or_default();
            continue;
        }
        if line == "const (" {
            in_const = true;
            continue;
        }
        if line.starts_with(')') {
            in_const = false;
        }
        if line.starts_with('}') {
            current = None;
        }
        if in_const && let Some(c) = const_re.captures(line) {
            types
                .string_values
                .entry(c[2].to_owned())
                .or_default()
                .push(c[3].to_owned());
        }
        if let Some(name) = &current
            && let Some(c) = field_re.captures(line)
        {
            let mut tag = c[3].split(',');
            let json_name = tag.next().unwrap_or_default().to_owned();
            let required = c
                .get(4)
                .is_some_and(|v| v.as_str().split(',').any(|t| t == "required"));
            types.structs.get_mut(name).unwrap().insert(
                json_name,
                GoField {
                    go_type: c[2].to_owned(),
                    required,
                },
            );
        }
    }
    types
}

impl GoTypes {
    /// Every way `value` would not decode as `type_name` (strictly) or not pass `validate`.
    pub fn validate(&self, type_name: &str, value: &Value, path: &str) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(type_name, value, path, &mut errors);
        errors
    }

    fn check(&self, go_type: &str, value: &Value, path: &str, errors: &mut Vec<String>) {
        let go_type = go_type.trim_start_matches('*');
        if let Some(element) = go_type.strip_prefix("[]") {
            match value.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check(element, item, &format!("{path}[{i}]"), errors);
                    }
                }
                None => errors.push(format!("{path}: {value} is not a list")),
            }
            return;
        }
        match go_type {
            "string" => {
                if !value.is_string() {
                    errors.push(format!("{path}: {value} is not a string"));
                }
            }
            "bool" => {
                if !value.is_boolean() {
                    errors.push(format!("{path}: {value} is not a boolean"));
                }
            }
            "int32" | "int64" | "int" => {
                if !value.is_i64() {
                    errors.push(format!("{path}: {value} is not an integer"));
                }
            }
            named if self.string_values.contains_key(named) => {
                let allowed = &self.string_values[named];
                if !value
                    .as_str()
                    .is_some_and(|s| allowed.iter().any(|a| a == s))
                {
                    errors.push(format!(
                        "{path}: {value} is not one of {allowed:?} ({named})"
                    ));
                }
            }
            named if self.structs.contains_key(named) => {
                let fields = &self.structs[named];
                let Some(object) = value.as_object() else {
                    errors.push(format!("{path}: {value} is not an object ({named})"));
                    return;
                };
                for (key, field_value) in object {
                    match fields.get(key) {
                        Some(field) => self.check(
                            &field.go_type,
                            field_value,
                            &format!("{path}.{key}"),
                            errors,
                        ),
                        None => errors.push(format!(
                            "{path}.{key}: unknown field of {named} (the installer refuses it)"
                        )),
                    }
                }
                for (key, field) in fields {
                    let empty = match object.get(key) {
                        None | Some(Value::Null) => true,
                        Some(Value::String(s)) => s.is_empty(),
                        Some(_) => false,
                    };
                    if field.required && empty {
                        errors.push(format!("{path}.{key}: required by {named}"));
                    }
                }
            }
            // A type from another file (RootDeviceHints, apiextv1.JSON, ...): we write none.
            other => errors.push(format!(
                "{path}: type {other} is not in the vendored file, so the value cannot be checked"
            )),
        }
    }
}
