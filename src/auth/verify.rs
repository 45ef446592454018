//! Verifying bearer tokens into a typed `Caller`: signature and claims checked once per
//! token text, time claims on every use, refusals in the contract's words.

use std::fs;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::{AuthConfig, Claims};
use crate::domain::{AccessEnds, Caller, DomainError, Role};
use crate::storage::DatabaseUrl;

/// Memory for tokens verified already, keyed by the token's exact text.
const ADMITTED_BYTES: u64 = 16 << 20;

/// A token that verified: what it says and when it may be used.
#[derive(Debug)]
struct Admitted {
    verified: Verified,
    exp: u64,
    nbf: Option<u64>,
}

struct ByLength;

impl quick_cache::Weighter<String, Arc<Admitted>> for ByLength {
    fn weight(&self, token: &String, _: &Arc<Admitted>) -> u64 {
        token.len() as u64 + 96
    }
}

impl Clone for ByLength {
    fn clone(&self) -> Self {
        ByLength
    }
}

/// Checks bearer tokens. Built once at start; cheap to share behind an `Arc`.
///
/// A token's signature and claims are checked once: the same text again (a client
/// polls every few seconds with one token) is answered from a bounded map, keyed by the
/// token's exact text and valid because the keys never change while chatd runs. Its
/// time claims are checked on every use.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    /// Clock skew allowed around `exp` and `nbf`, in seconds (`AuthConfig::leeway`).
    leeway: u64,
    admitted: quick_cache::sync::Cache<String, Arc<Admitted>, ByLength>,
}

impl TokenVerifier {
    pub fn new(config: &AuthConfig, database: &DatabaseUrl) -> Result<Self, String> {
        let (key, algorithms) = match &config.public_key_file {
            Some(path) => {
                let pem = fs::read(path).map_err(|e| {
                    format!("cannot read the JWT public key {}: {e}", path.display())
                })?;
                if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                    (key, vec![Algorithm::RS256])
                } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                    (key, vec![Algorithm::ES256])
                } else {
                    return Err(format!(
                        "{} is neither an RSA nor an EC public key in PEM form",
                        path.display()
                    ));
                }
            }
            None => (
                DecodingKey::from_secret(
                    &config.hmac_secret(database, super::keys::MissingSecret::Create)?,
                ),
                vec![Algorithm::HS256],
            ),
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &config.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &config.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        // Time claims are checked by `check_time`, for fresh and remembered tokens alike.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Ok(Self {
            key,
            validation,
            leeway: config.leeway.as_secs(),
            admitted: quick_cache::sync::Cache::with_weighter(
                (ADMITTED_BYTES / 512) as usize,
                ADMITTED_BYTES,
                ByLength,
            ),
        })
    }

    /// Verifies an `authorization` header value (`Bearer <JWT>`).
    pub fn verify_header(&self, header: Option<&str>) -> Result<Verified, DomainError> {
        let header = header.ok_or(DomainError::TokenMissing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| DomainError::TokenInvalid("expected `Bearer <JWT>`".into()))?;
        self.verify(token.trim())
    }

    /// Verifies a token's signature and claims. The role comes back as claimed: a role
    /// chatd does not know is a refusal of the service called (`Verified::caller_for`),
    /// not a bad token.
    pub fn verify(&self, token: &str) -> Result<Verified, DomainError> {
        let now = unix_now();
        if let Some(admitted) = self.admitted.get(token) {
            self.check_time(admitted.exp, admitted.nbf, now)?;
            return Ok(admitted.verified.clone());
        }
        // The header alone first: what is wrong there (an `alg` chatd does not accept,
        // `none` included) is said as such, not as a claims problem.
        jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            JwtErrorKind::Json(_) => DomainError::TokenInvalid(format!(
                "the token's header is not one chatd accepts: its alg must be {}",
                self.algorithms()
            )),
            _ => self.refusal(e.kind()),
        })?;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| self.refusal(e.kind()))?
            .claims;
        let user_id = user_id_of(&claims.sub).ok_or_else(|| {
            DomainError::TokenInvalid(
                "sub must be the user id: a positive integer in decimal digits, \
                 with no sign and no leading zeros, at most 9007199254740991 (2^53 - 1)"
                    .into(),
            )
        })?;
        self.check_time(claims.exp, claims.nbf, now)?;
        let verified = Verified {
            user_id,
            role: Role::parse(&claims.role).ok_or(claims.role),
            access_ends: AccessEnds(
                i64::try_from(claims.exp.saturating_add(self.leeway).saturating_mul(1000))
                    .unwrap_or(i64::MAX),
            ),
        };
        let admitted = Admitted {
            verified: verified.clone(),
            exp: claims.exp,
            nbf: claims.nbf,
        };
        self.admitted.insert(token.to_owned(), Arc::new(admitted));
        Ok(verified)
    }
}

