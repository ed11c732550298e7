//! Adaptive pacing of one flow (one stream): a token bucket on records per second, whose rate is
//! set by the throttled fraction of what was sent.
//!
//! Why a token bucket driven by the throttle rate, not AIMD on the request concurrency: the
//! limits of Kinesis and Firehose are rates (records and bytes per second, per shard or stream),
//! and a single connection can exceed a shard's on its own, so concurrency is the wrong knob. And
//! the throttled fraction `f` tells how far over the limit we are: sending `R` where the stream
//! takes `C` throttles about `1 - C/R` of the entries, so the first cut of an episode, to
//! `R × (1 - f)` (what the stream took), lands near `C`, where halving needs several rounds.
//! Windows with less than 1 % throttled are only counted: their retries cost next to nothing.
//! At full speed, so is a first window with less than `MIN_CUT` throttled: pacing starts at the
//! second in a row. An episode costs seconds of pace (about 9 s back to full speed), where the
//! retries of one window's few throttled records go with the next batches; a blip (a burst of
//! another producer, a noisy destination) no longer starts one.
//!
//! The law is additive increase, multiplicative decrease, in records per second:
//! - the first throttled window of an episode cuts the rate to what the stream took; later ones
//!   by a common factor, `PACED_CUT` (by half where nearly all was throttled), never below
//!   `MIN_RATE`;
//! - from a cut, the rate grows by `GROWTH` records/s every second, the same for every flow,
//!   and only after `FLAT` (4 s) without a cut also by a factor (×512 at 8.5 s), so that full
//!   speed is back within seconds once the throttling stops.
//!
//! Why, for a fleet (many agents, one per host, into one stream): the stream's shards throttle
//! whatever arrives once their budget for the second is used, so every agent sees about the same
//! throttled fraction, and what each gets is in proportion to what it sends. A cut by a common
//! factor and a growth by a common factor (the previous law, `2^(t²/8)` from the last cut)
//! keep the shares where the start put them; a common cut factor and a common *addition* shrink
//! the difference between two agents by the cut factor at every cut (Chiu and Jain's result for
//! AIMD), whatever their rates. Which entries of one request a shard takes is a lottery (the
//! first after its budget refilled), so a paced window is judged only once it holds
//! `MIN_ANSWERS` answers (by `record`, never by the clock), and a window starts where the last
//! ended: an agent sending one batch every few seconds is judged on its real rate, and less
//! often than a bigger one. The lottery is also why a paced cut does not depend on the fraction
//! (see `judge`), and why a paced send waits a random part of its due more: flows of a fleet at
//! the same pace send in a fixed phase to each other, and the one whose sends came just after
//! another's (finding the shards' budget used) stayed unlucky for as long as that held.
//!
//! Full speed (no pacing at all) is declared once the pace has grown past any rate a host sends
//! at (`MAX_RATE`, about 9 s after a cut), or when the flow has sent nothing for two windows.
//! Not sooner just because no send waited for the pace: a flow whose retries are backing off does
//! not wait either, and returning it to full speed then only brought the throttling back.
//!
//! Throttling that does not ease when we slow down (a hot key, a producer that does not pace
//! itself) is not ours to fix by pacing when it is a minority of what we send: once cut to an
//! eighth of the rate at the start of a run of throttled windows with no less throttled (and at
//! most `HOLD_AT_MOST`), pacing is dropped and throttling only counted for `HOLD`; the per-batch
//! retry backoff still applies. A destination taking almost nothing (`f` ≥ 0.9) keeps being
//! cut, down to `MIN_RATE`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::RngExt;
use rand::rngs::SmallRng;
use tokio::time::Instant;

/// Results are judged per window of this length.
const WINDOW: Duration = Duration::from_secs(1);
/// The slowest pace, records per second.
pub const MIN_RATE: f64 = 100.0;
/// Above this the rate is as good as unlimited (a host does not send more records per second).
const MAX_RATE: f64 = 1_000_000.0;
/// Tokens saved while idle, in seconds of the current rate.
const BURST: f64 = 0.5;
/// A waiting send re-checks the rate at least this often (it may have grown meanwhile).
const MAX_STEP: Duration = Duration::from_millis(100);
/// How long throttling that did not ease after a cut is only counted.
const HOLD: Duration = Duration::from_secs(10);
/// A throttled fraction below which a window counts as clean.
const NOISE: f64 = 0.01;
/// A throttled fraction from which the destination takes almost nothing: keep cutting.
const NEARLY_ALL: f64 = 0.9;
/// Records per second the pace grows by, per second since the last cut: the same for every
/// flow, whatever its rate, so that flows sharing a stream converge to equal shares.
const GROWTH: f64 = 100.0;
/// For this long after a cut the pace grows by `GROWTH` only; then also by a factor (×512 at
/// 4.5 s more), so that full speed is back within seconds once the throttling stops.
const FLAT: Duration = Duration::from_secs(4);
/// A first throttled window at full speed with less than this throttled only counts (pacing
/// starts at the second in a row).
const MIN_CUT: f64 = 0.15;
/// The cut of a paced flow's throttled window (a share of its rate).
const PACED_CUT: f64 = 0.2;
/// A paced send waits until the bucket holds up to this share of its records more than it
/// needs (a random part, at most a quarter of a second of the rate): it shifts the flow's phase
/// against the others' at random, at no cost to its rate.
const JITTER: f64 = 0.3;
/// Answers a paced flow's window needs before it is judged.
const MIN_ANSWERS: u32 = 3;
/// The largest throttled fraction that may be left to the retries when it does not ease.
const HOLD_AT_MOST: f64 = 0.3;

