//! Who may call what: bearer tokens with a role each, checked before any handler runs.
//!
//! Tokens live in the node's own config file (`[[tokens]]`, never replicated): a name, a role and a secret.
//! A request presents `Authorization: Bearer SECRET`; the token's name becomes the actor recorded in every
//! event the request causes. Roles nest: `admin` ⊃ `operator` ⊃ `reader`.
//!
//! | role | may |
//! |---|---|
//! | reader | read documents, history, exports, diffs, watch, status, metrics |
//! | operator | everything a reader may, plus changes, revert/undo/import (sync), backups, blob uploads |
//! | admin | everything, including membership changes |
//!
//! A missing or unknown token is 401, a token whose role is too weak is 403; neither reaches a handler, so
//! neither changes anything. A node with no tokens configured is *open*: every request acts as
//! [`OPEN_ACTOR`] with the admin role. `tandem serve` only allows that on a loopback API address, and warns.

use hyper::StatusCode;
use hyper::header::{AUTHORIZATION, HeaderMap};
use serde::{Deserialize, Serialize};

use crate::http::ApiError;

/// The actor recorded for requests to a node without tokens.
pub const OPEN_ACTOR: &str = "local";

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Anyone (health checks).
    Public,
    /// A reader, operator or admin token.
    Read,
    /// An operator or admin token.
    Operate,
    /// An admin token.
    Admin,
}

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    Reader,
    Operator,
    Admin,
}

impl TokenRole {
    /// The lower-case name used in config files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Reader => "reader",
            TokenRole::Operator => "operator",
            TokenRole::Admin => "admin",
        }
    }

    fn allows(self, access: Access) -> bool {
        match access {
            Access::Public | Access::Read => true,
            Access::Operate => self >= TokenRole::Operator,
            Access::Admin => self == TokenRole::Admin,
        }
    }
}

/// One token of the node's config.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Recorded as the actor of every event this token causes.
    pub name: String,
    pub role: TokenRole,
    pub secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("name", &self.name).field("role", &self.role).finish_non_exhaustive()
    }
}

/// Who is calling: the token's name (the actor) and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: TokenRole,
}

/// The node's tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

impl Tokens {
    pub fn new(tokens: Vec<Token>) -> Self {
        Tokens { tokens }
    }

    /// No tokens: every request is allowed.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Checks a request's credentials against what its route requires.
    pub fn authorize(&self, headers: &HeaderMap, access: Access) -> Result<Caller, ApiError> {
        if self.is_open() {
            return Ok(Caller { name: OPEN_ACTOR.into(), role: TokenRole::Admin });
        }
        let presented =
            headers.get(AUTHORIZATION).and_then(|value| value.to_str().ok()).and_then(bearer_secret);
        let token = presented.and_then(|secret| {
            // Compare against every token without stopping early, so timing says nothing about which matched.
            let mut found = None;
            for token in &self.tokens {
                if constant_time_eq(token.secret.as_bytes(), secret.as_bytes()) {
                    found = Some(token);
                }
            }
            found
        });
        if access == Access::Public {
            return Ok(token
                .map(|t| Caller { name: t.name.clone(), role: t.role })
                .unwrap_or(Caller { name: "anonymous".into(), role: TokenRole::Reader }));
        }
        let Some(token) = token else {
            let message = if presented.is_some() {
                "the bearer token is not valid"
            } else {
                "a bearer token is required"
            };
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).with_hint(
                "pass --token or set TANDEM_TOKEN (tokens are defined in the node's config file)",
            ));
        };
        if !token.role.allows(access) {
            let needed = match access {
                Access::Admin => "admin",
                _ => "operator or admin",
            };
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("token '{}' has the {} role; this needs {needed}", token.name, token.role.as_str()),
            ));
        }
        Ok(Caller { name: token.name.clone(), role: token.role })
    }

    /// Checks the tokens of a config: names and secrets unique, secrets long enough.
    pub fn validate(tokens: &[Token]) -> Result<(), String> {
        for (i, token) in tokens.iter().enumerate() {
            if token.name.is_empty() || token.name.len() > 64 || token.name.chars().any(char::is_whitespace) {
                return Err(format!("token name '{}' must be 1-64 characters without spaces", token.name));
            }
            if token.secret.len() < 16 {
                return Err(format!("the secret of token '{}' must be at least 16 characters", token.name));
            }
            if token.secret.trim() != token.secret {
                // A request's header value is trimmed, so such a secret could never match.
                return Err(format!(
                    "the secret of token '{}' must not start or end with whitespace",
                    token.name
                ));
            }
            for other in &tokens[i + 1..] {
                if other.name == token.name {
                    return Err(format!("two tokens are named '{}'", token.name));
                }
                if other.secret == token.secret {
                    return Err(format!("tokens '{}' and '{}' have the same secret", token.name, other.name));
                }
            }
        }
        Ok(())
    }
}

