//! ADDEC2METADATA: the instance's identity added to each JSON object record, as the Java agent
//! writes it: `privateIp`, `availabilityZone`, `instanceId`, `instanceType`, `accountId`, `amiId`,
//! `region`, `metadataTimestamp` (local time, `yyyy-MM-ddTHH:mm:ssZ`) and `tags` (keys in lower
//! case), after the record's own fields (a field of the same name takes the new value in place).
//!
//! The identity comes from IMDSv2 in a background task, again every `metadataTTL`: converting a
//! record never waits on IMDS, except the first records of the agent, which wait at most
//! `FIRST_WAIT` for the first answer. Until there is one (off EC2, for example), records pass
//! unchanged and one warning says why; a failed refresh keeps the last identity.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::Deserialize as _;
use serde_json::{Map, Value};

use crate::config::JsonFormat;
use crate::ec2::Endpoint;

/// The longest the first records wait for the first answer from IMDS.
pub const FIRST_WAIT: Duration = Duration::from_secs(3);
/// While IMDS does not answer, it is asked again this often (or every TTL, if shorter).
const RETRY: Duration = Duration::from_secs(60);

/// Said once per process: IMDS does not answer.
static WARNED_UNAVAILABLE: AtomicBool = AtomicBool::new(false);
/// Said once per process: a record is not a JSON object.
static WARNED_NOT_OBJECT: AtomicBool = AtomicBool::new(false);

/// The fields added to each record, in order.
pub type Fields = Vec<(String, Value)>;

/// The instance identity, shared by every flow with the same endpoint and TTL.
#[derive(Debug)]
pub struct Source {
    endpoint: Endpoint,
    ttl: Duration,
    current: RwLock<Option<Arc<Fields>>>,
    /// True once the first attempt is over (answered or not).
    settled: tokio::sync::watch::Sender<bool>,
    started: AtomicBool,
}

impl Source {
    /// The source for this endpoint and TTL (one per process, so IMDS is asked once per TTL).
    pub fn shared(endpoint: &Endpoint, ttl: Duration) -> Arc<Source> {
        static SOURCES: Mutex<Vec<Arc<Source>>> = Mutex::new(Vec::new());
        let mut sources = SOURCES.lock().unwrap();
        let key = endpoint.describe();
        if let Some(s) = sources.iter().find(|s| s.ttl == ttl && s.endpoint.describe() == key) {
            return s.clone();
        }
        let s = Arc::new(Source {
            endpoint: endpoint.clone(),
            ttl,
            current: RwLock::new(None),
            settled: tokio::sync::watch::channel(false).0,
            started: AtomicBool::new(false),
        });
        sources.push(s.clone());
        s
    }

    /// The fields to add now, if IMDS has answered.
    pub fn current(&self) -> Option<Arc<Fields>> {
        self.current.read().unwrap().clone()
    }

    /// Starts the refresher on first use, and waits (at most `FIRST_WAIT`) for its first attempt.
    pub async fn ready(self: &Arc<Self>) {
        if *self.settled.borrow() {
            return;
        }
        if !self.started.swap(true, Ordering::SeqCst) {
            tokio::spawn(self.clone().refresh());
        }
        let mut rx = self.settled.subscribe();
        let _ = tokio::time::timeout(FIRST_WAIT, rx.wait_for(|s| *s)).await;
    }

    async fn refresh(self: Arc<Self>) {
        let client = match self.endpoint.client() {
            Ok(c) => c,
            Err(e) => {
                unavailable(&self.endpoint, &e, None);
                self.settled.send_replace(true);
                return;
            }
        };
        let mut failing = false;
        loop {
            let wait = match fetch(&client, SystemTime::now()).await {
                Ok(fields) => {
                    *self.current.write().unwrap() = Some(Arc::new(fields));
                    if failing {
                        tracing::info!(
                            "ADDEC2METADATA: instance metadata from {} is available again",
                            self.endpoint.describe()
                        );
                        failing = false;
                    }
                    tracing::debug!("ADDEC2METADATA: instance metadata refreshed");
                    self.ttl
                }
                Err(e) => {
                    let retry = self.ttl.min(RETRY);
                    if !failing {
                        let had = self.current().is_some();
                        unavailable(&self.endpoint, &e, Some((retry, had)));
                        failing = true;
                    }
                    retry
                }
            };
            self.settled.send_replace(true);
            tokio::time::sleep(wait).await;
        }
    }
}

