//! Where the token keys come from: an HS256 secret (given, or kept in a file created
//! with a random one), or a public key for RS256/ES256 tokens signed elsewhere.

use std::fs;
use std::io::{ErrorKind as IoErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::storage::DatabaseUrl;

/// Shortest HS256 secret accepted: shorter ones can be brute-forced.
const MIN_SECRET_BYTES: usize = 32;

/// Clock skew tolerated by default between a token's issuer and chatd, as most JWT
/// libraries do (jsonwebtoken's default too).
pub const DEFAULT_TOKEN_LEEWAY: Duration = Duration::from_secs(60);

/// Where the token keys come from, and how strictly their times are read.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The HS256 secret itself (`CHATD_JWT_SECRET`).
    pub secret: Option<String>,
    /// A file holding the HS256 secret; created with a random one when missing.
    pub secret_file: Option<PathBuf>,
    /// A PEM public key (RSA or EC) for RS256/ES256 tokens signed elsewhere.
    pub public_key_file: Option<PathBuf>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// How far past its `exp` (and before its `nbf`) a token is still honoured: the
    /// clock skew allowed between its issuer and chatd. A stream ends at `exp` + this.
    pub leeway: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            secret: None,
            secret_file: None,
            public_key_file: None,
            issuer: None,
            audience: None,
            leeway: DEFAULT_TOKEN_LEEWAY,
        }
    }
}

impl AuthConfig {
    /// The secret file used when none is named: beside the SQLite database, or in the
    /// working directory for PostgreSQL.
    pub fn default_secret_file(database: &DatabaseUrl) -> PathBuf {
        match database {
            DatabaseUrl::Sqlite(path) => PathBuf::from(format!("{path}.jwt-secret")),
            DatabaseUrl::Postgres(_) => PathBuf::from("chatd.jwt-secret"),
        }
    }

    /// The HS256 secret: from the environment, else from the secret file. The server
    /// creates a missing file (32 random bytes, readable by the owner only) for an
    /// SQLite database, the one-process default; with PostgreSQL it refuses, since
    /// each replica would make up its own. A signer never does, since a token signed with a secret no server holds is refused with
    /// TOKEN_INVALID, which says nothing of why.
    pub fn hmac_secret(
        &self,
        database: &DatabaseUrl,
        missing: MissingSecret,
    ) -> Result<Vec<u8>, String> {
        if let Some(secret) = &self.secret {
            return check_secret_length(secret.as_bytes().to_vec(), "CHATD_JWT_SECRET");
        }
        let path = self
            .secret_file
            .clone()
            .unwrap_or_else(|| Self::default_secret_file(database));
        let secret = match missing {
            // Replicas on one PostgreSQL database must verify with one key: a secret each
            // made up for itself would let a token work on one replica only.
            MissingSecret::Create
                if matches!(database, DatabaseUrl::Postgres(_)) && !path.exists() =>
            {
                return Err(format!(
                    "no JWT key configured: with PostgreSQL, every replica must verify \
                     tokens with the same key, so chatd does not make one up. Set \
                     --jwt-secret (CHATD_JWT_SECRET, at least {MIN_SECRET_BYTES} bytes), \
                     --jwt-secret-file (CHATD_JWT_SECRET_FILE) naming a file every replica \
                     reads ({} does not exist), or --jwt-public-key for tokens signed \
                     elsewhere",
                    path.display()
                ));
            }
            MissingSecret::Create => read_or_create_secret(&path)?,
            MissingSecret::Refuse if !path.exists() => {
                return Err(format!(
                    "no JWT secret here: {} does not exist, and no --jwt-secret \
                     (CHATD_JWT_SECRET) is set. Sign with the server's secret: run this \
                     where `chatd serve` runs, with its --database-url (it keeps the secret \
                     beside an SQLite database, or in ./chatd.jwt-secret with PostgreSQL), \
                     or pass its --jwt-secret or --jwt-secret-file",
                    path.display()
                ));
            }
            MissingSecret::Refuse => read_secret(&path)?,
        };
        check_secret_length(secret, &path.display().to_string())
    }
}

/// What to do when the secret file is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingSecret {
    /// The server: make one, so `chatd serve` runs with no setup.
    Create,
    /// A signer: refuse, so no token is signed with a secret no server holds.
    Refuse,
}

fn check_secret_length(secret: Vec<u8>, source: &str) -> Result<Vec<u8>, String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the JWT secret from {source} is {} bytes; use at least {MIN_SECRET_BYTES}",
            secret.len()
        ));
    }
    Ok(secret)
}

fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    fs::read_to_string(path)
        .map(|text| text.trim().as_bytes().to_vec())
        .map_err(|e| format!("cannot read the JWT secret file {}: {e}", path.display()))
}

fn read_or_create_secret(path: &Path) -> Result<Vec<u8>, String> {
    let read = read_secret;
    if path.exists() {
        return read(path);
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a JWT secret: {e}"))?;
    let secret = hex::encode(bytes);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())
                .map_err(|e| format!("cannot write the JWT secret file {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "created a random JWT secret");
            Ok(secret.into_bytes())
        }
        // Another replica on the same file created it first: use theirs.
        Err(e) if e.kind() == IoErrorKind::AlreadyExists => read(path),
        Err(e) => Err(format!(
            "cannot create the JWT secret file {}: {e}",
            path.display()
        )),
    }
}