/// A change worth one log line (once per throttling episode, not per request).
#[derive(Debug, Clone, PartialEq)]
pub enum PaceChange {
    /// Throttling began: sends are paced to this many records per second. `code`: the error code
    /// of most throttled entries so far (the answer that closed the window may have had none).
    Slowed { to: f64, code: String },
    /// Full speed again, this long after the last throttled window.
    Full { after: Duration },
}

struct Paced {
    /// The rate right after the last cut, records per second.
    base: f64,
    /// Records per second added per second since the cut (`GROWTH`, or none while the
    /// destination takes nothing).
    add: f64,
    /// When it was cut.
    since: Instant,
    /// Records that may be sent now; negative: owed by the next sends.
    tokens: f64,
    refilled: Instant,
}

impl Paced {
    fn rate(&self, now: Instant) -> f64 {
        let t = (now - self.since).as_secs_f64().min(60.0);
        // ×512 (2⁹) at FLAT + 4.5 s.
        let after = (t - FLAT.as_secs_f64()).max(0.0) / 4.5;
        let factor = (after * after * 9.0).exp2();
        (self.base * factor + self.add * t).min(MAX_RATE * 2.0)
    }
}

struct Window {
    /// The first result of the window.
    start: Option<Instant>,
    sent: u64,
    throttled: u64,
    /// A send had to wait for the rate.
    waited: bool,
    /// Answers in the window.
    answers: u32,
    /// When the last of them came.
    last: Option<Instant>,
}

impl Window {
    fn new() -> Self {
        Window { start: None, sent: 0, throttled: 0, waited: false, answers: 0, last: None }
    }
}

/// Consecutive throttled windows, to tell throttling we cause from throttling we do not.
struct Streak {
    /// The rate and throttled fraction at the first cut of the streak.
    rate: f64,
    fraction: f64,
}

struct State {
    paced: Option<Paced>,
    window: Window,
    streak: Option<Streak>,
    hold_until: Option<Instant>,
    /// The current episode began (first throttle after full speed) and the last throttled window.
    episode: Option<Instant>,
    last_throttled: Option<Instant>,
    /// The last window in which something was sent.
    last_sent: Option<Instant>,
    /// At full speed, the last window judged had less than `MIN_CUT` throttled.
    small_before: bool,
    /// The end of the last window judged.
    last_judged: Option<Instant>,
    /// The last answer with something accepted.
    last_accepted: Option<Instant>,
    /// Throttled entries by error code since the last `take_counts`.
    codes: BTreeMap<String, u64>,
    throttled_requests: u64,
    /// Draws the sends' jitter (seeded in the simulations, so that they repeat).
    rng: SmallRng,
}

/// The pace of one flow's sends. Every attempt (first sends and retries) waits in `acquire`,
/// and reports its outcome to `record`.
pub struct Pacer {
    state: Mutex<State>,
    /// Waiting sends queue here in order, so a big batch is not overtaken for ever by small retries.
    turn: tokio::sync::Mutex<()>,
}

impl Default for Pacer {
    fn default() -> Self {
        Self::new()
    }
}

impl Pacer {
    pub fn new() -> Self {
        Self::with_rng(rand::make_rng())
    }

