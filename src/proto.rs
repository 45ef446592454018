//! Code generated from `proto/chat/v1/chat.proto` (messages, the ChatService and
//! SyncService servers and clients) and its descriptor set, imports included, for
//! server reflection, with the codec they use. `grpc/` serves it and `http/` calls it;
//! neither names the other.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("chat.v1");

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// How large a message's encode buffer starts. tonic's default, 8 KiB, is held by every
/// response stream for as long as it is open: with tens of thousands of mostly idle
/// WatchUnreadSummary streams, that was most of their memory. Larger messages grow it.
const INITIAL_BUFFER: usize = 1024;

/// prost's codec with a small initial buffer (see `INITIAL_BUFFER`); the generated
/// services and clients use it (`build.rs`).
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ClientFault<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(INITIAL_BUFFER, 32 * 1024))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ClientFault(ProstCodec::<T, U>::raw_decoder(BufferSettings::new(
            INITIAL_BUFFER,
            32 * 1024,
        )))
    }
}

/// prost's decoder, whose failures are the sender's fault: a message that cannot be
/// decoded is INVALID_ARGUMENT `MALFORMED_REQUEST` with ErrorInfo, not INTERNAL.
pub struct ClientFault<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> tonic::codec::Decoder for ClientFault<U> {
    type Item = U;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<U>, tonic::Status> {
        self.0.decode(src).map_err(|_| {
            crate::status::status(
                crate::status::request::MALFORMED,
                "the request message cannot be decoded: send a valid protobuf message \
                 of the method's request type",
            )
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/chat_descriptor.bin"));

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message;

    /// `deploy/grpc/service-config.json` gives every RPC of chat.v1 a method config
    /// (a deadline, and a retry policy where a repeat is safe) and names no RPC that does
    /// not exist, so a client loading it covers the whole API.
    #[test]
    fn the_service_config_names_every_rpc() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let rpcs: BTreeSet<(String, String)> = set
            .file
            .iter()
            .filter(|file| file.package() == "chat.v1")
            .flat_map(|file| {
                file.service.iter().flat_map(|service| {
                    service.method.iter().map(|method| {
                        (
                            format!("chat.v1.{}", service.name()),
                            method.name().to_owned(),
                        )
                    })
                })
            })
            .collect();
        let config: serde_json::Value =
            serde_json::from_str(include_str!("../deploy/grpc/service-config.json")).unwrap();
        let mut named = BTreeSet::new();
        for method_config in config["methodConfig"].as_array().unwrap() {
            for name in method_config["name"].as_array().unwrap() {
                let service = name["service"].as_str().unwrap();
                if service.starts_with("chat.v1.") {
                    let method = name["method"].as_str().unwrap().to_owned();
                    assert!(
                        named.insert((service.to_owned(), method)),
                        "{name} is named twice"
                    );
                }
            }
            let watch = method_config["name"]
                .as_array()
                .unwrap()
                .iter()
                .any(|name| {
                    ["WatchUnreadSummary", "WatchThread", "StreamEvents"]
                        .contains(&name["method"].as_str().unwrap_or_default())
                });
            // A deadline would end the stream; a send without a key is not safe to repeat.
            let send = method_config["name"]
                .as_array()
                .unwrap()
                .iter()
                .any(|name| name["method"] == "SendMessage");
            assert_eq!(method_config.get("timeout").is_none(), watch);
            if send || watch {
                assert!(method_config.get("retryPolicy").is_none());
            }
        }
        assert_eq!(named, rpcs);
    }
}
