//! JSON Schemas of every connector type and transformation type, for the UI's generated
//! forms (`GET /schemas`).
//!
//! Connector schemas come from the model's one list of connector kinds
//! ([`KINDS`]): each kind's schema is derived from its config type (`schemars`: field names,
//! serde defaults and renames, types, and the `///` docs as help text), and `connector_kinds`
//! lists the kinds, their roles and icons for the builder's palette. Transformation documents are read by hand in
//! the model (not through serde), so their schemas are written here, with every list of
//! choices (operations, operators, validation types, …) taken from the model's constants.
//! The tests parse every schema's examples, and a document filled from every property,
//! with the model's own parser: a property the model does not know fails them.

use std::collections::BTreeMap;

use axum::extract::State;
use serde_json::{Value as Json, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use dagg_model::spec::condition::OPERATORS;
use dagg_model::spec::connectors::{self, ConnectorKind, KINDS};
use dagg_model::spec::transform::{
    AggOp, ArithOp, CastType, FIELD_OPERATIONS, HashAlgorithm, IMPLEMENTED, OnFailure, VALIDATION_TYPES,
};

use crate::AppState;
use crate::auth::Viewer;
use crate::error::{ApiError, ApiPath, ApiResult};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(all_schemas)).routes(routes!(connector_schema)).routes(routes!(transformation_schema))
}

/// Every schema: `{"connector_kinds": [kind, …], "connectors": {type: schema},
/// "transformations": {type: schema}}`.
#[utoipa::path(get, path = "/schemas", tag = "system", security(("bearer" = ["viewer"])),
    responses((status = 200, description = "JSON Schemas (draft 2020-12) of every connector config and transformation type, with help text", body = Object)))]
async fn all_schemas(State(_state): State<AppState>, _auth: Viewer) -> axum::Json<Json> {
    axum::Json(schemas())
}

/// What `GET /schemas` serves.
fn schemas() -> Json {
    json!({"connector_kinds": connector_kinds(), "connectors": connector_schemas(), "transformations": transformation_schemas()})
}

/// The JSON Schema of one connector type's `config`.
#[utoipa::path(get, path = "/schemas/connectors/{connector_type}", tag = "system", security(("bearer" = ["viewer"])),
    params(("connector_type" = String, Path, description = "A connector type, such as file or postgresql")),
    responses((status = 200, description = "The config's JSON Schema", body = Object)))]
async fn connector_schema(State(_state): State<AppState>, _auth: Viewer, ApiPath(t): ApiPath<String>) -> ApiResult<axum::Json<Json>> {
    connectors::kind(&t)
        .and_then(ConnectorKind::schema)
        .map(axum::Json)
        .ok_or_else(|| ApiError::NotFound(format!("no connector type `{t}`; known: {}", KINDS.iter().filter(|k| k.implemented()).map(|k| k.name).collect::<Vec<_>>().join(", "))))
}

/// The JSON Schema of one transformation type.
#[utoipa::path(get, path = "/schemas/transformations/{type}", tag = "system", security(("bearer" = ["viewer"])),
    params(("type" = String, Path, description = "A transformation type, such as field_mapping")),
    responses((status = 200, description = "The transformation's JSON Schema", body = Object)))]
async fn transformation_schema(State(_state): State<AppState>, _auth: Viewer, ApiPath(t): ApiPath<String>) -> ApiResult<axum::Json<Json>> {
    transformation_schemas()
        .remove(&t)
        .map(axum::Json)
        .ok_or_else(|| ApiError::NotFound(format!("no transformation type `{t}`; known: {}", IMPLEMENTED.join(", "))))
}

// ---------------------------------------------------------------------------------------
// Connectors: the model's list of kinds, each with the schema derived from its config type.

/// Every implemented connector kind's config schema, by `connector_type`.
fn connector_schemas() -> BTreeMap<String, Json> {
    KINDS.iter().filter_map(|k| Some((k.name.to_string(), k.schema()?))).collect()
}

