//! The interceptor in front of each service: verifies the bearer token, checks the role
//! the service accepts, and hands the typed `Caller` to handlers via request extensions.
//!
//! On ChatService (`with_stream_tickets`), a request without an `authorization` header
//! passes through without a `Caller`: every handler refuses it (`caller`) unless it has
//! another proof of who is calling, as a WatchUnreadSummary opened with a stream ticket
//! has. Elsewhere a missing token is refused here. A header that is present is always
//! checked here, before the request is read.

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::auth::TokenVerifier;
use crate::domain::{AccessEnds, Caller, DomainError, Role};

/// Who the request's bearer token names, and when the token stops being honoured.
#[derive(Debug, Clone, Copy)]
struct TokenCaller {
    caller: Caller,
    access_ends: AccessEnds,
}

#[derive(Clone)]
pub struct Authenticate {
    verifier: Arc<TokenVerifier>,
    allowed: &'static [Role],
    service: &'static str,
    /// Whether a request without a token reaches the handlers (see the module docs).
    stream_tickets: bool,
}

impl Authenticate {
    pub fn new(
        verifier: Arc<TokenVerifier>,
        service: &'static str,
        allowed: &'static [Role],
    ) -> Self {
        Self {
            verifier,
            allowed,
            service,
            stream_tickets: false,
        }
    }

    /// Lets requests without a token through to handlers that accept a stream ticket.
    pub fn with_stream_tickets(mut self) -> Self {
        self.stream_tickets = true;
        self
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(header) = request.metadata().get("authorization") else {
            return match self.stream_tickets {
                true => Ok(request),
                false => Err(DomainError::TokenMissing.into()),
            };
        };
        let header = header.to_str().unwrap_or_default();
        let verified = self.verifier.verify_header(Some(header))?;
        let access_ends = verified.access_ends;
        let caller = verified.caller_for(self.allowed, self.service)?;
        // One extension, not two: each costs an allocation on every call.
        request.extensions_mut().insert(TokenCaller {
            caller,
            access_ends,
        });
        Ok(request)
    }
}

/// The caller the interceptor verified; TOKEN_MISSING when the request had no token.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<TokenCaller>()
        .map(|token| token.caller)
        .ok_or_else(|| DomainError::TokenMissing.into())
}

/// The caller of the request's bearer token, if it had one, and when its token stops
/// being honoured.
pub fn token_caller<T>(request: &Request<T>) -> Option<(Caller, AccessEnds)> {
    let token = request.extensions().get::<TokenCaller>()?;
    Some((token.caller, token.access_ends))
}
