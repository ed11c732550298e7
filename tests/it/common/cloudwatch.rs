//! An in-repo CloudWatch endpoint for PutMetricData in the protocol `aws-sdk-cloudwatch` speaks
//! (Smithy RPC v2 CBOR: `POST /service/GraniteServiceVersion20100801/operation/PutMetricData`,
//! `application/cbor`, gzip when the SDK compresses). It decodes each request, checks what the
//! real service checks that matters here (at most 1,000 data points, a namespace, a name per
//! point), keeps the data points, and answers 200. Modes: `Ok`, `Hang` (read the request, never
//! answer) and `Error` (HTTP 500 InternalServiceError).
//!
//! - `FakeCloudWatch::start() -> FakeCloudWatch`; `.endpoint()`, `.set_mode(CwMode)`
//! - `.requests() -> Vec<PutMetricData>` (accepted requests), `.received()` (requests whose
//!   headers arrived, whatever the mode), `.datums()` (every accepted data point),
//!   `.sum(name, dims)` (sum of the values of `name` with exactly these dimensions)

use std::io::Read as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

pub const PUT_METRIC_DATA_PATH: &str = "/service/GraniteServiceVersion20100801/operation/PutMetricData";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CwMode {
    Ok,
    /// Read the request and never answer.
    Hang,
    /// HTTP 500 with an InternalServiceError body.
    Error,
}

/// One data point as the agent sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub name: String,
    pub dimensions: Vec<(String, String)>,
    pub value: f64,
    pub unit: String,
    /// Seconds since the epoch.
    pub timestamp: f64,
}

#[derive(Debug, Clone)]
pub struct PutMetricData {
    pub namespace: String,
    pub data: Vec<Datum>,
    pub gzip: bool,
}

#[derive(Default)]
struct State {
    mode: Option<CwMode>,
    requests: Vec<PutMetricData>,
    received: usize,
    /// Requests that did not decode, with the reason (a test failure).
    invalid: Vec<String>,
}

pub struct FakeCloudWatch {
    server: super::http::HttpServer,
    state: Arc<Mutex<State>>,
}

impl FakeCloudWatch {
    pub fn start() -> FakeCloudWatch {
        let state = Arc::new(Mutex::new(State { mode: Some(CwMode::Ok), ..State::default() }));
        let st = state.clone();
        let server = super::http::HttpServer::start("fake-cloudwatch", move |req| handle(st.clone(), req));
        FakeCloudWatch { server, state }
    }

    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    pub fn set_mode(&self, mode: CwMode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    pub fn requests(&self) -> Vec<PutMetricData> {
        let s = self.state.lock().unwrap();
        assert!(s.invalid.is_empty(), "the fake CloudWatch received invalid requests: {:?}", s.invalid);
        s.requests.clone()
    }

    pub fn received(&self) -> usize {
        self.state.lock().unwrap().received
    }

    pub fn datums(&self) -> Vec<Datum> {
        self.requests().into_iter().flat_map(|r| r.data).collect()
    }

    /// The sum of `name`'s values whose dimensions are exactly `dims` (in any order).
    pub fn sum(&self, name: &str, dims: &[(&str, &str)]) -> f64 {
        let mut want: Vec<(String, String)> = dims.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        want.sort();
        self.datums()
            .into_iter()
            .filter(|d| {
                let mut got = d.dimensions.clone();
                got.sort();
                d.name == name && got == want
            })
            .map(|d| d.value)
            .sum()
    }
}

type Resp = Response<Full<Bytes>>;

fn cbor_response(status: StatusCode, body: &ciborium::Value) -> Resp {
    let mut bytes = Vec::new();
    ciborium::ser::into_writer(body, &mut bytes).expect("encode cbor");
    Response::builder()
        .status(status)
        .header("content-type", "application/cbor")
        .header("smithy-protocol", "rpc-v2-cbor")
        .header("x-amzn-requestid", "fake-cloudwatch")
        .body(Full::new(Bytes::from(bytes)))
        .unwrap()
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Resp, std::io::Error> {
    let mode = {
        let mut s = state.lock().unwrap();
        s.received += 1;
        s.mode.unwrap_or(CwMode::Ok)
    };
    let path = req.uri().path().to_string();
    let gzip = req.headers().get("content-encoding").is_some_and(|v| v.as_bytes() == b"gzip");
    let protocol_ok = req.headers().get("smithy-protocol").is_some_and(|v| v.as_bytes() == b"rpc-v2-cbor");
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    match mode {
        CwMode::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        CwMode::Error => {
            let err = ciborium::Value::Map(vec![
                ("__type".into(), "InternalServiceError".into()),
                ("message".into(), "injected by the test".into()),
            ]);
            return Ok(cbor_response(StatusCode::INTERNAL_SERVER_ERROR, &err));
        }
        CwMode::Ok => {}
    }
    let decoded = if path != PUT_METRIC_DATA_PATH {
        Err(format!("unexpected path {path}"))
    } else if !protocol_ok {
        Err("no smithy-protocol: rpc-v2-cbor header".to_string())
    } else {
        decode(&body, gzip)
    };
    match decoded {
        Ok(put) => {
            state.lock().unwrap().requests.push(put);
            Ok(cbor_response(StatusCode::OK, &ciborium::Value::Map(vec![])))
        }
        Err(e) => {
            state.lock().unwrap().invalid.push(e.clone());
            let err = ciborium::Value::Map(vec![
                ("__type".into(), "InvalidParameterValue".into()),
                ("message".into(), e.into()),
            ]);
            Ok(cbor_response(StatusCode::BAD_REQUEST, &err))
        }
    }
}

fn field<'a>(map: &'a [(ciborium::Value, ciborium::Value)], key: &str) -> Option<&'a ciborium::Value> {
    map.iter().find(|(k, _)| k.as_text() == Some(key)).map(|(_, v)| v)
}

