//! The REST gateway as the bench sees it: an address to poll over HTTP/1.1 (with the
//! ETag a browser keeps) and to read the server's /metrics from (the summary cache's
//! hits and misses, the sweep, the SQLite writer's phases).

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tonic::metadata::{Ascii, MetadataValue};

/// The REST gateway: an address to poll and read /metrics from over HTTP/1.1.
#[derive(Clone)]
pub(super) struct HttpTarget {
    addr: String,
    host: String,
}

type Connection = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

impl HttpTarget {
    pub(super) fn parse(url: &str) -> Result<Self, String> {
        let host = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("--http-target must be http://host:port, got {url:?}"))?
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            addr: host.clone(),
            host,
        })
    }

    async fn open(&self) -> Result<Connection, String> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {}: {e}", self.addr))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// GET `path` on a kept-alive connection (opened or reopened as needed); answers the
    /// status, the ETag and the body.
    async fn get(
        &self,
        connection: &mut Option<Connection>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Option<String>, Bytes), String> {
        if connection.as_ref().is_none_or(|c| c.is_closed()) {
            *connection = Some(self.open().await?);
        }
        let Some(sender) = connection.as_mut() else {
            return Err("no connection".into());
        };
        let mut request = hyper::Request::get(path).header(hyper::header::HOST, &self.host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| {
            *connection = None;
            e.to_string()
        })?;
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get(hyper::header::ETAG)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, etag, body))
    }

    /// One poll of the bell: 304 or 200, and the ETag to send next time.
    pub(super) async fn poll(
        &self,
        connection: &mut Option<Connection>,
        token: &MetadataValue<Ascii>,
        etag: Option<&String>,
    ) -> Result<(u16, Option<String>), String> {
        let token = token.to_str().map_err(|e| e.to_string())?;
        let mut headers = vec![("authorization", token)];
        if let Some(etag) = etag {
            headers.push(("if-none-match", etag.as_str()));
        }
        let (status, new_etag, body) = self
            .get(connection, "/api/v1/chat/unread-summary/", &headers)
            .await?;
        match status {
            200 | 304 => Ok((status, new_etag.or_else(|| etag.cloned()))),
            other => Err(format!("{other}: {}", String::from_utf8_lossy(&body))),
        }
    }

    /// The server's /metrics, as text.
    pub(super) async fn metrics(&self) -> Result<String, String> {
        let (status, _, body) = self.get(&mut None, "/metrics", &[]).await?;
        if status != 200 {
            return Err(format!("GET /metrics answered {status}"));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The server's summary cache counters, from its /metrics.
    pub(super) async fn cache_reads(&self) -> Result<CacheReads, String> {
        let text = self.metrics().await?;
        let value = |series: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(series))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let read = |outcome: &str| {
            value(&format!(
                "chatd_summary_cache_requests_total{{outcome=\"{outcome}\"}} "
            )) as u64
        };
        Ok(CacheReads {
            hit: read("hit"),
            miss: read("miss"),
            bypass: read("bypass"),
            entries: value("chatd_summary_cache_entries ") as u64,
            sweep_seconds: value("chatd_summary_cache_sweep_seconds_sum "),
            sweeps: value("chatd_summary_cache_sweep_seconds_count ") as u64,
        })
    }
}

/// The cache's counters at one moment.
pub(super) struct CacheReads {
    hit: u64,
    miss: u64,
    bypass: u64,
    /// Summaries cached.
    entries: u64,
    /// Sweeps so far, and the seconds they took together.
    sweep_seconds: f64,
    sweeps: u64,
}

impl CacheReads {
    /// How long the sweeps between this reading and a later one took, with the
    /// summaries cached at the later one.
    pub(super) fn sweeps_until(&self, later: &CacheReads) -> String {
        let sweeps = later.sweeps.saturating_sub(self.sweeps);
        if sweeps == 0 {
            return format!("no sweep ran, {} summaries cached", later.entries);
        }
        let mean = (later.sweep_seconds - self.sweep_seconds) / sweeps as f64;
        format!(
            "{sweeps} sweeps over {} cached summaries, {:.2} ms each on average",
            later.entries,
            mean * 1000.0
        )
    }

    /// The hit ratio between this reading and a later one.
    pub(super) fn ratio_until(&self, later: &CacheReads) -> String {
        let hit = later.hit - self.hit;
        let miss = later.miss - self.miss;
        let bypass = later.bypass - self.bypass;
        let total = (hit + miss + bypass).max(1);
        format!(
            "{:.1}% hits ({hit} hits, {miss} misses, {bypass} bypassed)",
            100.0 * hit as f64 / total as f64
        )
    }
}