impl TokenVerifier {
    /// The algorithms this verifier accepts, for messages.
    fn algorithms(&self) -> String {
        self.validation
            .algorithms
            .iter()
            .map(|algorithm| format!("{algorithm:?}"))
            .collect::<Vec<_>>()
            .join(" or ")
    }

    /// Why a token was refused, in the words of the contract: never the parser's own.
    fn refusal(&self, kind: &JwtErrorKind) -> DomainError {
        let problem = match kind {
            JwtErrorKind::ExpiredSignature => return DomainError::TokenExpired,
            JwtErrorKind::InvalidToken | JwtErrorKind::Base64(_) | JwtErrorKind::Utf8(_) => {
                "the token is not a JWT: expected three base64url parts separated by dots".into()
            }
            JwtErrorKind::InvalidSignature => {
                "the token's signature does not match: it was signed with another key".into()
            }
            JwtErrorKind::InvalidAlgorithm
            | JwtErrorKind::InvalidAlgorithmName
            | JwtErrorKind::UnsupportedAlgorithm
            | JwtErrorKind::MissingAlgorithm => format!(
                "the token is signed with an algorithm chatd does not accept: use {}",
                self.algorithms()
            ),
            JwtErrorKind::MissingRequiredClaim(claim) => {
                format!("the token has no `{claim}` claim")
            }
            JwtErrorKind::InvalidClaimFormat(claim) => {
                format!("the token's `{claim}` claim is malformed")
            }
            JwtErrorKind::Json(_) => "the token's claims are not what chatd reads: sub (the \
                 user id, as a string of decimal digits), role and exp (seconds since the \
                 epoch) are required"
                .into(),
            JwtErrorKind::InvalidIssuer => {
                "the token's issuer (iss) is not the one chatd trusts".into()
            }
            JwtErrorKind::InvalidAudience => "the token is meant for another audience (aud)".into(),
            JwtErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
            _ => "the token cannot be verified".into(),
        };
        DomainError::TokenInvalid(problem)
    }
}

/// The user id a `sub` claim names: a positive integer written the one canonical way
/// (so "+42" and "042" do not also mean user 42).
fn user_id_of(sub: &str) -> Option<i64> {
    crate::model::canonical_number::<i64>(sub).filter(|id| (1..=crate::model::MAX_ID).contains(id))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl TokenVerifier {
    /// A token is used between its `nbf` (when given) and its `exp`, give or take the
    /// leeway for clock skew.
    fn check_time(&self, exp: u64, nbf: Option<u64>, now: u64) -> Result<(), DomainError> {
        if now >= exp.saturating_add(self.leeway) {
            return Err(DomainError::TokenExpired);
        }
        if let Some(nbf) = nbf
            && nbf > now.saturating_add(self.leeway)
        {
            return Err(DomainError::TokenInvalid(
                "the token is not valid yet (its nbf is in the future)".into(),
            ));
        }
        Ok(())
    }
}

/// A correctly signed, unexpired token: who it speaks for and the role it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user_id: i64,
    /// The role, or the claimed name when chatd knows no such role.
    pub role: Result<Role, String>,
    /// When the token stops being honoured: `exp` plus the leeway.
    pub access_ends: AccessEnds,
}

/// Longest role claim repeated back in an error message.
const MAX_ROLE_ECHO: usize = 32;

