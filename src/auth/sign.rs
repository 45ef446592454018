//! Signing HS256 tokens: development tokens for `chatd token`, tests and benchmarks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::{AuthConfig, Claims};
use crate::domain::Role;
use crate::storage::DatabaseUrl;

/// Signs HS256 tokens, for `chatd token`, tests and benchmarks.
#[derive(Clone)]
pub struct TokenSigner {
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
}

impl TokenSigner {
    pub fn new(config: &AuthConfig, database: &DatabaseUrl) -> Result<Self, String> {
        if config.public_key_file.is_some() {
            return Err("chatd verifies RS256/ES256 tokens but cannot sign them: \
                        mint them with the private key's owner, or use an HS256 secret"
                .into());
        }
        Ok(Self::from_secret(
            &config.hmac_secret(database, super::keys::MissingSecret::Refuse)?,
            config.issuer.clone(),
            config.audience.clone(),
        ))
    }

    pub fn from_secret(secret: &[u8], issuer: Option<String>, audience: Option<String>) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            issuer,
            audience,
        }
    }

    /// A token for `user_id` acting as `role`, valid for `ttl` (negative TTLs are for
    /// tests of expiry: pass a `SystemTime` in the past via `sign_until`).
    pub fn sign(&self, user_id: i64, role: Role, ttl: Duration) -> Result<String, String> {
        self.sign_until(user_id, role, SystemTime::now() + ttl)
    }

    pub fn sign_until(
        &self,
        user_id: i64,
        role: Role,
        expires: SystemTime,
    ) -> Result<String, String> {
        let seconds = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let claims = Claims {
            sub: user_id.to_string(),
            role: role.as_str().to_owned(),
            exp: seconds(expires),
            nbf: None,
            iat: Some(seconds(SystemTime::now())),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| format!("cannot sign the token: {e}"))
    }
}