/// The secret of an `Authorization: Bearer SECRET` value (the scheme is case-insensitive, RFC 9110).
fn bearer_secret(value: &str) -> Option<&str> {
    let (scheme, secret) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| secret.trim())
}

/// Compares the SHA-256 digests of both secrets byte by byte without stopping early: the time taken says
/// nothing about how much of a secret matched, nor about its length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(vec![
            Token { name: "ada".into(), role: TokenRole::Admin, secret: "admin-secret-0123456789".into() },
            Token { name: "ops".into(), role: TokenRole::Operator, secret: "operator-secret-0123456".into() },
            Token { name: "eve".into(), role: TokenRole::Reader, secret: "reader-secret-012345678".into() },
        ])
    }

    fn bearer(secret: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("Bearer {secret}").parse().unwrap());
        headers
    }

    #[test]
    fn roles_nest_and_failures_are_401_or_403() {
        let tokens = tokens();
        let reader = bearer("reader-secret-012345678");
        assert_eq!(tokens.authorize(&reader, Access::Read).unwrap().name, "eve");
        assert_eq!(tokens.authorize(&reader, Access::Operate).unwrap_err().status, 403);
        let operator = bearer("operator-secret-0123456");
        assert_eq!(tokens.authorize(&operator, Access::Operate).unwrap().name, "ops");
        assert_eq!(tokens.authorize(&operator, Access::Admin).unwrap_err().status, 403);
        assert_eq!(tokens.authorize(&bearer("admin-secret-0123456789"), Access::Admin).unwrap().name, "ada");
        assert_eq!(tokens.authorize(&HeaderMap::new(), Access::Read).unwrap_err().status, 401);
        assert_eq!(
            tokens.authorize(&bearer("admin-secret-012345678"), Access::Read).unwrap_err().status,
            401
        );
        assert!(tokens.authorize(&HeaderMap::new(), Access::Public).is_ok());
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_refusals_name_the_token_as_configured() {
        let tokens = Tokens::new(vec![Token {
            name: "Night-Shift".into(),
            role: TokenRole::Reader,
            secret: "reader-secret-012345678".into(),
        }]);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "BEARER reader-secret-012345678".parse().unwrap());
        assert_eq!(tokens.authorize(&headers, Access::Read).unwrap().name, "Night-Shift");
        let refused = tokens.authorize(&headers, Access::Operate).unwrap_err();
        assert!(refused.message.contains("'Night-Shift' has the reader role"), "{}", refused.message);
        headers.insert(AUTHORIZATION, "Basic reader-secret-012345678".parse().unwrap());
        assert_eq!(tokens.authorize(&headers, Access::Read).unwrap_err().status, 401);
        assert!(constant_time_eq(b"same", b"same"));
        assert!(!constant_time_eq(b"same", b"same-but-longer"));
    }

    #[test]
    fn open_nodes_allow_everything_as_local() {
        let caller = Tokens::default().authorize(&HeaderMap::new(), Access::Admin).unwrap();
        assert_eq!(caller, Caller { name: OPEN_ACTOR.into(), role: TokenRole::Admin });
    }

    #[test]
    fn bad_token_lists_are_refused() {
        let short = Token { name: "a".into(), role: TokenRole::Reader, secret: "short".into() };
        assert!(Tokens::validate(&[short]).is_err());
        let a = Token { name: "a".into(), role: TokenRole::Reader, secret: "same-secret-0123456".into() };
        let b = Token { name: "b".into(), ..a.clone() };
        assert!(Tokens::validate(&[a.clone(), b]).is_err());
        assert!(Tokens::validate(&[a.clone(), a]).is_err());
        let padded =
            Token { name: "p".into(), role: TokenRole::Reader, secret: "padded-secret-0123456 ".into() };
        assert!(Tokens::validate(&[padded]).is_err());
    }
}
