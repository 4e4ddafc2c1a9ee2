//! `GET /v1/openapi.json`: the OpenAPI 3 document of the admin API, `docs/openapi.json`, compiled in.
//!
//! The document is written by hand (it carries descriptions, parameters and schemas a route table cannot), so
//! the tests below keep it true: it must describe exactly the routes of [`super::ROUTES`] — no route
//! missing, none extra — with the same access (public operations have no security requirement, the others
//! name the least role in `x-tandem-access`) and every path parameter declared. `tests/auth.rs` calls every
//! route on a real node and checks each reaches a handler.

use hyper::{Response, StatusCode};

use super::routes::Call;
use crate::http::{ApiError, Body, text_response};

/// The document, as served.
pub const OPENAPI_JSON: &str = include_str!("../../../docs/openapi.json");

/// `GET /v1/openapi.json`.
pub async fn document(_call: Call<'_>) -> Result<Response<Body>, ApiError> {
    Ok(text_response(StatusCode::OK, "application/json", OPENAPI_JSON))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::auth::Access;
    use crate::node::api::ROUTES;

    fn operations(document: &Value) -> BTreeSet<(String, String)> {
        let mut found = BTreeSet::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
        found
    }

    #[test]
    fn the_document_describes_exactly_the_route_table() {
        let document: Value = serde_json::from_str(OPENAPI_JSON).expect("docs/openapi.json is JSON");
        assert!(document["openapi"].as_str().unwrap().starts_with("3."));
        let described = operations(&document);
        let routed: BTreeSet<(String, String)> =
            ROUTES.iter().map(|r| (r.method.to_string(), r.pattern.to_string())).collect();
        let missing: Vec<_> = routed.difference(&described).collect();
        let extra: Vec<_> = described.difference(&routed).collect();
        assert!(missing.is_empty(), "routes missing from docs/openapi.json: {missing:?}");
        assert!(extra.is_empty(), "docs/openapi.json describes routes that do not exist: {extra:?}");
    }

    #[test]
    fn access_and_path_parameters_agree_with_the_route_table() {
        let document: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        for route in ROUTES {
            let operation = &document["paths"][route.pattern][route.method.to_lowercase()];
            let access = operation["x-tandem-access"].as_str().unwrap_or("missing");
            let expected = format!("{:?}", route.access).to_lowercase();
            assert_eq!(access, expected, "{} {}", route.method, route.pattern);
            let public = operation["security"].as_array().is_some_and(|s| s.is_empty());
            assert_eq!(public, route.access == Access::Public, "{} {} security", route.method, route.pattern);
            assert!(operation["summary"].is_string(), "{} {} has no summary", route.method, route.pattern);
            for segment in route.pattern.split('/').filter(|s| s.starts_with('{')) {
                let name = segment.trim_matches(|c| c == '{' || c == '}');
                let declared = operation["parameters"].as_array().is_some_and(|parameters| {
                    parameters.iter().any(|p| p["in"] == "path" && p["name"] == name && p["required"] == true)
                });
                assert!(declared, "{} {}: path parameter {name} not declared", route.method, route.pattern);
            }
        }
    }

    #[test]
    fn every_schema_reference_resolves() {
        let document: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        fn walk(value: &Value, document: &Value) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        let name = target.strip_prefix("#/components/schemas/").expect("local schema ref");
                        assert!(document["components"]["schemas"][name].is_object(), "unresolved {target}");
                    }
                    map.values().for_each(|v| walk(v, document));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, document)),
                _ => {}
            }
        }
        walk(&document, &document);
    }
}