fn unavailable(endpoint: &Endpoint, error: &crate::ec2::ImdsError, retry: Option<(Duration, bool)>) {
    if WARNED_UNAVAILABLE.swap(true, Ordering::Relaxed) {
        tracing::debug!("ADDEC2METADATA: no instance metadata from {}: {error}", endpoint.describe());
        return;
    }
    let then = match retry {
        None => "records pass without it (unchanged)".to_owned(),
        Some((every, false)) => format!(
            "records pass without it (unchanged) until it answers (asked again every {} s; said once)",
            every.as_secs()
        ),
        Some((every, true)) => format!(
            "records keep the last metadata read until it answers (asked again every {} s; said once)",
            every.as_secs()
        ),
    };
    tracing::warn!(
        "ADDEC2METADATA: no EC2 instance metadata from {} ({error}); {then}. Off EC2 this is expected; \
         on EC2 check that the instance metadata service is enabled (or set `ec2.metadataEndpoint`)",
        endpoint.describe()
    );
}

/// The identity document (and the tags, when instance metadata exposes them) as the fields to add.
async fn fetch(client: &aws_config::imds::Client, at: SystemTime) -> Result<Fields, crate::ec2::ImdsError> {
    let doc = crate::ec2::identity_document(client).await?;
    let tags = crate::ec2::tags(client).await;
    Ok(fields(&doc, tags, at))
}

/// The fields in the Java agent's order; a value missing from the document is `null`.
pub fn fields(doc: &Map<String, Value>, tags: Option<Vec<(String, String)>>, at: SystemTime) -> Fields {
    let text = |k: &str| match doc.get(k) {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Null) | None => Value::Null,
        Some(other) => Value::String(other.to_string()),
    };
    let mut out: Fields = [
        ("privateIp", "privateIp"),
        ("availabilityZone", "availabilityZone"),
        ("instanceId", "instanceId"),
        ("instanceType", "instanceType"),
        ("accountId", "accountId"),
        ("amiId", "imageId"),
        ("region", "region"),
    ]
    .iter()
    .map(|(name, key)| ((*name).to_owned(), text(key)))
    .collect();
    out.push(("metadataTimestamp".to_owned(), Value::String(local_timestamp(at))));
    if let Some(tags) = tags {
        let mut map = Map::new();
        for (k, v) in tags {
            map.insert(k, Value::String(v));
        }
        out.push(("tags".to_owned(), Value::Object(map)));
    }
    out
}

/// Java's `SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ssZ")` in the local time zone:
/// `2026-11-22T08:15:30+0100`. libc's `localtime_r` rather than a date crate such as `jiff`: it
/// reads the same `TZ` and `/etc/localtime` the Java agent did, and one format does not warrant a
/// time-zone database in the binary.
pub fn local_timestamp(at: SystemTime) -> String {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as libc::time_t;
    // SAFETY: localtime_r only writes the `tm` we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return crate::record::process::simple::utc_millis(at);
    }
    let off = tm.tm_gmtoff / 60;
    let sign = if off < 0 { '-' } else { '+' };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        off.abs() / 60,
        off.abs() % 60
    )
}

/// What ADDEC2METADATA made of a record.
#[derive(Debug, PartialEq, Eq)]
pub enum Converted {
    Text(String),
    /// No metadata yet: the record goes on unchanged.
    Unchanged,
    /// Not a JSON object: the Java agent sends the raw record (and counts an error).
    NotAnObject,
}

