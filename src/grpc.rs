//! The gRPC transport: chat.v1 services over the domain, the auth interceptor, and the
//! one mapping from `DomainError` to `tonic::Status` (with a google.rpc.ErrorInfo).

mod auth;
mod chat;
mod convert;
mod status;
mod sync;
mod trace;

pub use auth::Authenticate;
pub use chat::ChatService;
pub use status::ERROR_DOMAIN;
pub use sync::SyncService;
pub use trace::RpcTraceLayer;

/// Code generated from `proto/chat/v1/chat.proto`, and its descriptor set (imports
/// included) for server reflection.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("chat.v1");

    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/chat_descriptor.bin"));
}
