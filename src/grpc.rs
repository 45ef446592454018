//! The gRPC transport: chat.v1 services over the domain, the authentication, proto ↔
//! domain conversions, and the one mapping from `DomainError` to `tonic::Status` (with
//! a google.rpc.ErrorInfo), whose codes come from `crate::status`.

mod auth;
mod chat;
pub(crate) mod convert;
mod events;
mod status;
mod sync;
mod trace;

pub use auth::Authenticate;
pub use chat::ChatService;
pub use convert::event as event_message;
pub use events::EventService;
pub use sync::SyncService;
pub use trace::{RPCS, RpcTraceLayer};

/// The largest request message chatd decodes: far above any valid request (a message
/// body is at most 4000 characters), so a client cannot make it buffer megabytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The generated code, where callers of this module have always found it.
pub use crate::proto as pb;

/// A domain stream as a gRPC response stream: each item converted; after an error the
/// stream ends with its status (the client resumes from the last item it took).
fn streamed<T, P>(
    items: crate::domain::Buffered<T>,
    convert: fn(T) -> P,
) -> std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<P, tonic::Status>> + Send>>
where
    T: Send + 'static,
    P: Send + 'static,
{
    Box::pin(futures_util::stream::unfold(
        Some(items),
        move |items| async move {
            let mut items = items?;
            match items.next().await? {
                Ok(item) => Some((Ok(convert(item)), Some(items))),
                Err(error) => Some((Err(tonic::Status::from(error)), None)),
            }
        },
    ))
}