/// The connector kinds in the model's order: what the UI's palette shows.
fn connector_kinds() -> Json {
    Json::Array(KINDS.iter().map(ConnectorKind::describe).collect())
}

fn names(list: &[&str]) -> Json {
    Json::Array(list.iter().map(|s| json!(s)).collect())
}

// ---------------------------------------------------------------------------------------
// Transformations: written here, choices from the model.

fn s(desc: &str) -> Json {
    json!({"type": "string", "description": desc})
}

fn field(desc: &str) -> Json {
    json!({"type": "string", "format": "field-path", "description": desc})
}

fn fields(desc: &str) -> Json {
    json!({"type": "array", "items": {"type": "string", "format": "field-path"}, "minItems": 1, "description": desc})
}

fn choice(list: Json, desc: &str) -> Json {
    json!({"type": "string", "enum": list, "description": desc})
}

/// Any JSON value: the form reads its text as JSON, and as a string when it is not JSON.
fn any(desc: &str) -> Json {
    json!({"description": desc, "x-dagg-json": true})
}

/// Shown only when the sibling `key` has one of `values`.
fn when(mut schema: Json, key: &str, values: &[&str]) -> Json {
    schema["x-dagg-show-when"] = json!({key: values});
    schema
}

fn condition_schema() -> Json {
    json!({
        "type": "object",
        "description": "A condition on one field (`all`, `any` and `not` combine conditions in the YAML/JSON view).",
        "properties": {
            "field": field("The field the condition tests (a dotted path such as `address.city`)."),
            "operator": choice(names(OPERATORS), "How the field is compared."),
            "value": when(any("What the field is compared with (a list for `in`/`not_in`, a regex for `matches`)."), "operator",
                &OPERATORS.iter().copied().filter(|o| !o.starts_with("is_")).collect::<Vec<_>>())
        },
        "required": ["field", "operator"]
    })
}

fn object(ty: &str, title: &str, about: &str, props: Json, required: &[&str], examples: Json) -> Json {
    let mut props = props;
    props.as_object_mut().expect("properties").insert("type".into(), json!({"const": ty}));
    let mut req = vec!["type"];
    req.extend_from_slice(required);
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "description": about,
        "type": "object",
        "properties": props,
        "required": req,
        "additionalProperties": false,
        "examples": examples,
    })
}

