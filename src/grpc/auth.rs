//! The authentication in front of each service: verifies the bearer token, checks the
//! role the service accepts, and hands the typed `Caller` to handlers via request
//! extensions.
//!
//! On ChatService (`with_stream_tickets`), a request without an `authorization` header
//! passes through without a `Caller`: every handler refuses it (`caller`) unless it has
//! another proof of who is calling, as a WatchUnreadSummary opened with a stream ticket
//! has. Elsewhere a missing token is refused here. A header that is present is always
//! checked here, before the request is read.
//!
//! It is a tower service on the `http::Request`, not a tonic `Interceptor`: an
//! interceptor takes the request apart into tonic's parts and builds it again on every
//! call, and wraps the answer's body; here the header is read where it lies and the
//! service's own future is returned.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use tonic::server::NamedService;
use tonic::{Request, Status};
use tower_service::Service;

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

    /// Puts `inner` behind this authentication.
    pub fn service<S>(self, inner: S) -> Authenticated<S> {
        Authenticated { inner, auth: self }
    }

    /// Who the request's token names: `None` for a request without a token that may
    /// reach the handlers; the refusal for any other request this service does not take.
    fn check(&self, headers: &http::HeaderMap) -> Result<Option<TokenCaller>, Status> {
        let Some(header) = headers.get(http::header::AUTHORIZATION) else {
            return match self.stream_tickets {
                true => Ok(None),
                false => Err(DomainError::TokenMissing.into()),
            };
        };
        let header = header.to_str().unwrap_or_default();
        let verified = self.verifier.verify_header(Some(header))?;
        let access_ends = verified.access_ends;
        let caller = verified.caller_for(self.allowed, self.service)?;
        Ok(Some(TokenCaller {
            caller,
            access_ends,
        }))
    }
}

/// A gRPC service behind `Authenticate`.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Authenticate,
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

type Refusal = std::future::Ready<Result<http::Response<tonic::body::Body>, Infallible>>;

impl<S, B> Service<http::Request<B>> for Authenticated<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = Either<S::Future, Refusal>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.auth.check(request.headers()) {
            Ok(token) => {
                if let Some(token) = token {
                    // tonic hands the http request's extensions to the handler's Request.
                    request.extensions_mut().insert(token);
                }
                Either::Left(self.inner.call(request))
            }
            Err(refused) => Either::Right(std::future::ready(Ok(refused.into_http()))),
        }
    }
}

/// The caller `Authenticate` verified; TOKEN_MISSING when the request had no token.
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
