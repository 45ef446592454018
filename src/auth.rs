//! Bearer-token authentication, in rooms:
//! - `keys.rs`: where the keys come from (`AuthConfig`), and the default HS256 secret
//!   kept in a file.
//! - `verify.rs`: verifying JWTs into a typed `Caller` (`TokenVerifier`).
//! - `sign.rs`: signing development tokens for `chatd token`, tests and benchmarks.
//!
//! With no key configured, `serve` and `token` share a random secret stored next to the
//! database, so the default is both secure (no well-known secret) and usable (a token
//! minted on the same machine is accepted).

mod keys;
mod sign;
mod verify;

use serde::{Deserialize, Serialize};

pub use keys::AuthConfig;
pub use sign::TokenSigner;
pub use verify::{TokenVerifier, Verified};

/// The claims chatd reads and signs.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}
