//! The webhook sink: batches of up to `BATCH` events as CloudEvents JSON, POSTed and
//! signed as the Standard Webhooks specification says, so receivers verify them with
//! its published libraries (`standardwebhooks` on PyPI and npm, and others).
//!
//! Headers: `webhook-id` (the batch's: the same on every retry of it),
//! `webhook-timestamp` (Unix seconds of this attempt), `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, one per secret, separated
//! by spaces while a secret rotates).

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::config::WebhookConfig;
use crate::domain::Event;

/// Events per POST, at most.
pub const BATCH: i64 = 100;

/// How long a receiver may take to answer before the batch counts as not delivered.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Where batches come from, as CloudEvents' `source` says.
pub const SOURCE: &str = "chatd";

pub struct WebhookSink {
    config: WebhookConfig,
    /// The open connection, kept between batches.
    connection: Option<SendRequest<Full<bytes::Bytes>>>,
}

/// The signature header's value for one attempt.
pub fn signature(secrets: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|key| {
            // HMAC takes a key of any length: this cannot fail.
            let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            let tag = mac.finalize().into_bytes();
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(tag)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The batch's id: from the positions it holds, so a retry has the same one.
pub fn batch_id(batch: &[Event]) -> String {
    let first = batch.first().map_or(0, |event| event.position);
    let last = batch.last().map_or(0, |event| event.position);
    format!("msg_chatd_{first}_{last}")
}

impl WebhookSink {
    pub fn new(config: WebhookConfig) -> Self {
        Self {
            config,
            connection: None,
        }
    }

    pub fn url(&self) -> &http::Uri {
        &self.config.url
    }

    async fn connect(&self) -> Result<SendRequest<Full<bytes::Bytes>>, String> {
        let url = &self.config.url;
        let host = url.host().unwrap_or_default();
        let port = url.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {host}:{port}: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Posts `batch` whole: `Ok(len)` on a 2xx, else why not.
    pub async fn deliver(&mut self, batch: &[Event]) -> Result<usize, String> {
        let body: Vec<serde_json::Value> = batch
            .iter()
            .map(|event| {
                crate::http::cloud_event(crate::grpc::event_message(event.clone()), SOURCE)
            })
            .collect();
        let body =
            serde_json::to_vec(&body).map_err(|e| format!("cannot encode the batch: {e}"))?;
        let id = batch_id(batch);
        let timestamp = chrono::Utc::now().timestamp();
        let signature = signature(&self.config.secrets, &id, timestamp, &body);
        let request = http::Request::post(self.config.url.clone())
            .header(
                http::header::HOST,
                self.config.url.authority().map_or("", |a| a.as_str()),
            )
            .header(
                http::header::CONTENT_TYPE,
                "application/cloudevents-batch+json",
            )
            .header(
                http::header::USER_AGENT,
                concat!("chatd/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let answer = tokio::time::timeout(ANSWER_WITHIN, async {
            let mut sender = match self.connection.take() {
                Some(sender) if !sender.is_closed() => sender,
                _ => self.connect().await?,
            };
            sender
                .ready()
                .await
                .map_err(|e| format!("connection lost: {e}"))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("no answer: {e}"))?;
            let status = response.status();
            // Read the answer whole, so the connection can carry the next batch.
            let _ = response.into_body().collect().await;
            self.connection = Some(sender);
            Ok::<_, String>(status)
        })
        .await;
        match answer {
            Ok(Ok(status)) if status.is_success() => Ok(batch.len()),
            Ok(Ok(status)) => Err(format!("{} answered {status}", self.config.url)),
            Ok(Err(error)) => Err(format!("{}: {error}", self.config.url)),
            Err(_) => {
                self.connection = None;
                Err(format!(
                    "{} did not answer within {ANSWER_WITHIN:?}",
                    self.config.url
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's own example: secret, id, timestamp and
    /// payload, and the signature its reference libraries compute.
    #[test]
    fn signs_as_the_specifications_example() {
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let signed = signature(
            &[key],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
