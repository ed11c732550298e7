//! The optional Prometheus listener (`prometheus.port`, loopback unless `prometheus.address`
//! says otherwise): `GET /metrics` in the text exposition format, `GET /healthz` (200 while the
//! agent's checkpoint loop turns, 503 when it stalls). Scrapes read the counters the status
//! line reads; serving them never touches the data path.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

/// `/healthz`: 200 with the text, or 503 with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy(String),
    Unhealthy(String),
}

/// What a scrape shows; the agent implements it over its live state.
pub trait Source: Send + Sync + 'static {
    /// The metrics, in the text exposition format.
    fn render(&self) -> String;
    /// Whether the agent is healthy, and a line saying so.
    fn health(&self) -> Health;
}

/// Bind `addr` (errors are the caller's to report) and serve until `stop`.
pub async fn serve(addr: SocketAddr, source: Arc<dyn Source>, stop: CancellationToken) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("Prometheus metrics on http://{}/metrics", listener.local_addr()?);
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!("metrics listener: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let source = source.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let source = source.clone();
                    async move { Ok::<_, std::convert::Infallible>(respond(&req, source.as_ref())) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(())
}

fn respond(req: &Request<Incoming>, source: &dyn Source) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", source.render()),
        (&Method::GET, "/healthz") => match source.health() {
            Health::Healthy(t) => (StatusCode::OK, "text/plain; charset=utf-8", t + "\n"),
            Health::Unhealthy(t) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", t + "\n"),
        },
        (&Method::GET, _) => (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "try /metrics or /healthz\n".into()),
        _ => (StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "GET only\n".into()),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static parts are valid")
}

/// Builds the exposition text: one `# HELP`/`# TYPE` per metric, then its samples.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// A metric with `samples` of (labels, value).
    pub fn metric(&mut self, name: &str, kind: &str, help: &str, samples: &[(Vec<(&str, String)>, f64)]) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.out.push_str(name);
            if !labels.is_empty() {
                self.out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    let _ = write!(self.out, "{k}=\"{}\"", escape(v));
                }
                self.out.push('}');
            }
            let _ = writeln!(self.out, " {value}");
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let mut e = Exposition::default();
        e.metric(
            "kinesis_agent_records_sent_total",
            "counter",
            "Records the destination accepted.",
            &[(vec![("flow", "flows[0]".into()), ("path", "/a \"b\"\\c".into())], 42.0)],
        );
        assert_eq!(
            e.finish(),
            "# HELP kinesis_agent_records_sent_total Records the destination accepted.\n\
             # TYPE kinesis_agent_records_sent_total counter\n\
             kinesis_agent_records_sent_total{flow=\"flows[0]\",path=\"/a \\\"b\\\"\\\\c\"} 42\n"
        );
    }
}