/// Adds `fields` to the JSON object `record` (read as Jackson reads it: what follows the object
/// is ignored).
pub fn add(record: &str, fields: Option<&Fields>, json: JsonFormat) -> Converted {
    let Some(fields) = fields else { return Converted::Unchanged };
    let mut de = serde_json::Deserializer::from_str(record);
    let Ok(mut map) = Map::deserialize(&mut de) else {
        if !WARNED_NOT_OBJECT.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "ADDEC2METADATA: a record is not a JSON object, so it is sent as read (as the Java agent does; \
                 put LOGTOJSON or CSVTOJSON before it). Such records are counted in the status line's \
                 processing errors; said once"
            );
        }
        return Converted::NotAnObject;
    };
    for (k, v) in fields.iter() {
        map.insert(k.clone(), v.clone());
    }
    Converted::Text(super::json::object_record(&map, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Map<String, Value> {
        serde_json::from_str(
            r#"{"accountId":"123456789012","architecture":"x86_64","availabilityZone":"eu-west-1b",
                "imageId":"ami-0abcdef1234567890","instanceId":"i-0123456789abcdef0","instanceType":"m5.large",
                "pendingTime":"2026-11-01T10:00:00Z","privateIp":"10.0.1.23","region":"eu-west-1","version":"2017-09-30"}"#,
        )
        .unwrap()
    }

    #[test]
    fn fields_in_java_order() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let f = fields(&doc(), Some(vec![("name".into(), "web-1".into()), ("team".into(), "Ops".into())]), at);
        let names: Vec<_> = f.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "privateIp",
                "availabilityZone",
                "instanceId",
                "instanceType",
                "accountId",
                "amiId",
                "region",
                "metadataTimestamp",
                "tags"
            ]
        );
        assert_eq!(f[5].1, "ami-0abcdef1234567890");
        let no_tags = fields(&Map::new(), None, at);
        assert_eq!(no_tags.len(), 8, "no tags field when tags are not available");
        assert_eq!(no_tags[0].1, Value::Null);
    }

    #[test]
    fn records_get_the_fields_after_their_own() {
        let at = SystemTime::UNIX_EPOCH;
        let f = fields(&doc(), Some(vec![("name".into(), "web-1".into())]), at);
        let ts = local_timestamp(at);
        let out = add("{\"region\":\"old\",\"n\":1.0,\"msg\":\"a\\u0001\"} trailing\n", Some(&f), JsonFormat::Compact);
        assert_eq!(
            out,
            Converted::Text(format!(
                "{{\"region\":\"eu-west-1\",\"n\":1.0,\"msg\":\"a\\u0001\",\"privateIp\":\"10.0.1.23\",\
                 \"availabilityZone\":\"eu-west-1b\",\"instanceId\":\"i-0123456789abcdef0\",\"instanceType\":\"m5.large\",\
                 \"accountId\":\"123456789012\",\"amiId\":\"ami-0abcdef1234567890\",\"metadataTimestamp\":\"{ts}\",\
                 \"tags\":{{\"name\":\"web-1\"}}}}\n"
            ))
        );
        let pretty = add("{\"a\":[1,2]}\n", Some(&f[..1].to_vec()), JsonFormat::PrettyPrint);
        assert_eq!(pretty, Converted::Text("{\n  \"a\" : [ 1, 2 ],\n  \"privateIp\" : \"10.0.1.23\"\n}\n".into()));
        assert_eq!(add("plain line\n", Some(&f), JsonFormat::Compact), Converted::NotAnObject);
        assert_eq!(add("[1]\n", Some(&f), JsonFormat::Compact), Converted::NotAnObject);
        assert_eq!(add("{\"a\":1}\n", None, JsonFormat::Compact), Converted::Unchanged);
    }

    #[test]
    fn timestamp_format() {
        let re = regex::Regex::new(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}\z").unwrap();
        let t = local_timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_233_386));
        assert!(re.is_match(&t), "{t}");
    }
}
