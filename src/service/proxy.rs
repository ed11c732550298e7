//! HTTP(S) proxies, as the AWS CLI and curl take them from the environment: `HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`, upper or lower case (the upper-case one wins). The
//! AWS SDK's HTTP client applies them; this module keeps the instance metadata service out of
//! them, says which proxy a destination uses (with the credentials masked), and keeps the
//! proxies' credentials out of every log line (`Redact`).

use std::io::Write;
use std::sync::OnceLock;

use hyper_util::client::proxy::matcher::Matcher;

/// The instance metadata service (IPv4 and IPv6): never reached through a proxy.
const IMDS_HOSTS: [&str; 2] = ["169.254.169.254", "fd00:ec2::254"];

const PROXY_VARS: [&str; 6] = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];

/// Strings never written to the log (proxy credentials, the configured secret key).
static SECRETS: OnceLock<Vec<String>> = OnceLock::new();

/// Whether any proxy variable is set.
pub fn configured() -> bool {
    PROXY_VARS.iter().any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// Adds the instance metadata service (its standard addresses, and the host of
/// AWS_EC2_METADATA_SERVICE_ENDPOINT) to `NO_PROXY`, so that the SDK's instance-profile
/// credentials never go through a proxy, whatever the variables say (the agent's own metadata
/// client, for `ec2.metadataEndpoint`, has no proxy at all). Also registers the proxies'
/// credentials and `secrets` for `Redact`.
///
/// Must be called before any other thread starts (it sets environment variables).
pub fn prepare(secrets: &[&str]) {
    let mut hidden: Vec<String> = secrets.iter().filter(|s| s.len() >= 4).map(|s| s.to_string()).collect();
    for v in PROXY_VARS {
        if let Ok(url) = std::env::var(v) {
            hidden.extend(credentials_of(&url));
        }
    }
    let _ = SECRETS.set(hidden);
    if !configured() {
        return;
    }
    // The first of NO_PROXY, no_proxy that is set is the one the HTTP client reads.
    let current = std::env::var("NO_PROXY").or_else(|_| std::env::var("no_proxy")).unwrap_or_default();
    let mut hosts: Vec<String> =
        current.split(',').map(str::trim).filter(|h| !h.is_empty()).map(String::from).collect();
    let endpoint_host = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT").ok().as_deref().and_then(host_of);
    for h in IMDS_HOSTS.iter().map(|h| h.to_string()).chain(endpoint_host) {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    let value = hosts.join(",");
    // SAFETY: called at the start of `main`, before the runtime or any other thread exists.
    unsafe {
        std::env::set_var("NO_PROXY", &value);
        std::env::set_var("no_proxy", &value);
    }
}

fn host_of(url: &str) -> Option<String> {
    let uri: hyper::Uri = url.parse().ok()?;
    Some(uri.host()?.trim_start_matches('[').trim_end_matches(']').to_string())
}

/// The user information of a proxy URL, as it may appear in a log: `user:password`, the
/// password (as written and percent-decoded) and the Basic authorization value.
fn credentials_of(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let Some((userinfo, _)) = authority.rsplit_once('@') else { return Vec::new() };
    let mut out = vec![userinfo.to_string()];
    if let Some((user, pass)) = userinfo.split_once(':') {
        let decode = |s: &str| percent_decode(s);
        out.push(pass.to_string());
        out.push(decode(pass));
        use base64::Engine;
        out.push(base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", decode(user), decode(pass))));
    }
    out.retain(|s| s.len() >= 4);
    out
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Which proxy a request to `url` goes through, as the SDK's HTTP client decides it (the same
/// matcher): `proxy http://127.0.0.1:3128 (with credentials)` or `direct`. Never the credentials.
pub fn describe(url: &str) -> String {
    let Ok(uri) = url.parse::<hyper::Uri>() else { return "direct".into() };
    match Matcher::from_env().intercept(&uri) {
        None => "direct".into(),
        Some(i) => {
            let auth = if i.basic_auth().is_some() || i.raw_auth().is_some() { " (with credentials)" } else { "" };
            format!("proxy {}{auth}", i.uri().to_string().trim_end_matches('/'))
        }
    }
}

/// `text` with every secret replaced by `***`, or `None` when it holds none.
fn mask(text: &[u8], secrets: &[String]) -> Option<String> {
    let text = String::from_utf8_lossy(text);
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return None;
    }
    let mut masked = text.into_owned();
    // Longest first: a password inside `user:password` goes with it.
    let mut by_length: Vec<&String> = secrets.iter().collect();
    by_length.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in by_length {
        masked = masked.replace(s.as_str(), "***");
    }
    Some(masked)
}

/// A log writer that masks the registered secrets (`prepare`) with `***`.
pub struct Redact<W>(pub W);

impl<W: Write> Write for Redact<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match mask(buf, SECRETS.get().map(Vec::as_slice).unwrap_or_default()) {
            Some(masked) => self.0.write_all(masked.as_bytes()),
            None => self.0.write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_found_in_every_form() {
        let c = credentials_of("http://shipper:p%40ss-w0rd@127.0.0.1:3128/");
        assert!(c.contains(&"shipper:p%40ss-w0rd".to_string()));
        assert!(c.contains(&"p%40ss-w0rd".to_string()));
        assert!(c.contains(&"p@ss-w0rd".to_string()));
        // base64("shipper:p@ss-w0rd"), as in a Proxy-Authorization header.
        assert!(c.contains(&"c2hpcHBlcjpwQHNzLXcwcmQ=".to_string()));
        assert!(credentials_of("http://127.0.0.1:3128").is_empty());
    }

    #[test]
    fn secrets_are_masked_in_log_lines() {
        let secrets = credentials_of("http://shipper:pw%21-1234@proxy:3128");
        let line = b"WARN connect to http://shipper:pw%21-1234@proxy:3128 failed; auth c2hpcHBlcjpwdyEtMTIzNA==\n";
        let masked = mask(line, &secrets).unwrap();
        assert_eq!(masked, "WARN connect to http://***@proxy:3128 failed; auth ***\n");
        assert!(mask(b"nothing secret here\n", &secrets).is_none());
    }

    #[test]
    fn hosts_of_endpoints() {
        assert_eq!(host_of("http://169.254.169.254:80/").as_deref(), Some("169.254.169.254"));
        assert_eq!(host_of("http://[fd00:ec2::254]").as_deref(), Some("fd00:ec2::254"));
        assert_eq!(host_of("not a url"), None);
    }
}