    fn with_rng(rng: SmallRng) -> Self {
        Pacer {
            state: Mutex::new(State {
                paced: None,
                window: Window::new(),
                streak: None,
                hold_until: None,
                episode: None,
                last_throttled: None,
                last_sent: None,
                small_before: false,
                last_judged: None,
                last_accepted: None,
                codes: BTreeMap::new(),
                throttled_requests: 0,
                rng,
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// The current limit in records per second; None at full speed.
    pub fn rate(&self) -> Option<f64> {
        let st = self.state.lock().unwrap();
        st.paced.as_ref().map(|p| p.rate(Instant::now()))
    }

    /// Waits until `records` may be sent.
    pub async fn acquire(&self, records: usize) {
        if self.state.lock().unwrap().paced.is_none() {
            return;
        }
        let _turn = self.turn.lock().await;
        let mut jitter = None;
        loop {
            let wait = {
                let mut st = self.state.lock().unwrap();
                let jitter: f64 = *jitter.get_or_insert_with(|| st.rng.random());
                let now = Instant::now();
                let Some(p) = st.paced.as_mut() else { return };
                let rate = p.rate(now);
                p.tokens = (p.tokens + rate * (now - p.refilled).as_secs_f64()).min(rate * BURST);
                p.refilled = now;
                let threshold = jitter * (JITTER * records as f64).min(0.5 * rate * BURST);
                if p.tokens >= threshold {
                    p.tokens -= records as f64;
                    return;
                }
                // (At least a millisecond: a wait rounded down to nothing would spin.)
                let wait =
                    Duration::from_secs_f64((threshold - p.tokens) / rate).clamp(Duration::from_millis(1), MAX_STEP);
                st.window.waited = true;
                wait
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The outcome of one attempt: `sent` entries, of which `throttled` were throttled (all of
    /// them when the request as a whole was), with the destination's error `code`.
    pub fn record(&self, sent: usize, throttled: usize, code: Option<&str>) -> Option<PaceChange> {
        let mut st = self.state.lock().unwrap();
        let now = Instant::now();
        if throttled < sent {
            st.last_accepted = Some(now);
        }
        if throttled > 0 {
            *st.codes.entry(code.unwrap_or("throttled").to_string()).or_default() += throttled as u64;
            st.throttled_requests += 1;
        }
        // While paced, a window starts where the last one ended (not at its first answer): a
        // flow whose answers are seconds apart is then judged on its real rate.
        let paced = st.paced.is_some();
        let last = st.last_judged.filter(|_| paced);
        let w = &mut st.window;
        let start = *w.start.get_or_insert(last.unwrap_or(now));
        w.sent += sent as u64;
        w.answers += 1;
        w.last = Some(now);
        w.throttled += throttled as u64;
        // Judged once per window: a single answer says too little about the rate (the first
        // throttled answer of an episode too: a cut from it was often far too deep); and while
        // paced, once it holds `MIN_ANSWERS` answers: which entries of one request a shard takes
        // is a lottery (the first ones after its budget refilled), and cutting on it shuffled
        // the shares of a fleet.
        if now - start < WINDOW || (paced && w.answers < MIN_ANSWERS) {
            return None;
        }
        let w = std::mem::replace(&mut st.window, Window::new());
        st.judge(w, start, now)
    }

    /// Judges a window that ended without results (the flow went idle while paced), so that the
    /// return to full speed is noticed without traffic. Called periodically. A window with
    /// answers is left to `record`, unless the flow went quiet (no answer for two windows and no
    /// send waiting for the pace): then it is dropped, and the flow counts as idle.
    pub fn tick(&self) -> Option<PaceChange> {
        // A send waiting for the pace: the flow is not idle.
        let waiting = self.turn.try_lock().is_err();
        let mut st = self.state.lock().unwrap();
        if st.paced.is_none() && st.episode.is_none() {
            return None;
        }
        let now = Instant::now();
        if st.window.answers > 0 {
            // A window with answers is judged in `record`, on enough of them: judged here, a
            // slow flow's window of one or two answers (a lottery) was cut by the clock, and a
            // fifth of the cuts in a fleet were of that kind, all on its smallest flows. Only a
            // flow that went quiet has its window dropped here: its answers no longer tell the rate.
            let quiet = st.window.last.is_some_and(|l| now - l >= 2 * WINDOW);
            if !quiet || waiting {
                return None;
            }
            let w = std::mem::replace(&mut st.window, Window::new());
            if w.throttled > 0 {
                st.last_throttled = w.last;
            }
        }
        let start = st.window.start.or_else(|| now.checked_sub(WINDOW))?;
        if now - start < WINDOW {
            return None;
        }
        let w = std::mem::replace(&mut st.window, Window::new());
        st.judge(w, start, now)
    }

    /// Throttled entries by code, and the number of throttled requests, since the last call.
    pub fn take_counts(&self) -> (BTreeMap<String, u64>, u64) {
        let mut st = self.state.lock().unwrap();
        (std::mem::take(&mut st.codes), std::mem::take(&mut st.throttled_requests))
    }
}

impl State {
    fn judge(&mut self, w: Window, start: Instant, now: Instant) -> Option<PaceChange> {
        self.last_judged = Some(now);
        if w.sent == 0 && w.waited {
            return None;
        }
        if w.sent > 0 {
            self.last_sent = Some(now);
        }
        // A trace of throttling is not worth slowing down for: its retries cost next to nothing,
        // and cutting at each such window would hold the pace down (each cut restarts the growth).
        if w.throttled == 0 || (w.throttled as f64) < NOISE * w.sent as f64 {
            self.streak = None;
            self.small_before = false;
            let since_throttle = self.last_throttled.map_or(Duration::MAX, |t| now - t);
            let idle = self.last_sent.is_none_or(|t| now - t >= 2 * WINDOW);
            let grown = self.paced.as_ref().is_none_or(|p| p.rate(now) >= MAX_RATE);
            if (idle || grown) && since_throttle >= 2 * WINDOW {
                self.paced = None;
                if self.episode.take().is_some() {
                    return Some(PaceChange::Full { after: since_throttle });
                }
            }
            return None;
        }
        let fraction = w.throttled as f64 / w.sent as f64;
        self.last_throttled = Some(now);
        if self.hold_until.is_some_and(|h| now < h) {
            return None;
        }
        let elapsed = (now - start).max(WINDOW / 10).as_secs_f64();
        let measured = w.sent as f64 / elapsed;
        let current = self.paced.as_ref().map(|p| p.rate(now));
        let from = current.map_or(measured, |c| c.min(measured));
        if current.is_none() && fraction < MIN_CUT && !std::mem::replace(&mut self.small_before, true) {
            return None;
        }
        self.small_before = false;
        {
            match &self.streak {
                // Nearly everything throttled: keep cutting; the comparison starts below that.
                _ if fraction >= NEARLY_ALL => self.streak = None,
                None => self.streak = Some(Streak { rate: from, fraction }),
                // Cut to an eighth, yet as much throttled, and a minority of what we send: the
                // throttling does not come from our pace, and its retries cost little. (Results
                // lag a window, so they reflect at most R/2 here; a stream throttling a share
                // f < 0.9 of R throttles 2f - 1 < 0.95 f of R/2.) Not for more: in a fleet
                // sharing a stream, the others' throttling does not ease when one agent slows
                // down either, and the agent that stopped pacing took the stream from them.
                Some(s) if fraction <= HOLD_AT_MOST && from <= s.rate / 8.0 && fraction >= 0.95 * s.fraction => {
                    tracing::debug!(
                        "throttling did not ease after slowing down ({:.2} then {fraction:.2}); not pacing for {HOLD:?}",
                        s.fraction
                    );
                    self.streak = None;
                    self.paced = None;
                    self.hold_until = Some(now + HOLD);
                    return None;
                }
                Some(_) => {}
            }
        }
        // The first cut of an episode lands on what the destination took from the full-speed
        // window (its many answers measure it well). Later ones are by a common factor,
        // `PACED_CUT`, whatever the fraction (but halving where nearly all was throttled): with
        // a common cut and a common growth the differences between the flows of a fleet shrink
        // at every cut. The fraction one flow sees of a shared stream is a lottery (which
        // entries a shard takes depends on what arrived just before them): two flows of a fleet
        // at the same rate in the same seconds saw 0.25 and 0.63, again and again, and cutting
        // by it cut the unlucky deeper, turning their bad luck into a smaller share (in the
        // simulation, 16 agents over 20 seeds: the least share 54-78 % of a fair one by the
        // fraction, 64-81 % by a common cut).
        let to = match current {
            None => from * (1.0 - fraction),
            Some(_) if fraction >= NEARLY_ALL => from * 0.5,
            Some(_) => from * (1.0 - PACED_CUT),
        }
        .max(MIN_RATE);
        // Nothing taken for a while: no additive growth (the pace stays at the slowest).
        let starved = self.last_accepted.is_none_or(|t| now - t >= 3 * WINDOW);
        let add = if starved { 0.0 } else { GROWTH };
        // A debt of earlier sends carries over the cut.
        let (tokens, refilled) = self.paced.as_ref().map_or((0.0, now), |p| (p.tokens.min(0.0), p.refilled));
        self.paced = Some(Paced { base: to, add, since: now, tokens, refilled });
        if self.episode.is_none() {
            self.episode = Some(now);
            let code = self.codes.iter().max_by_key(|(_, n)| **n).map_or("throttled", |(c, _)| c.as_str());
            return Some(PaceChange::Slowed { to, code: code.to_string() });
        }
        None
    }
}

#[cfg(test)]
mod fleet_tests;

#[cfg(test)]
mod tests;
