//! The operator console: a live status page in the browser, served by every data node and mirror at `/` on
//! the admin API.
//!
//! The console is three static files compiled into the binary ([`include_str!`]): `assets/index.html` (the
//! shell: navigation, a login form, one empty section per page), `assets/console.css` and
//! `assets/console.js` (plain JavaScript, no framework, no build step). The script is a client of the same
//! JSON API the CLI uses, with the token the operator types once (kept in `sessionStorage`: it lives as long
//! as the browser tab and is sent only as `Authorization: Bearer`, never in a URL). So the console can do
//! nothing the token could not do with `curl`, and every refusal comes from the route table
//! ([`crate::node::api::ROUTES`]) — hiding a button from a reader is a courtesy, not the check.
//!
//! One page load, start to finish:
//! 1. `GET /` ([`page`]) answers the shell without a token (it holds no data) and with headers that pin it
//!    down: a Content-Security-Policy that allows only this origin's script and style (no inline script, no
//!    `eval`, no other origin to talk to), `X-Content-Type-Options: nosniff`, no framing, no referrer.
//!    A witness answers a one-line page instead (`witness_page`): it holds no configuration to show.
//! 2. The browser loads `GET /console/console.css` and `/console/console.js` ([`asset`]).
//! 3. The script asks for a token (or takes the one in `sessionStorage`), checks it with `GET /v1/whoami`
//!    (which also says the role: operators and admins see write buttons, readers do not), then polls
//!    `GET /v1/status` every second and follows `GET /v1/watch` (NDJSON, read with `fetch()` streaming so the
//!    token travels in a header — `EventSource` cannot send one) to redraw the page a change concerns.
//! 4. When the node stops answering, the page says so and links the consoles of the other data nodes and
//!    mirrors from the last membership it saw.
//!
//! Why no JavaScript toolchain: the console must build with `cargo build` alone, on a machine without npm, and
//! be readable by whoever maintains the node. A few hundred lines of plain JavaScript over an API that already
//! exists are easier to review than a vendored framework; see `docs/console.md`.

use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use crate::http::{ApiError, Body, full_body};

/// The shell of the console.
const INDEX_HTML: &str = include_str!("assets/index.html");
/// Its style sheet.
const CONSOLE_CSS: &str = include_str!("assets/console.css");
/// Its script.
const CONSOLE_JS: &str = include_str!("assets/console.js");

/// Only this origin's script, style and API; nothing inline, no plugins, no framing, no form posts elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the console's shell on a data node or mirror; on a witness (`witness`: its name), the one-line
/// page. The API's route table calls this (`node::api::console`); this module knows nothing of the API.
pub fn page(witness: Option<&str>) -> Response<Body> {
    match witness {
        Some(name) => witness_page(name),
        None => static_response("text/html; charset=utf-8", INDEX_HTML),
    }
}

/// `GET /console/{name}`: the console's style sheet and script.
pub fn asset(name: &str) -> Result<Response<Body>, ApiError> {
    match name {
        "console.css" => Ok(static_response("text/css; charset=utf-8", CONSOLE_CSS)),
        "console.js" => Ok(static_response("text/javascript; charset=utf-8", CONSOLE_JS)),
        other => Err(ApiError::not_found(format!("the console has no file '{other}'"))
            .with_hint("the console's files are console.css and console.js")),
    }
}

/// What a witness shows at `/`: what it is, and where the console is instead.
fn witness_page(name: &str) -> Response<Body> {
    let name = escape_html(name);
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Tandem witness {name}</title>\
         </head><body><p>This is <strong>{name}</strong>, a Tandem witness: it stores the cluster's log and \
         votes, and holds no configuration, so it has no console. Open the console of a data node or a mirror \
         (<code>tandem servers list</code> shows their API addresses).</p></body></html>\n"
    );
    static_response("text/html; charset=utf-8", body)
}

/// A static page or file with the console's security headers.
fn static_response(content_type: &'static str, body: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut response = Response::new(full_body(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
    headers.insert(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
    headers.insert(HeaderName::from_static("referrer-policy"), HeaderValue::from_static("no-referrer"));
    // A new binary brings new files: the browser asks again each time (they are small).
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Escapes text for HTML (a node name is the operator's, but still not markup).
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shell_loads_its_script_and_style_from_files_only() {
        assert!(INDEX_HTML.contains(r#"<script src="/console/console.js" defer></script>"#));
        assert!(INDEX_HTML.contains(r#"href="/console/console.css""#));
        // The policy forbids inline script and style: the shell must not depend on either.
        let lower = INDEX_HTML.to_lowercase();
        assert_eq!(lower.matches("<script").count(), 1, "one script tag, with src");
        assert!(!lower.contains(" style=") && !lower.contains("<style"), "no inline style");
        assert!(!lower.contains(" onclick=") && !lower.contains("javascript:"), "no inline handlers");
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(escape_html("<w&'\">"), "&lt;w&amp;&#39;&quot;&gt;");
    }
}
