//! Who may call what: bearer tokens with a role each, checked before any handler runs.
//!
//! Tokens live in the node's own config file (`[[tokens]]`, never replicated): a name, a role and either
//! the secret itself (`secret`) or only its SHA-256 (`secret_sha256`, what `tandem token new` prints), so
//! that the config file, its backups and whoever can read them hold nothing that grants access. The node keeps
//! only digests in memory either way, and compares the digest of the presented secret with each of them in
//! constant time. A request presents `Authorization: Bearer SECRET`; the token's name becomes the actor recorded in every
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
    /// The secret in clear (at least 16 characters).
    #[serde(default)]
    pub secret: Option<String>,
    /// Instead of `secret`: the SHA-256 of the secret, 64 hex digits.
    #[serde(default)]
    pub secret_sha256: Option<String>,
}

impl Token {
    /// A token whose secret is given in clear.
    pub fn with_secret(name: &str, role: TokenRole, secret: &str) -> Self {
        Token { name: name.into(), role, secret: Some(secret.into()), secret_sha256: None }
    }

    /// The SHA-256 of the token's secret, or why the token has none.
    fn digest(&self) -> Result<[u8; 32], String> {
        match (&self.secret, &self.secret_sha256) {
            (Some(secret), None) => Ok(sha256(secret.as_bytes())),
            (None, Some(hex_digest)) => {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(hex_digest.trim(), &mut digest).map_err(|_| {
                    format!("the secret_sha256 of token '{}' must be 64 hex digits", self.name)
                })?;
                Ok(digest)
            }
            (Some(_), Some(_)) => {
                Err(format!("token '{}' has both secret and secret_sha256: keep one", self.name))
            }
            (None, None) => Err(format!("token '{}' needs a secret or a secret_sha256", self.name)),
        }
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("name", &self.name).field("role", &self.role).finish_non_exhaustive()
    }
}

/// Who is calling: the token's name and role, and — set by the API once the token is accepted — the actor
/// the client names and the address it calls from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: TokenRole,
    /// The person or tool the client says is acting (header `X-Tandem-Actor`), if it says so.
    pub actor: Option<String>,
    /// The client's address as this node sees it.
    pub source: Option<std::net::SocketAddr>,
}

impl Caller {
    fn new(name: &str, role: TokenRole) -> Self {
        Caller { name: name.into(), role, actor: None, source: None }
    }

    /// The metadata of a change this caller makes: actor (the named one, else the token's name), token
    /// name, source address, and the time now.
    pub fn change_meta(&self, reason: String, request_id: Option<String>) -> tandem_storage::ChangeMeta {
        tandem_storage::ChangeMeta {
            actor: self.actor.clone().unwrap_or_else(|| self.name.clone()),
            reason,
            timestamp_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            request_id,
            token: Some(self.name.clone()),
            source: self.source.map(|source| source.to_string()),
        }
    }
}

/// A token as the node keeps it: no secret, only its digest.
#[derive(Debug, Clone)]
struct KnownToken {
    name: String,
    role: TokenRole,
    digest: [u8; 32],
}

/// The node's tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<KnownToken>,
}

impl Tokens {
    /// The tokens of a config that passed [`Tokens::validate`]. A token without a usable secret (which
    /// validation refuses) is left out: it could never match.
    pub fn new(tokens: Vec<Token>) -> Self {
        let tokens = tokens
            .into_iter()
            .filter_map(|token| {
                let digest = token.digest().ok()?;
                Some(KnownToken { name: token.name, role: token.role, digest })
            })
            .collect();
        Tokens { tokens }
    }