fn field_operation_schema(ty: &str) -> Json {
    object(
        ty,
        "Field operation",
        "Changes one field in place: case, trim, regex format/replace, rename, cast, round, date format, hash, mask, lookup, default, split.",
        json!({
            "field_name": field("The field changed in place."),
            "operation": choice(names(FIELD_OPERATIONS), "What is done to the field."),
            "parameters": {
                "type": "object",
                "description": "The operation's parameters.",
                "additionalProperties": false,
                "properties": {
                    "to": when(s("`rename`: the new field path. `cast`: one of the cast types."), "operation", &["rename", "cast"]),
                    "regex": when(s("The regular expression searched in the value."), "operation", &["format", "replace"]),
                    "pattern": when(s("`format`: what the value becomes, with `$1`, `${name}` from the match."), "operation", &["format"]),
                    "replacement": when(s("`replace`: what every match becomes (`$1`, `${name}`)."), "operation", &["replace"]),
                    "digits": when(json!({"type": "integer", "description": "`round`: decimals to keep."}), "operation", &["round"]),
                    "input_format": when(s("`date_format`: the strftime format the value is read with (default: RFC 3339 or YYYY-MM-DD)."), "operation", &["date_format"]),
                    "output_format": when(s("`date_format`: the strftime format written."), "operation", &["date_format"]),
                    "timezone": when(s("`date_format`: the IANA time zone the output is written in (e.g. Europe/Paris)."), "operation", &["date_format"]),
                    "algorithm": when(choice(names(HashAlgorithm::NAMES), "`hash`: the digest."), "operation", &["hash"]),
                    "salt": when(s("`hash`: text hashed before the value."), "operation", &["hash"]),
                    "keep_last": when(json!({"type": "integer", "minimum": 0, "description": "`mask`: characters left visible at the end."}), "operation", &["mask"]),
                    "table": when(json!({"type": "object", "description": "`lookup`: value text to replacement.", "x-dagg-json": true}), "operation", &["lookup"]),
                    "default": when(any("`lookup`: the value when the table has no entry (else unchanged)."), "operation", &["lookup"]),
                    "value": when(any("`default`: the value set when the field is missing or null."), "operation", &["default"]),
                    "separator": when(s("`split`: the literal separator."), "operation", &["split"])
                },
                "x-dagg-cast-types": names(CastType::NAMES)
            }
        }),
        &["field_name", "operation"],
        json!([
            {"type": ty, "field_name": "product_name", "operation": "title_case"},
            {"type": ty, "field_name": "price", "operation": "rename", "parameters": {"to": "unit_price"}},
            {"type": ty, "field_name": "phone", "operation": "format", "parameters": {"regex": "(\\d{3})-(\\d{3})-(\\d{4})", "pattern": "($1) $2-$3"}},
            {"type": ty, "field_name": "n", "operation": "replace", "parameters": {"regex": "a", "replacement": "b"}},
            {"type": ty, "field_name": "n", "operation": "round", "parameters": {"digits": 2}},
            {"type": ty, "field_name": "d", "operation": "date_format", "parameters": {"input_format": "%d/%m/%Y", "output_format": "%Y-%m-%d", "timezone": "UTC"}},
            {"type": ty, "field_name": "e", "operation": "hash", "parameters": {"algorithm": "sha256", "salt": "s"}},
            {"type": ty, "field_name": "c", "operation": "mask", "parameters": {"keep_last": 4}},
            {"type": ty, "field_name": "c", "operation": "lookup", "parameters": {"table": {"FR": "France"}, "default": "?"}},
            {"type": ty, "field_name": "c", "operation": "default", "parameters": {"value": 0}},
            {"type": ty, "field_name": "tags", "operation": "split", "parameters": {"separator": ","}}
        ]),
    )
}

