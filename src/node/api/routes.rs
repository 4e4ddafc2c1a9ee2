//! The shape of the admin API's route table ([`super::ROUTES`]): a [`Route`] names its method, its path
//! pattern, the access it needs, a one-line summary and its [`Handler`]; [`lookup`] finds the route of a
//! request.
//!
//! The table is the single list of what the API offers: authorization looks the request's route up before
//! anything else runs (so an unknown path is a 404 and a known one without the right token is a 401/403,
//! whatever its handler would do), and the same route's handler answers it. A test checks that the OpenAPI
//! document served at `/v1/openapi.json` describes exactly these routes; `tests/auth.rs` calls every one.

use std::future::Future;
use std::pin::Pin;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use super::ApiState;
use crate::auth::{Access, Caller};
use crate::http::{ApiError, Body};

/// What a handler is given: the shared state, the authorized caller, the request, the values of the
/// pattern's `{name}` segments (in order) and the decoded query.
#[derive(Debug)]
pub struct Call<'a> {
    pub state: &'a ApiState,
    pub caller: Caller,
    pub request: Request<Incoming>,
    pub params: Vec<String>,
    pub query: Vec<(String, String)>,
}

impl Call<'_> {
    /// The value of the pattern's `index`th `{name}` segment (the route matched, so it is there).
    pub fn param(&self, index: usize) -> String {
        self.params.get(index).cloned().unwrap_or_default()
    }
}

/// What a handler returns: its response, later.
pub type Reply<'a> = Pin<Box<dyn Future<Output = Result<Response<Body>, ApiError>> + Send + 'a>>;

/// A route's handler: `async fn(Call<'_>) -> Result<Response<Body>, ApiError>`, boxed by the `handler!` macro.
pub type Handler = for<'a> fn(Call<'a>) -> Reply<'a>;

/// `handler!(module::function)`: an `async fn(Call<'_>) -> Result<Response<Body>, ApiError>` as a
/// [`Handler`] for the route table.
macro_rules! handler {
    ($function:path) => {{
        fn handler(call: $crate::node::api::routes::Call<'_>) -> $crate::node::api::routes::Reply<'_> {
            Box::pin($function(call))
        }
        handler as $crate::node::api::routes::Handler
    }};
}
pub(crate) use handler;

/// One endpoint: method, path pattern (`{name}` matches one non-empty segment), access, summary, handler.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub pattern: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// Only nodes that hold the configuration answer it: a witness refuses (403 `witness`).
    pub serves_configuration: bool,
    pub handler: Handler,
}

/// Routes are the same route when method and pattern are (handlers are not compared).
impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.method == other.method && self.pattern == other.pattern
    }
}

impl Eq for Route {}

/// A route every node answers.
pub const fn route(
    method: &'static str,
    pattern: &'static str,
    access: Access,
    summary: &'static str,
    handler: Handler,
) -> Route {
    Route { method, pattern, access, summary, serves_configuration: false, handler }
}

/// A route only a node with the configuration answers (a witness refuses it).
pub const fn serves_configuration(route: Route) -> Route {
    Route { serves_configuration: true, ..route }
}

impl Route {
    /// The values of the pattern's `{name}` segments in `path` (which matched the pattern).
    pub fn params(&self, path: &str) -> Vec<String> {
        split(self.pattern)
            .iter()
            .zip(split(path))
            .filter(|(part, _)| part.starts_with('{'))
            .map(|(_, segment)| segment.to_string())
            .collect()
    }
}

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
    for route in super::ROUTES {
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
    fn path_parameters_are_read_in_order() {
        let Lookup::Found(route) = lookup(&Method::GET, "/v1/docs/terminals/t1") else { panic!() };
        assert_eq!(route.params("/v1/docs/terminals/t1"), ["terminals", "t1"]);
    }

    #[test]
    fn every_route_is_listed_once() {
        let routes = super::super::ROUTES;
        for (i, a) in routes.iter().enumerate() {
            for b in &routes[i + 1..] {
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