    /// No tokens: every request is allowed.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Checks a request's credentials against what its route requires.
    pub fn authorize(&self, headers: &HeaderMap, access: Access) -> Result<Caller, ApiError> {
        if self.is_open() {
            return Ok(Caller::new(OPEN_ACTOR, TokenRole::Admin));
        }
        let presented =
            headers.get(AUTHORIZATION).and_then(|value| value.to_str().ok()).and_then(bearer_secret);
        let token = presented.and_then(|secret| {
            let presented = sha256(secret.as_bytes());
            // Compare against every token without stopping early, so timing says nothing about which matched.
            let mut found = None;
            for token in &self.tokens {
                if digests_equal(&token.digest, &presented) {
                    found = Some(token);
                }
            }
            found
        });
        if access == Access::Public {
            return Ok(token
                .map(|t| Caller::new(&t.name, t.role))
                .unwrap_or(Caller::new("anonymous", TokenRole::Reader)));
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
        Ok(Caller::new(&token.name, token.role))
    }

    /// Checks the tokens of a config: names and secrets unique, each with one secret (in clear and long
    /// enough, or as a well-formed digest).
    pub fn validate(tokens: &[Token]) -> Result<(), String> {
        let mut digests = Vec::with_capacity(tokens.len());
        for (i, token) in tokens.iter().enumerate() {
            if token.name.is_empty() || token.name.len() > 64 || token.name.chars().any(char::is_whitespace) {
                return Err(format!("token name '{}' must be 1-64 characters without spaces", token.name));
            }
            if let Some(secret) = &token.secret {
                if secret.len() < 16 {
                    return Err(format!(
                        "the secret of token '{}' must be at least 16 characters",
                        token.name
                    ));
                }
                if secret.trim() != secret {
                    // A request's header value is trimmed, so such a secret could never match.
                    return Err(format!(
                        "the secret of token '{}' must not start or end with whitespace",
                        token.name
                    ));
                }
            }
            let digest = token.digest()?;
            for (other, other_digest) in tokens[..i].iter().zip(&digests) {
                if other.name == token.name {
                    return Err(format!("two tokens are named '{}'", token.name));
                }
                if *other_digest == digest {
                    return Err(format!("tokens '{}' and '{}' have the same secret", other.name, token.name));
                }
            }
            digests.push(digest);
        }
        Ok(())
    }
}

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

/// The secret of an `Authorization: Bearer SECRET` value (the scheme is case-insensitive, RFC 9110).
fn bearer_secret(value: &str) -> Option<&str> {
    let (scheme, secret) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| secret.trim())
}

/// Compares two digests byte by byte without stopping early. Secrets are compared by their SHA-256, so the
/// time taken says nothing about how much of a secret matched, nor about its length.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(vec![
            Token::with_secret("ada", TokenRole::Admin, "admin-secret-0123456789"),
            Token::with_secret("ops", TokenRole::Operator, "operator-secret-0123456"),
            // Configured by its digest only.
            Token {
                secret: None,
                secret_sha256: Some(hex::encode(sha256(b"reader-secret-012345678"))),
                ..Token::with_secret("eve", TokenRole::Reader, "")
            },
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
        let tokens = Tokens::new(vec![Token::with_secret(
            "Night-Shift",
            TokenRole::Reader,
            "reader-secret-012345678",
        )]);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "BEARER reader-secret-012345678".parse().unwrap());
        assert_eq!(tokens.authorize(&headers, Access::Read).unwrap().name, "Night-Shift");
        let refused = tokens.authorize(&headers, Access::Operate).unwrap_err();
        assert!(refused.message.contains("'Night-Shift' has the reader role"), "{}", refused.message);
        headers.insert(AUTHORIZATION, "Basic reader-secret-012345678".parse().unwrap());
        assert_eq!(tokens.authorize(&headers, Access::Read).unwrap_err().status, 401);
        assert!(digests_equal(&sha256(b"same"), &sha256(b"same")));
        assert!(!digests_equal(&sha256(b"same"), &sha256(b"same-but-longer")));
    }

    #[test]
    fn open_nodes_allow_everything_as_local() {
        let caller = Tokens::default().authorize(&HeaderMap::new(), Access::Admin).unwrap();
        assert_eq!(caller, Caller::new(OPEN_ACTOR, TokenRole::Admin));
    }

    #[test]
    fn bad_token_lists_are_refused() {
        let short = Token::with_secret("a", TokenRole::Reader, "short");
        assert!(Tokens::validate(&[short]).is_err());
        let a = Token::with_secret("a", TokenRole::Reader, "same-secret-0123456");
        let b = Token { name: "b".into(), ..a.clone() };
        assert!(Tokens::validate(&[a.clone(), b]).is_err());
        assert!(Tokens::validate(&[a.clone(), a.clone()]).is_err());
        let padded = Token::with_secret("p", TokenRole::Reader, "padded-secret-0123456 ");
        assert!(Tokens::validate(&[padded]).is_err());

        // The same secret once in clear and once as a digest is still the same secret.
        let digest = hex::encode(sha256(b"same-secret-0123456"));
        let hashed =
            Token { name: "h".into(), secret: None, secret_sha256: Some(digest.clone()), ..a.clone() };
        let error = Tokens::validate(&[a.clone(), hashed.clone()]).unwrap_err();
        assert!(error.contains("same secret"), "{error}");
        assert!(Tokens::validate(std::slice::from_ref(&hashed)).is_ok());
        let both = Token { secret_sha256: Some(digest), ..a.clone() };
        assert!(Tokens::validate(&[both]).unwrap_err().contains("keep one"));
        let neither = Token { secret: None, ..a.clone() };
        assert!(Tokens::validate(&[neither]).unwrap_err().contains("needs a secret"));
        for bad in ["abc", &"g".repeat(64), &"a".repeat(66)] {
            let malformed = Token { secret_sha256: Some(bad.to_owned()), ..hashed.clone() };
            assert!(Tokens::validate(&[malformed]).unwrap_err().contains("64 hex digits"), "{bad}");
        }
    }
}
