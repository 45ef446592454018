//! The NATS JetStream sink: each event as CloudEvents JSON to subject
//! `chat.events.<type>` of a stream chatd declares, with `Nats-Msg-Id` = the event's id
//! so JetStream drops a republished duplicate. An event counts as delivered on its
//! publish acknowledgement only.

use std::time::Duration;

use crate::domain::Event;

/// Events published before their acknowledgements are awaited.
pub const BATCH: i64 = 100;

/// The subjects of the stream chatd declares.
const SUBJECTS: &str = "chat.events.>";

/// How long a connection attempt may take.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);

pub struct NatsSink {
    url: String,
    stream: String,
    retention: Duration,
    jetstream: Option<async_nats::jetstream::Context>,
}

impl NatsSink {
    pub fn new(url: String, stream: String, retention: Duration) -> Self {
        Self {
            url,
            stream,
            retention,
            jetstream: None,
        }
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Connects and declares the stream (kept as it is when it exists).
    async fn connect(&self) -> Result<async_nats::jetstream::Context, String> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(CONNECT_WITHIN)
            .name("chatd events")
            .connect(self.url.as_str())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.url))?;
        let jetstream = async_nats::jetstream::new(client);
        jetstream
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: self.stream.clone(),
                subjects: vec![SUBJECTS.to_owned()],
                max_age: self.retention,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                format!(
                    "cannot declare JetStream stream {} on {}: {e}",
                    self.stream, self.url
                )
            })?;
        Ok(jetstream)
    }

    /// Publishes `batch` in order: `Ok(n)` for the first `n` acknowledged.
    pub async fn deliver(&mut self, batch: &[Event]) -> Result<usize, String> {
        let jetstream = match &self.jetstream {
            Some(jetstream) => jetstream.clone(),
            None => {
                let jetstream = self.connect().await?;
                self.jetstream = Some(jetstream.clone());
                jetstream
            }
        };
        let mut acks = Vec::with_capacity(batch.len());
        for event in batch {
            let body = crate::http::cloud_event(
                crate::grpc::event_message(event.clone()),
                super::webhook::SOURCE,
            );
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.as_str());
            headers.insert("content-type", "application/cloudevents+json");
            let subject = format!("chat.events.{}", event.kind);
            match jetstream
                .publish_with_headers(subject, headers, body.to_string().into())
                .await
            {
                Ok(ack) => acks.push(ack),
                Err(error) => {
                    if acks.is_empty() {
                        return Err(format!("cannot publish to {}: {error}", self.url));
                    }
                    break;
                }
            }
        }
        let mut taken = 0;
        for ack in acks {
            match ack.await {
                Ok(_) => taken += 1,
                Err(error) if taken == 0 => {
                    return Err(format!("{} did not acknowledge: {error}", self.url));
                }
                Err(_) => break,
            }
        }
        Ok(taken)
    }
}
