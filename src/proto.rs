//! Code generated from `proto/chat/v1/chat.proto` (messages, the ChatService and
//! SyncService servers and clients) and its descriptor set, imports included, for
//! server reflection. `grpc/` serves it and `http/` calls it; neither names the other.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("chat.v1");

pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/chat_descriptor.bin"));
