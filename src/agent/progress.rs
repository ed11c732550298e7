//! `--once` progress: on a terminal, a bar per flow (bytes read of the bytes to read, rate,
//! ETA, records sent); otherwise a plain log line per flow every `--progress-every`.
//!
//! The total is what the flow's files held beyond their checkpoints when they were found (the
//! flow's `bytes_behind` after its single scan). Reading runs ahead of delivery by up to the
//! in-flight budget, so "done" is the bytes read scaled by the share of the records read that
//! the destination accepted: exact once everything is read, close before.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::metrics::Snapshot;
use crate::sink::sender::FlowSender;

/// The bars, while they are drawn: log lines are written around them (see `LogWriter`).
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Bars on standard error (a terminal).
    Bars,
    /// A log line per flow this often.
    Lines(Duration),
}

impl Display {
    /// Bars when standard error is a terminal that can draw them, else lines every `every`.
    pub fn detect(every: Duration) -> Self {
        use std::io::IsTerminal;
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        if std::io::stderr().is_terminal() && !dumb { Display::Bars } else { Display::Lines(every) }
    }
}

/// Standard error for the log, drawn around the progress bars when they are shown.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match BARS.get() {
            Some(bars) => bars.suspend(|| std::io::stderr().write_all(buf)),
            None => std::io::stderr().write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Shows the progress of `senders` until `stop` is cancelled, then draws the final state.
pub async fn show(senders: Arc<Mutex<Vec<Arc<FlowSender>>>>, display: Display, stop: CancellationToken) {
    match display {
        Display::Bars => bars(senders, stop).await,
        Display::Lines(every) => lines(senders, every, stop).await,
    }
}

async fn bars(senders: Arc<Mutex<Vec<Arc<FlowSender>>>>, stop: CancellationToken) {
    let multi = BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5)));
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    let mut shown: Vec<(Arc<FlowSender>, ProgressBar)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        for s in senders.lock().unwrap().iter() {
            if !shown.iter().any(|(x, _)| Arc::ptr_eq(x, s)) {
                let bar = multi.add(ProgressBar::new(0).with_style(style.clone()).with_prefix(short_label(&s.label)));
                shown.push((s.clone(), bar));
            }
        }
        for (s, bar) in &shown {
            let m = s.metrics.snapshot();
            bar.set_length(m.bytes_behind.max(m.bytes_read));
            bar.set_position(delivered(&m));
            bar.set_message(format!("{} records sent", m.records_sent));
        }
        if stopping {
            for (_, bar) in &shown {
                bar.abandon();
            }
            return;
        }
    }
}

async fn lines(senders: Arc<Mutex<Vec<Arc<FlowSender>>>>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let elapsed = started.elapsed();
        for s in senders.lock().unwrap().iter() {
            tracing::info!("{}: {}", s.label, progress_line(&s.metrics.snapshot(), elapsed));
        }
    }
}

/// `flows[0] (kinesis stream x in r)` → `flows[0] x`: the bar's prefix.
fn short_label(label: &str) -> String {
    let Some((head, rest)) = label.split_once(" (") else { return label.to_owned() };
    let name = rest.trim_end_matches(')').split(" in ").next().unwrap_or(rest);
    let name = name.rsplit(' ').next().unwrap_or(name);
    format!("{head} {name}")
}

/// File bytes delivered, estimated: the bytes read times the share of the records read that
/// were accepted.
fn delivered(m: &Snapshot) -> u64 {
    if m.records_read == 0 {
        return 0;
    }
    let share = m.records_sent.min(m.records_read) as f64 / m.records_read as f64;
    (m.bytes_read as f64 * share) as u64
}

/// "12.0 MiB of 48.0 MiB delivered (25 %), 1.2 MiB/s, about 30 s left; 123456 records sent".
pub fn progress_line(m: &Snapshot, elapsed: Duration) -> String {
    let total = m.bytes_behind.max(m.bytes_read);
    let done = delivered(m);
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let percent = (done * 100).checked_div(total).unwrap_or(100);
    let left = if done >= total {
        "all sent".to_owned()
    } else if rate < 1.0 {
        "time left unknown".to_owned()
    } else {
        format!("about {} left", duration_text(Duration::from_secs_f64((total - done) as f64 / rate)))
    };
    format!(
        "{} of {} delivered ({percent} %), {}/s, {left}; {} records sent",
        bytes_text(done),
        bytes_text(total),
        bytes_text(rate as u64),
        m.records_sent
    )
}

fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

fn duration_text(d: Duration) -> String {
    let s = d.as_secs().max(1);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_shows_share_rate_eta_and_records() {
        // Half of what was read is accepted.
        let m = Snapshot {
            bytes_read: 24 << 20,
            bytes_behind: 48 << 20,
            records_read: 200,
            records_sent: 100,
            ..Default::default()
        };
        assert_eq!(
            progress_line(&m, Duration::from_secs(10)),
            "12.0 MiB of 48.0 MiB delivered (25 %), 1.2 MiB/s, about 30 s left; 100 records sent"
        );
        let done = Snapshot {
            bytes_read: 5_000,
            bytes_behind: 5_000,
            records_read: 50,
            records_sent: 50,
            ..Default::default()
        };
        assert_eq!(
            progress_line(&done, Duration::from_secs(2)),
            "4.9 KiB of 4.9 KiB delivered (100 %), 2.4 KiB/s, all sent; 50 records sent"
        );
        let stuck = Snapshot { bytes_read: 1 << 20, bytes_behind: 7 << 30, records_read: 10, ..Default::default() };
        assert_eq!(
            progress_line(&stuck, Duration::from_secs(5)),
            "0 B of 7.0 GiB delivered (0 %), 0 B/s, time left unknown; 0 records sent"
        );
        let empty = Snapshot::default();
        assert!(progress_line(&empty, Duration::from_secs(1)).starts_with("0 B of 0 B delivered (100 %)"));
    }

    #[test]
    fn durations_and_labels() {
        assert_eq!(duration_text(Duration::from_secs(3725)), "1 h 2 min");
        assert_eq!(duration_text(Duration::from_secs(125)), "2 min 5 s");
        assert_eq!(duration_text(Duration::from_millis(10)), "1 s");
        assert_eq!(short_label("flows[2] (kinesis stream app-logs in eu-west-1)"), "flows[2] app-logs");
        assert_eq!(short_label("flows[0] (firehose delivery stream fh)"), "flows[0] fh");
        assert_eq!(short_label("odd"), "odd");
    }
}
