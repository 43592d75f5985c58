//! Prometheus metrics: counters updated where things happen, and a `/metrics` endpoint on a
//! loopback address. Without a recorder installed (no `metrics.listen`), every update is a
//! no-op.

use std::net::SocketAddr;
use std::sync::Arc;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use mx_spool::{FileSpool, Spool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::RelayError;

pub fn connection_opened() {
    metrics::counter!("mxroute_smtp_connections_total").increment(1);
    metrics::gauge!("mxroute_smtp_connections_active").increment(1.0);
}

pub fn connection_closed() {
    metrics::gauge!("mxroute_smtp_connections_active").decrement(1.0);
}

pub fn connection_refused(reason: &'static str) {
    metrics::counter!("mxroute_smtp_connections_refused_total", "reason" => reason).increment(1);
}

pub fn message_accepted(bytes: usize) {
    metrics::counter!("mxroute_messages_accepted_total").increment(1);
    metrics::counter!("mxroute_message_bytes_accepted_total").increment(bytes as u64);
}

/// End of DATA (the final dot read) to the 250 about to be written, in seconds: the time a
/// client waits for its message to be durable.
pub fn accept_latency(seconds: f64) {
    metrics::histogram!("mxroute_accept_seconds").record(seconds);
}

/// Buckets of `mxroute_accept_seconds`, around the 20 ms target; a real histogram (not the
/// exporter's default summary) so that quantiles can be aggregated over time and relays.
const ACCEPT_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

pub fn message_refused(reason: &'static str) {
    metrics::counter!("mxroute_messages_refused_total", "reason" => reason).increment(1);
}

pub fn recipient_refused(enhanced: &'static str) {
    metrics::counter!("mxroute_recipients_refused_total", "status" => enhanced).increment(1);
}

pub fn local_delivery(status: &'static str) {
    metrics::counter!("mxroute_local_deliveries_total", "status" => status).increment(1);
}

/// Install the global recorder (once per process) and serve it on `addr` until `stop`.
pub async fn serve(
    addr: SocketAddr,
    spool: Arc<FileSpool>,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), RelayError> {
    let handle = recorder()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RelayError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| RelayError::Bind { addr, source })?;
    tracing::info!(listen = %bound, "serving Prometheus metrics at /metrics");
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                accepted = listener.accept() => {
                    let Ok((mut stream, _)) = accepted else { continue };
                    let handle = handle.clone();
                    let spool = spool.clone();
                    tokio::spawn(async move {
                        // One request per connection; the request itself does not matter
                        // beyond its first line.
                        let mut buf = [0u8; 1024];
                        let n = stream.read(&mut buf).await.unwrap_or(0);
                        let first = String::from_utf8_lossy(&buf[..n]);
                        let (status, body) = if first.starts_with("GET /metrics ") {
                            spool_gauges(&spool).await;
                            ("200 OK", handle.render())
                        } else {
                            ("404 Not Found", "try /metrics\n".to_string())
                        };
                        let response = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(response.as_bytes()).await;
                    });
                }
            }
        }
    });
    Ok((bound, task))
}

fn recorder() -> Result<PrometheusHandle, RelayError> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("mxroute_accept_seconds".to_string()),
            ACCEPT_BUCKETS,
        )
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| RelayError::Config {
            label: "metrics".into(),
            message: e.to_string(),
        })?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Spool size and age, measured at scrape time.
async fn spool_gauges(spool: &Arc<FileSpool>) {
    let spool = spool.clone();
    let measured = tokio::task::spawn_blocking(move || {
        let ids = spool.list().ok()?;
        let oldest = ids
            .first()
            .and_then(|id| spool.load(id).ok())
            .map(|m| m.envelope.received_at);
        Some((ids.len(), oldest))
    })
    .await
    .ok()
    .flatten();
    if let Some((count, oldest)) = measured {
        metrics::gauge!("mxroute_spool_messages").set(count as f64);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let age = oldest.map_or(0, |t| now.saturating_sub(t));
        metrics::gauge!("mxroute_spool_oldest_age_seconds").set(age as f64);
    }
}

pub fn delivery_result(status: &'static str) {
    metrics::counter!("mxroute_delivery_results_total", "status" => status).increment(1);
}

pub fn delivery_attempt(exchanger: &str, outcome: &'static str) {
    metrics::counter!("mxroute_delivery_attempts_total", "exchanger" => exchanger.to_string(), "outcome" => outcome).increment(1);
}
