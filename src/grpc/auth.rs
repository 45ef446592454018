//! The interceptor in front of each service: verifies the bearer token, checks the role
//! the service accepts, and hands the typed `Caller` to handlers via request extensions.

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::auth::TokenVerifier;
use crate::domain::{Caller, DomainError, Role};

#[derive(Clone)]
pub struct Authenticate {
    verifier: Arc<TokenVerifier>,
    allowed: &'static [Role],
    service: &'static str,
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
        }
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|value| value.to_str().unwrap_or_default());
        let caller = self
            .verifier
            .verify_header(header)?
            .caller_for(self.allowed, self.service)?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller the interceptor attached. Its absence is a wiring bug, not a client error.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .copied()
        .ok_or_else(|| {
            DomainError::Internal("service mounted without authentication".into()).into()
        })
}