fn number(v: &ciborium::Value) -> Option<f64> {
    match v {
        ciborium::Value::Float(f) => Some(*f),
        ciborium::Value::Integer(i) => Some(i128::from(*i) as f64),
        ciborium::Value::Tag(1, inner) => number(inner),
        _ => None,
    }
}

fn decode(body: &[u8], gzip: bool) -> Result<PutMetricData, String> {
    let raw = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body).read_to_end(&mut out).map_err(|e| format!("gzip: {e}"))?;
        out
    } else {
        body.to_vec()
    };
    let value: ciborium::Value = ciborium::de::from_reader(&raw[..]).map_err(|e| format!("cbor: {e}"))?;
    let map = value.as_map().ok_or("the body is not a CBOR map")?;
    let namespace = field(map, "Namespace").and_then(|v| v.as_text()).ok_or("no Namespace")?.to_string();
    let items = field(map, "MetricData").and_then(|v| v.as_array()).ok_or("no MetricData")?;
    if items.is_empty() || items.len() > 1000 {
        return Err(format!("MetricData holds {} data points (1 to 1,000 allowed)", items.len()));
    }
    let mut data = Vec::with_capacity(items.len());
    for item in items {
        let m = item.as_map().ok_or("a data point is not a map")?;
        let name = field(m, "MetricName").and_then(|v| v.as_text()).ok_or("no MetricName")?.to_string();
        let mut dimensions = Vec::new();
        if let Some(dims) = field(m, "Dimensions") {
            for d in dims.as_array().ok_or("Dimensions is not a list")? {
                let d = d.as_map().ok_or("a dimension is not a map")?;
                let n = field(d, "Name").and_then(|v| v.as_text()).ok_or("a dimension without Name")?;
                let v = field(d, "Value").and_then(|v| v.as_text()).ok_or("a dimension without Value")?;
                dimensions.push((n.to_string(), v.to_string()));
            }
        }
        let value = field(m, "Value").and_then(number).ok_or_else(|| format!("{name}: no Value"))?;
        let unit = field(m, "Unit").and_then(|v| v.as_text()).unwrap_or("None").to_string();
        let timestamp = field(m, "Timestamp").and_then(number).unwrap_or(0.0);
        data.push(Datum { name, dimensions, value, unit, timestamp });
    }
    Ok(PutMetricData { namespace, data, gzip })
}