fn transformation_schemas() -> BTreeMap<String, Json> {
    let mut m = BTreeMap::new();
    m.insert("field_mapping".into(), field_operation_schema("field_mapping"));
    m.insert("field_operation".into(), field_operation_schema("field_operation"));
    m.insert(
        "field_calculation".into(),
        object(
            "field_calculation",
            "Calculation",
            "Arithmetic over fields, left to right; the result goes to `field_name`.",
            json!({
                "field_name": field("The field the result is written to."),
                "operation": choice(names(ArithOp::NAMES), "The arithmetic."),
                "parameters": {"type": "object", "additionalProperties": false, "description": "The operands.", "properties": {
                    "source_fields": fields("The operands, in order."),
                    "output_field": field("The result's field (the same as `field_name`).")
                }, "required": ["source_fields"]}
            }),
            &["field_name", "operation", "parameters"],
            json!([{"type": "field_calculation", "field_name": "total_price", "operation": "multiply",
                    "parameters": {"source_fields": ["quantity", "price"], "output_field": "total_price"}}]),
        ),
    );
    m.insert(
        "field_addition".into(),
        object(
            "field_addition",
            "Add field",
            "Adds a field (or overwrites it): a literal, `current_timestamp`, `current_date`, `uuid`, or the concatenation of fields.",
            json!({
                "field_name": field("The field added."),
                "value": any("A literal, or `current_timestamp`, `current_date`, `uuid`."),
                "operation": choice(json!(["concat"]), "`concat`: join `source_fields` instead of writing `value`."),
                "parameters": {"type": "object", "additionalProperties": false, "description": "For `concat`.", "properties": {
                    "source_fields": fields("The fields joined; missing or null ones are skipped."),
                    "separator": s("Put between the parts.")
                }, "x-dagg-show-when": {"operation": ["concat"]}}
            }),
            &["field_name"],
            json!([
                {"type": "field_addition", "field_name": "processed_timestamp", "value": "current_timestamp"},
                {"type": "field_addition", "field_name": "full_address", "operation": "concat", "parameters": {"source_fields": ["street", "city"], "separator": ", "}}
            ]),
        ),
    );
    m.insert(
        "field_removal".into(),
        object(
            "field_removal",
            "Remove fields",
            "Drops fields.",
            json!({"field_names": fields("The fields removed.")}),
            &["field_names"],
            json!([{"type": "field_removal", "field_names": ["address"]}]),
        ),
    );
    m.insert(
        "record_filter".into(),
        object(
            "record_filter",
            "Filter",
            "Keeps the records whose condition holds.",
            json!({"condition": condition_schema()}),
            &["condition"],
            json!([{"type": "record_filter", "condition": {"field": "status", "operator": "equals", "value": "completed"}}]),
        ),
    );
    m.insert(
        "field_validation".into(),
        object(
            "field_validation",
            "Validate",
            "Checks a field; a record that fails is rejected (dead letter), dropped, or flagged.",
            json!({
                "field_name": field("The field checked."),
                "validation_type": choice(names(VALIDATION_TYPES), "The check."),
                "parameters": {"type": "object", "additionalProperties": false, "description": "The check's parameters.", "properties": {
                    "pattern": when(s("`regex`: searched in the value's text."), "validation_type", &["regex"]),
                    "min": when(json!({"type": "number", "description": "`range`: the smallest allowed value."}), "validation_type", &["range"]),
                    "max": when(json!({"type": "number", "description": "`range`: the largest allowed value."}), "validation_type", &["range"]),
                    "values": when(json!({"type": "array", "description": "`in_set`: the allowed values.", "x-dagg-json": true}), "validation_type", &["in_set"])
                }},
                "on_failure": choice(names(OnFailure::NAMES), "`reject` (default): to the dead letter; `drop`: counted, not kept; `flag`: kept with `_validation_errors`.")
            }),
            &["field_name", "validation_type"],
            json!([
                {"type": "field_validation", "field_name": "customer_email", "validation_type": "email_format"},
                {"type": "field_validation", "field_name": "a", "validation_type": "range", "parameters": {"min": 1, "max": 2}, "on_failure": "flag"},
                {"type": "field_validation", "field_name": "a", "validation_type": "regex", "parameters": {"pattern": "^x"}},
                {"type": "field_validation", "field_name": "a", "validation_type": "in_set", "parameters": {"values": [1, "x"]}, "on_failure": "drop"}
            ]),
        ),
    );
    m.insert(
        "conditional".into(),
        object(
            "conditional",
            "If / else",
            "Runs the `then` steps on records whose condition holds, the `else` steps on the others.",
            json!({
                "condition": condition_schema(),
                "then": {"type": "array", "items": {"type": "object"}, "description": "Transformations for records that match.", "x-dagg-json": true},
                "else": {"type": "array", "items": {"type": "object"}, "description": "Transformations for the others.", "x-dagg-json": true}
            }),
            &["condition", "then"],
            json!([{"type": "conditional", "condition": {"field": "customer_segment", "operator": "equals", "value": "VIP"},
                    "then": [{"type": "field_addition", "field_name": "discount_rate", "value": 0.15}],
                    "else": [{"type": "field_addition", "field_name": "discount_rate", "value": 0.05}]}]),
        ),
    );
    m.insert(
        "aggregation".into(),
        object(
            "aggregation",
            "Aggregate",
            "Groups records and folds each group into one (at the end of the run, or per tumbling window).",
            json!({
                "group_by_fields": fields("The fields that make a group."),
                "aggregated_fields": {"type": "array", "description": "What each group computes.", "items": {"type": "object", "additionalProperties": false, "properties": {
                    "input_field": field("The field folded (`count` may leave it out)."),
                    "output_field": field("Where the result goes."),
                    "operation": choice(names(AggOp::NAMES), "The fold.")
                }, "required": ["output_field", "operation"]}},
                "include_details": {"type": "boolean", "description": "Adds `details`, the group's input records."},
                "window": {"type": "object", "additionalProperties": false, "description": "A tumbling window instead of one group per run.", "properties": {
                    "type": {"const": "tumbling"},
                    "size_seconds": {"type": "integer", "minimum": 1, "description": "The window's length."},
                    "time_field": field("RFC 3339 text, or seconds since the epoch.")
                }, "required": ["type", "size_seconds", "time_field"]}
            }),
            &["aggregated_fields"],
            json!([{"type": "aggregation", "group_by_fields": ["customer_id"], "aggregated_fields": [
                {"input_field": "amount", "output_field": "total_amount", "operation": "sum"},
                {"output_field": "n", "operation": "count"}], "include_details": false,
                "window": {"type": "tumbling", "size_seconds": 60, "time_field": "t"}}]),
        ),
    );
    m.insert(
        "join".into(),
        object(
            "join",
            "Join",
            "Enriches records from a named entry of the pipeline's `sources`.",
            json!({
                "join_type": choice(json!(["left", "inner"]), "`left` keeps records without a match; `inner` drops them."),
                "primary_key": field("The field in the stream."),
                "foreign_key": field("The field in the join source."),
                "join_source": s("The name of an entry of `sources`."),
                "included_fields": {"type": "array", "items": {"type": "string"}, "description": "Fields copied from the match (default: all but the key)."}
            }),
            &["primary_key", "foreign_key", "join_source"],
            json!([{"type": "join", "join_type": "left", "primary_key": "email", "foreign_key": "email", "join_source": "crm", "included_fields": ["crm_id"]}]),
        ),
    );
    m.insert(
        "record_split".into(),
        object(
            "record_split",
            "Split records",
            "One record per element of an array field.",
            json!({"field_name": field("The array field."), "output_field": field("Where each element goes (default: `field_name`).")}),
            &["field_name"],
            json!([{"type": "record_split", "field_name": "items", "output_field": "item"}]),
        ),
    );
    m.insert(
        "deduplicate".into(),
        object(
            "deduplicate",
            "Deduplicate",
            "One record per key.",
            json!({"key_fields": fields("The fields that make the key."), "keep": choice(json!(["first", "last"]), "`first` passes at once; `last` waits for the end of the run.")}),
            &["key_fields"],
            json!([{"type": "deduplicate", "key_fields": ["id"], "keep": "last"}]),
        ),
    );
    m.insert(
        "script".into(),
        object(
            "script",
            "Script",
            "A Rhai script over `record`.",
            json!({
                "source": {"type": "string", "format": "textarea", "description": "Rhai source; `record` is the record (`record.total = record.a * 2;`)."},
                "max_operations": {"type": "integer", "minimum": 1, "description": "Operations allowed per record (default 100000)."},
                "timeout_ms": {"type": "integer", "minimum": 1, "maximum": 60000, "description": "Milliseconds allowed per record (default 100)."}
            }),
            &["source"],
            json!([{"type": "script", "source": "record.total = record.a * 2;", "max_operations": 1000, "timeout_ms": 50}]),
        ),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagg_model::SpecErrors;
    use serde_json::Map;
    use dagg_model::spec::connector::{Role, parse_connector};
    use dagg_model::spec::transform::parse_transformations;

    /// `s` with its `$ref` (into the root's `$defs`) resolved, its own keys winning.
    fn resolve(root: &Json, s: &Json) -> Json {
        let Some(r) = s.get("$ref").and_then(Json::as_str) else { return s.clone() };
        let mut out = root["$defs"][r.trim_start_matches("#/$defs/")].clone();
        for (k, v) in s.as_object().unwrap() {
            if k != "$ref" {
                out[k] = v.clone();
            }
        }
        out
    }

    /// The choices of an enumeration: `enum`, or `oneOf` of `const`s.
    fn choices(s: &Json) -> Option<Vec<Json>> {
        if let Some(e) = s.get("enum").and_then(Json::as_array) {
            return Some(e.clone());
        }
        s.get("oneOf").and_then(Json::as_array).map(|alts| alts.iter().filter_map(|a| a.get("const").cloned()).collect())
    }

    /// A value of the schema's type, for filling a document from it.
    fn sample(root: &Json, name: &str, s: &Json) -> Json {
        let s = resolve(root, s);
        if let Some(c) = choices(&s) {
            return c[0].clone();
        }
        match s.get("type").and_then(Json::as_str) {
            Some("integer") => json!(1),
            Some("number") => json!(1.5),
            Some("boolean") => json!(false),
            Some("array") => json!(["a"]),
            Some("object") => match s.get("properties").and_then(Json::as_object) {
                Some(props) => Json::Object(props.iter().map(|(k, v)| (k.clone(), sample(root, k, v))).collect()),
                None => json!({"k": "v"}),
            },
            _ if name == "url" || name == "token_url" => json!("http://127.0.0.1:9/x"),
            _ if s.get("maxLength") == Some(&json!(1)) => json!(";"),
            _ => json!("x"),
        }
    }

    #[test]
    fn every_connector_field_is_one_the_model_reads() {
        let schemas = connector_schemas();
        assert_eq!(schemas.len(), KINDS.iter().filter(|k| k.implemented()).count());
        for (t, schema) in &schemas {
            let props = schema["properties"].as_object().unwrap();
            assert!(props.len() >= 4, "{t}: {props:?}");
            assert!(props.values().filter(|p| p.get("description").is_some()).count() >= props.len() - 1, "{t}: help text from the docs");
            // Only the required fields: the model accepts them as a connector of either role.
            let required: Map<String, Json> =
                schema["required"].as_array().into_iter().flatten().map(|k| (k.as_str().unwrap().to_string(), sample(schema, k.as_str().unwrap(), &props[k.as_str().unwrap()]))).collect();
            let mut errs = SpecErrors::new();
            parse_connector(&json!({"connector_type": t, "config": required}), "c", Role::Any, &mut errs);
            assert!(errs.is_empty(), "{t}: {:?}", errs.iter().map(|e| e.to_string()).collect::<Vec<_>>());
            // Every field: rules across fields may complain, but no field is unknown and no type is wrong.
            let full = sample(schema, "config", schema);
            let mut errs = SpecErrors::new();
            parse_connector(&json!({"connector_type": t, "config": full}), "c", Role::Any, &mut errs);
            for e in errs.iter() {
                assert!(!e.message.contains("unknown field") && !e.message.contains("invalid type"), "{t}: {e}");
            }
        }
        let file = &schemas["file"];
        assert_eq!(choices(&resolve(file, &file["properties"]["format"])).unwrap(), vec![json!("json"), json!("jsonl"), json!("csv"), json!("xml"), json!("parquet")]);
        assert_eq!(file["required"], json!(["path", "format"]));
        assert!(file["properties"]["path"]["description"].as_str().unwrap().contains("glob"));
        assert_eq!(schemas["postgresql"]["properties"]["password"]["format"], "password");
        let rest = &schemas["rest_api"];
        assert_eq!(resolve(rest, &rest["properties"]["pagination"])["properties"]["type"]["enum"][0], "none");
        assert_eq!(schemas["postgresql"]["properties"]["query"]["x-dagg-role"], "source");
        let kafka = &schemas["kafka"];
        assert_eq!(choices(&resolve(kafka, &kafka["properties"]["format"])).unwrap(), vec![json!("json"), json!("text")]);
        assert_eq!(schemas["nats"]["properties"]["password"]["format"], "password");
        assert!(schemas["aws_s3"]["required"].as_array().unwrap().contains(&json!("bucket_name")));
    }

    #[test]
    fn the_palette_lists_every_kind_with_a_schema() {
        let all = schemas();
        let kinds = all["connector_kinds"].as_array().unwrap();
        assert_eq!(kinds.len(), KINDS.len());
        for k in kinds {
            let t = k["connector_type"].as_str().unwrap();
            assert_eq!(all["connectors"].get(t).is_some(), k["implemented"] == json!(true), "{t}");
            assert!(!k["roles"].as_array().unwrap().is_empty(), "{t}");
            assert!(!k["icon"].as_str().unwrap().is_empty(), "{t}");
        }
    }

    /// Every credential the schemas mark write-only is one the API masks in its responses:
    /// a config holding a marker at each of a kind's derived secret paths shows none.
    #[test]
    fn every_secret_field_in_the_schemas_is_masked_by_the_api() {
        use dagg_model::spec::connector::secret_paths::{Step, secret_paths};
        let mut count = 0;
        for k in dagg_model::spec::connectors::KINDS.iter().filter(|k| k.implemented()) {
            for p in secret_paths(k.name) {
                let mut v = json!("marker-secret");
                for step in p.0.iter().rev() {
                    v = match step {
                        Step::Key(key) => json!({ key.clone(): v }),
                        Step::AnyKey => json!({"Any-Name": v}),
                        Step::AnyItem => json!([v]),
                    };
                }
                let shown = crate::mask::masked_config(k.name, &v).to_string();
                assert!(!shown.contains("marker-secret"), "{}: `{p}` is a secret in the schemas but the API shows {shown}", k.name);
                count += 1;
            }
        }
        assert!(count >= 12, "{count}");
    }

    /// `GET /schemas` as golden files, one per connector and one for the rest, so a change in
    /// what the forms are built from shows in review. `UPDATE_GOLDEN=1` rewrites them.
    #[test]
    fn schemas_match_their_golden_files() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/schemas");
        let all = schemas();
        let mut files: Vec<(String, Json)> = all["connectors"].as_object().unwrap().iter().map(|(t, s)| (format!("connector-{t}.json"), s.clone())).collect();
        files.push(("connector_kinds.json".into(), all["connector_kinds"].clone()));
        files.push(("transformations.json".into(), all["transformations"].clone()));
        let update = std::env::var_os("UPDATE_GOLDEN").is_some();
        if update {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let mut stale = Vec::new();
        for (name, v) in &files {
            let path = dir.join(name);
            let text = serde_json::to_string_pretty(v).unwrap() + "\n";
            if update {
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(name.clone());
            }
        }
        let known: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
        let extra: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| !known.contains(&n.as_str())).collect();
        assert!(stale.is_empty() && extra.is_empty(), "GET /schemas differs from api/tests/golden/schemas in {stale:?} (extra files: {extra:?}); if the change is meant, run with UPDATE_GOLDEN=1 and review the diff");
    }

    #[test]
    fn every_transformation_type_has_a_schema_whose_examples_parse() {
        let schemas = transformation_schemas();
        let keys: Vec<&str> = schemas.keys().map(String::as_str).collect();
        let mut implemented = IMPLEMENTED.to_vec();
        implemented.sort();
        assert_eq!(keys, implemented);
        for (t, schema) in &schemas {
            let examples = schema["examples"].clone();
            let mut errs = SpecErrors::new();
            parse_transformations(&examples, "transformations", &mut errs);
            assert!(errs.is_empty(), "{t}: {:?}", errs.iter().map(|e| e.to_string()).collect::<Vec<_>>());
            // Every property the schema offers (and every parameter) is used by an example.
            let used = |key: &str, inner: Option<&str>| {
                examples.as_array().unwrap().iter().any(|e| match inner {
                    None => e.get(key).is_some(),
                    Some(p) => e.get(key).and_then(|o| o.get(p)).is_some(),
                })
            };
            for (k, v) in schema["properties"].as_object().unwrap() {
                assert!(used(k, None) || k == "else" || k == "operation" && t == "field_addition" && used("parameters", None), "{t}: {k} in no example");
                if let Some(params) = v.get("properties").and_then(Json::as_object) {
                    for p in params.keys() {
                        assert!(used(k, Some(p)), "{t}: {k}.{p} in no example");
                    }
                }
            }
            for r in schema["required"].as_array().unwrap() {
                assert!(schema["properties"].get(r.as_str().unwrap()).is_some(), "{t}: required {r}");
            }
        }
        assert_eq!(schemas["record_filter"]["properties"]["condition"]["properties"]["operator"]["enum"], names(OPERATORS));
    }
}