impl Verified {
    /// The caller, when its role is one of those `service` accepts. Any other role,
    /// known or not, is a known caller without the right: PERMISSION_DENIED, so the
    /// client is not sent to log in again for nothing.
    pub fn caller_for(
        self,
        allowed: &[Role],
        service: &'static str,
    ) -> Result<Caller, DomainError> {
        match self.role {
            Ok(role) if allowed.contains(&role) => Ok(Caller {
                user_id: self.user_id,
                role,
            }),
            Ok(role) => Err(DomainError::RoleNotAllowed {
                role: role.as_str().to_owned(),
                service,
            }),
            Err(claimed) => Err(DomainError::RoleNotAllowed {
                role: claimed.chars().take(MAX_ROLE_ECHO).collect(),
                service,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenSigner;
    use jsonwebtoken::{EncodingKey, Header};
    use std::time::Duration;

    fn pair(secret: &[u8]) -> (TokenSigner, TokenVerifier) {
        let config = AuthConfig {
            secret: Some(String::from_utf8(secret.to_vec()).unwrap()),
            ..AuthConfig::default()
        };
        let db = DatabaseUrl::Sqlite("unused.db".into());
        (
            TokenSigner::new(&config, &db).unwrap(),
            TokenVerifier::new(&config, &db).unwrap(),
        )
    }

    #[test]
    fn round_trip_and_failures() {
        let (signer, verifier) = pair(&[b'a'; 32]);
        let token = signer
            .sign(42, Role::Tutor, Duration::from_secs(60))
            .unwrap();
        let caller = verifier
            .verify_header(Some(&format!("Bearer {token}")))
            .unwrap()
            .caller_for(&[Role::Tutor], "test")
            .unwrap();
        assert_eq!(
            caller,
            Caller {
                user_id: 42,
                role: Role::Tutor
            }
        );

        assert!(matches!(
            verifier.verify_header(None),
            Err(DomainError::TokenMissing)
        ));
        let expired = signer
            .sign_until(
                42,
                Role::Tutor,
                SystemTime::now() - Duration::from_secs(3600),
            )
            .unwrap();
        assert!(matches!(
            verifier.verify(&expired),
            Err(DomainError::TokenExpired)
        ));
        let (other, _) = pair(&[b'b'; 32]);
        let forged = other
            .sign(42, Role::Tutor, Duration::from_secs(60))
            .unwrap();
        assert!(matches!(
            verifier.verify(&forged),
            Err(DomainError::TokenInvalid(_))
        ));
    }

    /// Signs claims with a test private key, as an identity provider would.
    fn sign_with(private_pem: &str, algorithm: Algorithm, claims: &Claims) -> String {
        let key = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
        };
        jsonwebtoken::encode(&Header::new(algorithm), claims, &key).unwrap()
    }

    fn claims(iss: Option<&str>, aud: Option<&str>) -> Claims {
        Claims {
            sub: "42".into(),
            role: "student".into(),
            exp: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 60,
            nbf: None,
            iat: None,
            iss: iss.map(Into::into),
            aud: aud.map(Into::into),
        }
    }

    #[test]
    fn public_keys_verify_rs256_and_es256_with_issuer_and_audience() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for (name, algorithm) in [("es256", Algorithm::ES256), ("rs256", Algorithm::RS256)] {
            let private = fs::read_to_string(fixtures.join(format!("{name}-private.pem"))).unwrap();
            let config = AuthConfig {
                public_key_file: Some(fixtures.join(format!("{name}-public.pem"))),
                issuer: Some("https://id.example".into()),
                audience: Some("chatd".into()),
                ..AuthConfig::default()
            };
            let verifier =
                TokenVerifier::new(&config, &DatabaseUrl::Sqlite("x.db".into())).unwrap();
            let good = sign_with(
                &private,
                algorithm,
                &claims(Some("https://id.example"), Some("chatd")),
            );
            let verified = verifier.verify(&good).unwrap();
            assert_eq!(
                (verified.user_id, verified.role),
                (42, Ok(Role::Student)),
                "{name}"
            );
            let wrong_issuer = sign_with(
                &private,
                algorithm,
                &claims(Some("https://evil.example"), Some("chatd")),
            );
            assert!(
                matches!(
                    verifier.verify(&wrong_issuer),
                    Err(DomainError::TokenInvalid(_))
                ),
                "{name}"
            );
            let wrong_audience = sign_with(
                &private,
                algorithm,
                &claims(Some("https://id.example"), Some("other")),
            );
            assert!(
                matches!(
                    verifier.verify(&wrong_audience),
                    Err(DomainError::TokenInvalid(_))
                ),
                "{name}"
            );
            // An HS256 token (e.g. signed with the public key as a secret) is refused.
            let public = fs::read(fixtures.join(format!("{name}-public.pem"))).unwrap();
            let confused = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims(Some("https://id.example"), Some("chatd")),
                &EncodingKey::from_secret(&public),
            )
            .unwrap();
            assert!(
                verifier.verify(&confused).is_err(),
                "{name}: algorithm confusion"
            );
            // And chatd will not pretend to sign for a key it only verifies with.
            assert!(TokenSigner::new(&config, &DatabaseUrl::Sqlite("x.db".into())).is_err());
        }
    }

    #[test]
    fn a_remembered_token_is_still_checked_for_expiry() {
        let (_, verifier) = pair(&[b'a'; 32]);
        let mut claims = claims(None, None);
        let sign = |claims: &Claims| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                claims,
                &EncodingKey::from_secret(&[b'a'; 32]),
            )
            .unwrap()
        };
        let token = sign(&claims);
        assert!(verifier.verify(&token).is_ok());
        assert!(verifier.verify(&token).is_ok(), "from memory");
        // The same check applies to a remembered token's claims as to a fresh one's.
        assert!(matches!(
            verifier.check_time(claims.exp, None, claims.exp + verifier.leeway),
            Err(DomainError::TokenExpired)
        ));
        claims.nbf = Some(unix_now() + 3600);
        assert!(matches!(
            verifier.verify(&sign(&claims)),
            Err(DomainError::TokenInvalid(_))
        ));
    }

    #[test]
    fn the_leeway_is_the_configured_one_both_ways() {
        let now = unix_now();
        let sign = |claims: &Claims| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                claims,
                &EncodingKey::from_secret(&[b'a'; 32]),
            )
            .unwrap()
        };
        let mut just_expired = claims(None, None);
        just_expired.exp = now - 5;
        let mut not_yet = claims(None, None);
        not_yet.nbf = Some(now + 5);
        for (leeway, accepted) in [(0, false), (30, true)] {
            let config = AuthConfig {
                secret: Some("a".repeat(32)),
                leeway: Duration::from_secs(leeway),
                ..AuthConfig::default()
            };
            let verifier =
                TokenVerifier::new(&config, &DatabaseUrl::Sqlite("x.db".into())).unwrap();
            let expired = verifier.verify(&sign(&just_expired));
            assert_eq!(expired.is_ok(), accepted, "leeway {leeway}: {expired:?}");
            if let Ok(verified) = expired {
                let ends = (just_expired.exp + leeway) as i64 * 1000;
                assert_eq!(verified.access_ends, AccessEnds(ends));
            }
            let early = verifier.verify(&sign(&not_yet));
            assert_eq!(early.is_ok(), accepted, "leeway {leeway}: {early:?}");
        }
    }

    #[test]
    fn an_unknown_role_is_a_known_caller_without_the_right() {
        let (_, verifier) = pair(&[b'a'; 32]);
        let mut admin = claims(None, None);
        admin.role = "admin".into();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &admin,
            &EncodingKey::from_secret(&[b'a'; 32]),
        )
        .unwrap();
        let verified = verifier.verify(&token).expect("a valid token");
        assert_eq!(verified.role, Err("admin".to_owned()));
        let refused = verified
            .caller_for(&[Role::Tutor, Role::Student], "chat.v1.ChatService")
            .unwrap_err();
        assert!(matches!(refused, DomainError::RoleNotAllowed { ref role, .. } if role == "admin"));
    }

    #[test]
    fn sub_is_one_canonical_decimal() {
        assert_eq!(user_id_of("10000"), Some(10000));
        for sub in ["+10000", "010000", "-1", "0", " 1", "1e4", ""] {
            assert_eq!(user_id_of(sub), None, "{sub:?}");
        }
    }

    #[test]
    fn refusals_speak_the_contract_not_the_parser() {
        let (_, verifier) = pair(&[b'a'; 32]);
        // {"alg":"none","typ":"JWT"} . {"sub":"42","role":"tutor","exp":9999999999} . (none)
        let unsigned = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiI0MiIsInJvbGUiOiJ0dXRvciIsImV4cCI6OTk5OTk5OTk5OX0.";
        for (token, expected) in [
            (unsigned, "alg must be HS256"),
            ("not-a-token", "not a JWT"),
        ] {
            let message = verifier.verify(token).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
            assert!(
                !message.contains("variant"),
                "no parser internals: {message}"
            );
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        let config = AuthConfig {
            secret: Some("short".into()),
            ..AuthConfig::default()
        };
        let err = TokenVerifier::new(&config, &DatabaseUrl::Sqlite("x.db".into()))
            .err()
            .unwrap();
        assert!(err.contains("at least 32"), "{err}");
    }
}
