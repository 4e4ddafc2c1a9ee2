//! The admin API's route table: every endpoint, the access it needs, and a one-line summary.
//!
//! The table is the single list of what the API offers. Authorization looks up the route of a request here
//! before anything else runs (so an unknown path is a 404 and a known one without the right token is a
//! 401/403, whatever its handler would do), and a test checks that the OpenAPI document served at
//! `/v1/openapi.json` describes exactly these routes and that every one of them reaches a handler.

use hyper::Method;

use crate::auth::Access;

/// One endpoint: method, path pattern (`{name}` matches one non-empty segment), access, summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub pattern: &'static str,
    pub access: Access,
    pub summary: &'static str,
}

const fn route(method: &'static str, pattern: &'static str, access: Access, summary: &'static str) -> Route {
    Route { method, pattern, access, summary }
}

/// Every endpoint of the admin API.
pub const ROUTES: &[Route] = &[
    route("GET", "/livez", Access::Public, "Liveness: the process answers"),
    route("GET", "/readyz", Access::Public, "Readiness: the node is a member of a cluster"),
    route("GET", "/metrics", Access::Read, "Prometheus metrics (text format)"),
    route("GET", "/v1/openapi.json", Access::Read, "This API's OpenAPI 3 document"),
    route("GET", "/v1/node", Access::Read, "Who this node is (name, id, role, addresses)"),
    route("GET", "/v1/status", Access::Read, "Node, Raft, cluster, terminal and backup status"),
    route("GET", "/v1/docs/{collection}", Access::Read, "List the documents of a collection"),
    route("GET", "/v1/docs/{collection}/{id}", Access::Read, "One document, now or at a revision"),
    route("PUT", "/v1/docs/{collection}/{id}", Access::Operate, "Create or replace a document"),
    route("DELETE", "/v1/docs/{collection}/{id}", Access::Operate, "Delete a document"),
    route("POST", "/v1/changes", Access::Operate, "Apply a change set atomically"),
    route("GET", "/v1/history", Access::Read, "Events: who changed what, filtered"),
    route("GET", "/v1/export", Access::Read, "The whole configuration (now or at a revision) as JSON"),
    route("GET", "/v1/diff", Access::Read, "Differences between two revisions"),
    route("POST", "/v1/revert", Access::Operate, "Make the configuration equal to a past revision"),
    route("POST", "/v1/undo", Access::Operate, "Apply the inverse of one change set"),
    route("POST", "/v1/import", Access::Operate, "Make the configuration equal to an export"),
    route("GET", "/v1/watch", Access::Read, "Stream events from a revision on (NDJSON or SSE)"),
    route("GET", "/v1/backup", Access::Operate, "Stream a backup of the store"),
    route("POST", "/v1/blobs", Access::Operate, "Upload a blob (streamed)"),
    route("GET", "/v1/blobs/{sha256}", Access::Read, "A blob's size, if the store has it"),
    route("GET", "/v1/blobs/{sha256}/data", Access::Read, "A blob's bytes"),
    route("GET", "/v1/cluster/servers", Access::Read, "The cluster's members"),
    route("POST", "/v1/cluster/servers", Access::Admin, "Add a member"),
    route("DELETE", "/v1/cluster/servers/{name}", Access::Admin, "Remove a member"),
];

/// What a request's method and path matched.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(&'static Route),
    /// The path exists with other methods.
    WrongMethod(Vec<&'static str>),
    NotFound,
}

/// Finds the route of a request.
pub fn lookup(method: &Method, path: &str) -> Lookup {
    let segments = split(path);
    let mut methods = Vec::new();
    for route in ROUTES {
        if matches(route.pattern, &segments) {
            if route.method == method.as_str() {
                return Lookup::Found(route);
            }
            methods.push(route.method);
        }
    }
    if methods.is_empty() { Lookup::NotFound } else { Lookup::WrongMethod(methods) }
}

fn split(path: &str) -> Vec<&str> {
    path.trim_matches('/').split('/').collect()
}

fn matches(pattern: &str, segments: &[&str]) -> bool {
    let parts = split(pattern);
    parts.len() == segments.len()
        && parts
            .iter()
            .zip(segments)
            .all(|(part, segment)| if part.starts_with('{') { !segment.is_empty() } else { part == segment })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_matches_patterns_methods_and_nothing_else() {
        let Lookup::Found(route) = lookup(&Method::PUT, "/v1/docs/terminals/t1") else { panic!() };
        assert_eq!(route.pattern, "/v1/docs/{collection}/{id}");
        assert_eq!(route.access, Access::Operate);
        assert_eq!(
            lookup(&Method::PATCH, "/v1/docs/terminals/t1"),
            Lookup::WrongMethod(vec!["GET", "PUT", "DELETE"])
        );
        assert_eq!(lookup(&Method::GET, "/v1/docs/terminals/t1/extra"), Lookup::NotFound);
        assert_eq!(lookup(&Method::GET, "/v1/docs//t1"), Lookup::NotFound);
        assert!(matches!(lookup(&Method::GET, "/livez"), Lookup::Found(_)));
    }

    #[test]
    fn every_route_is_listed_once() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.pattern == b.pattern),
                    "{} {} twice",
                    a.method,
                    a.pattern
                );
            }
        }
    }
}
