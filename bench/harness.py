#!/usr/bin/env python3
"""kinesis-agent's benchmark harness: a command that ships a file to Kinesis, timed against the
local sink in bench/sink (bench-sink). Python 3 standard library only.

  harness.py gen --lines N                 make (once) the input of N lines; prints its path
  harness.py run --cmd CMD [--runs 3] [--lines 2000000] [--check] [--fail-rate F] [--label L] [--tls]
  harness.py idle --cmd CMD [--secs 60] [--label L]
  harness.py summarize [--all]             the results of this session, against the anchors
  harness.py check --input FILE --dump FILE

The command (split like a shell would, run from the current directory) reads $BENCH_INPUT from
its start and sends each line as one record to the stream $BENCH_STREAM at $KINESIS_ENDPOINT. It
gets a fresh empty folder in $BENCH_WORKDIR (for its config and checkpoints), fake AWS
credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION) and
AWS_EC2_METADATA_DISABLED=true; ${VAR} in --cmd is replaced with those values. With --tls the
endpoint is the sink's HTTPS port, whose CA certificate is in $SINK_CERT (and AWS_CA_BUNDLE).
SINK_HOST, SINK_PORT and SINK_TLS_PORT are there for configurations that want them apart.

A run ends when the sink has accepted every line (or the command exits, or --timeout passes).
It reports the wall time (start of the command to the sink's last accepted record), lines/s,
MB/s, the CPU seconds of the command's process tree, its peak RSS, the requests and records per
request, and CPU microseconds per line. Each run prints a readable line and a JSON line, and
appends the JSON to $BENCH_WORKDIR/results.jsonl (BENCH_WORKDIR: the harness's scratch folder,
default $TMPDIR/kinesis-agent-bench). Runs of one session (BENCH_SESSION, by default one per
`run`/`idle` invocation) are what `summarize` shows, unless --all.

Environment: SINK_BIN and MEASURE_BIN (default target/bench-sink/release/bench-sink and
bench-measure, built when missing), BENCH_WORKDIR, BENCH_SESSION.
"""
import argparse
import array
import hashlib
import json
import os
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TICK = os.sysconf("SC_CLK_TCK")
STREAM = "bench-stream"
# The anchors' figures (bench/ANCHORS.md): tail -> Kinesis over the same kind of harness, same
# input size, 2 cores. CPU microseconds per line and peak RSS in MiB, medians.
ANCHORS = {
    "Fluent Bit 5.1.1": {"cpu_us_per_line": 2.46, "peak_rss_mb": 123},
    "Vector 0.58.0": {"cpu_us_per_line": 8.79, "peak_rss_mb": 64},
}
# The input generator's version: a new one gets a new file name, so a cache never mixes them.
GEN_VERSION = 1


def say(msg):
    print(f"[harness] {msg}", file=sys.stderr, flush=True)


def workdir():
    d = os.path.abspath(os.environ.get("BENCH_WORKDIR") or os.path.join(tempfile.gettempdir(), "kinesis-agent-bench"))
    os.makedirs(d, exist_ok=True)
    return d


# ------------------------------------------------------------------------------------- input

USER_AGENTS = [
    "curl/8.11.1",
    "Wget/1.25.0",
    "python-httpx/0.28.1",
    "okhttp/4.12.0",
    "kube-probe/1.31",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
]
ROUTES = [
    "/",
    "/favicon.ico",
    "/account/settings",
    "/api/v3/orders/{id}",
    "/api/v3/orders/{id}/items",
    "/api/v3/catalog?category={word}&page={small}",
    "/api/v3/search?q={word}+{word2}",
    "/assets/{hex}/bundle.js",
    "/assets/{hex}/styles.css",
    "/media/thumbs/{id}_{small}x{small}.webp",
    "/news/{year}/{word}-{word2}.html",
    "/healthz",
    "/signin?next=%2Faccount%2F{word}",
]
WORDS = ["alpha", "bravo", "cobalt", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper", "kelp"]
REFERRERS = ["-", "-", "-", "-", "-", "https://shop.example.com/", "https://www.example.org/news", "https://search.example.net/?q={word}"]
USERS = ["-", "-", "-", "-", "-", "ana", "ben", "chloe", "deploy-bot"]
METHODS = ["GET"] * 10 + ["POST"] * 3 + ["PUT", "DELETE", "HEAD", "OPTIONS"]
STATUS = [200] * 24 + [201, 204, 206, 301, 302, 304, 304, 400, 401, 403, 404, 404, 404, 429, 500, 502, 503]
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def access_line(rnd, seq):
    """One combined-format access-log line, 100-200 bytes, unique by the `seq=` at its end."""
    secs = 8 * 3600 + seq // 250  # 250 lines a second from 08:00 on
    ts = f"04/Dec/2026:{secs // 3600 % 24:02}:{secs // 60 % 60:02}:{secs % 60:02} +0000"
    fill = {
        "id": rnd.randrange(10**7),
        "small": rnd.choice((32, 64, 128, 256, 512)),
        "word": rnd.choice(WORDS),
        "word2": rnd.choice(WORDS),
        "hex": f"{rnd.getrandbits(40):010x}",
        "year": rnd.randrange(2018, 2027),
    }
    ip = f"{rnd.randrange(1, 224)}.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
    request = f"{rnd.choice(METHODS)} {rnd.choice(ROUTES).format(**fill)} HTTP/{rnd.choice(('1.1', '1.1', '2.0'))}"
    head = f'{ip} - {rnd.choice(USERS)} [{ts}] "{request}" {rnd.choice(STATUS)} {rnd.randrange(40, 400000)}'
    tail = f' rt={rnd.randrange(1, 3000) / 1000:.3f} seq={seq:09}'
    referrer = rnd.choice(REFERRERS).format(**fill)
    agent = rnd.choice(USER_AGENTS)
    line = f'{head} "{referrer}" "{agent}"{tail}'
    if len(line) > 200:
        # Trim the user agent (then the referrer): the request and the unique tail stay whole.
        over = len(line) - 200
        agent = agent[: max(8, len(agent) - over)]
        line = f'{head} "{referrer}" "{agent}"{tail}'
        if len(line) > 200:
            line = f'{head} "-" "{agent}"{tail}'[-200:]
    if len(line) < 100:
        line = line[: -len(tail)] + " cache=" + "MISS" * ((100 - len(line)) // 4 + 1) + tail
    return line


def input_path(lines):
    return os.path.join(workdir(), f"access-v{GEN_VERSION}-{lines}.log")


def gen(lines):
    """The input of `lines` lines (made once, then cached by their number); its path."""
    path = input_path(lines)
    if os.path.exists(path):
        return path
    say(f"writing {lines:,} lines to {path}")
    rnd = random.Random(20261204)
    tmp = path + ".tmp"
    with open(tmp, "w", buffering=1 << 20) as f:
        chunk = []
        for seq in range(lines):
            chunk.append(access_line(rnd, seq))
            if len(chunk) == 20000:
                f.write("\n".join(chunk) + "\n")
                chunk = []
        if chunk:
            f.write("\n".join(chunk) + "\n")
    os.rename(tmp, path)
    return path


# ------------------------------------------------------------------------------ exactly once

SEQ = re.compile(rb" seq=(\d{9})$")


def check(input_file, dump_file, decode="raw"):
    """Every input line in the dump exactly once? Lines are found by their `seq=` and compared
    whole (by hash). `decode`: raw (a record is the line), or json-string (the line JSON-escaped,
    without the quotes, as Fluent Bit's kinesis_streams sends it with log_key). Returns a dict of
    counts."""
    hashes = array.array("q")
    with open(input_file, "rb") as f:
        for line in f:
            hashes.append(hash(line.rstrip(b"\n")))
    expected = len(hashes)
    seen = bytearray(expected)
    received = unexpected = 0
    examples = []
    with open(dump_file, "rb") as f:
        for record in f:
            received += 1
            record = record.rstrip(b"\n")
            if decode == "json-string" and b"\\" in record:
                try:
                    record = json.loads(b'"' + record + b'"').encode()
                except ValueError:
                    pass
            m = SEQ.search(record)
            n = int(m.group(1)) if m else -1
            if 0 <= n < expected and hashes[n] == hash(record):
                if seen[n] < 255:
                    seen[n] += 1
            else:
                unexpected += 1
                if len(examples) < 3:
                    examples.append(record[:200].decode(errors="replace"))
    missing = seen.count(0)
    duplicated_lines = expected - missing - seen.count(1)
    duplicates = sum(c - 1 for c in seen if c > 1)
    return {
        "expected": expected,
        "received": received,
        "exactly_once": missing == 0 and duplicates == 0 and unexpected == 0,
        "missing": missing,
        "duplicated_lines": duplicated_lines,
        "duplicates": duplicates,
        "unexpected": unexpected,
        "unexpected_examples": examples,
    }


# ------------------------------------------------------------------------------------ /proc


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out.extend(int(c) for c in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def tree(pid):
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p not in pids:
            pids.append(p)
            todo.extend(children(p))
    return pids


def cpu_of(pid):
    """CPU seconds of a process (all its threads, whatever it exec'd, and its reaped children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return sum(int(x) for x in fields[11:15]) / TICK


def mem_of(pid):
    """(VmRSS, VmHWM) in KiB, or (0, 0) once gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def machine_busy():
    """Busy CPU seconds of the whole machine so far."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / TICK


def probe_ms():
    """A single-core speed probe (best of 3, SHA-256 of 64 MiB), to tell a slow machine from a
    slow build when comparing runs taken at different times."""
    data = bytes(64 << 20)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        hashlib.sha256(data).digest()
        best = min(best, time.perf_counter() - t)
    return round(best * 1000, 1)


class Tree:
    """The command's process tree, sampled from /proc while it runs. It is started under
    bench-measure (bench/sink/src/bin), which waits for it with wait4 and reports its exact CPU
    time (all its threads, what it exec'd, its reaped descendants) and peak RSS. (Waited for from
    here, its peak RSS would include this Python process's, which it was forked from.)"""

    def __init__(self, argv, env, log, rundir):
        self.report = os.path.join(rundir, "measure.json")
        argv = [tool_bin("bench-measure"), self.report, "--", *argv]
        self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        self.cpu = 0.0
        self.hwm = {}
        self.rss = {}
        self.measured = None  # bench-measure's report, once the command has exited

    def sample(self):
        if self.measured:
            return
        # The processes there now, each with its reaped children: a process that was sampled and
        # has since been reaped is in its parent's figure (adding its last sample would count it
        # twice).
        cpu = 0.0
        for p in tree(self.pid):
            c = cpu_of(p)
            if c is not None:
                cpu += c
            if p != self.pid:  # not bench-measure's own memory
                rss, hwm = mem_of(p)
                self.rss[p] = rss
                self.hwm[p] = max(hwm, self.hwm.get(p, 0))
        self.cpu = max(self.cpu, cpu)

    def cpu_s(self):
        """CPU seconds of the tree: exact once it has exited, else the latest sample."""
        if self.measured:
            return self.measured["user_s"] + self.measured["system_s"]
        return self.cpu

    def peak_rss_kib(self):
        if self.measured:
            return self.measured["max_rss_kib"]
        return sum(self.hwm.values())

    def rss_kib(self):
        return sum(self.rss.values())

    def poll(self):
        """True once the command has exited."""
        if self.proc.poll() is None:
            return False
        if self.measured is None:
            try:
                with open(self.report) as f:
                    self.measured = json.load(f)
            except (OSError, ValueError):
                # bench-measure killed: what the samples saw.
                self.measured = {"exit_code": self.proc.returncode, "user_s": self.cpu,
                                 "system_s": 0.0, "max_rss_kib": sum(self.hwm.values())}
        return True

    def wait(self, secs):
        end = time.time() + secs
        while time.time() < end:
            if self.poll():
                return True
            time.sleep(0.02)
        return self.poll()

    def stop(self, grace=0.0):
        """Lets the command end by itself for `grace` s, then SIGTERM (its whole session), then
        SIGKILL after 15 s."""
        if self.wait(grace):
            return
        for sig, secs in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            if self.wait(secs):
                return

    def returncode(self):
        return self.measured["exit_code"] if self.measured else None


# -------------------------------------------------------------------------------------- sink


def tool_bin(name):
    """bench-sink or bench-measure (SINK_BIN or MEASURE_BIN to use others); built when missing."""
    env = {"bench-sink": "SINK_BIN", "bench-measure": "MEASURE_BIN"}[name]
    path = os.environ.get(env) or os.path.join(REPO, "target", "bench-sink", "release", name)
    if not os.path.exists(path):
        say("building bench/sink")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                        os.path.join(HERE, "sink", "Cargo.toml"), "--target-dir",
                        os.path.join(REPO, "target", "bench-sink")], check=True)
    return path


class Sink:
    def __init__(self, rundir, dump=None, fail_rate=0.0, threads=1, tls=False):
        port_file = os.path.join(rundir, "sink.port")
        argv = [tool_bin("bench-sink"), "--port", "0", "--port-file", port_file, "--threads", str(threads)]
        self.tls = tls
        self.cert = os.path.join(rundir, "sink-ca.pem")
        if tls:
            argv += ["--tls-port", "0", "--cert-out", self.cert]
        if dump:
            argv += ["--dump", dump]
        if fail_rate:
            argv += ["--fail-rate", str(fail_rate)]
        self.log = open(os.path.join(rundir, "sink.log"), "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(200):
            if os.path.exists(port_file):
                with open(port_file) as f:
                    ports = json.load(f)
                self.port, self.tls_port = ports["port"], ports.get("tls_port")
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"bench-sink exited at start: see {rundir}/sink.log")
            time.sleep(0.025)
        raise SystemExit("bench-sink did not start")

    @property
    def endpoint(self):
        """Where the command sends records."""
        return f"https://127.0.0.1:{self.tls_port}" if self.tls else f"http://127.0.0.1:{self.port}"

    def stats(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def cpu_s(self):
        return cpu_of(self.proc.pid) or 0.0

    def stop(self):
        """Its last counters; SIGTERM then flushes the dump."""
        last = self.stats()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        return last


# --------------------------------------------------------------------------------------- run

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "AKIDBENCHEXAMPLE0000",
    "AWS_SECRET_ACCESS_KEY": "bench/secret/key/not/a/real/one/0000000",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def command_env(sink, rundir, input_file):
    work = os.path.join(rundir, "work")
    os.makedirs(work)
    env = dict(os.environ, **FAKE_AWS)
    # No profile or credentials file of the machine's user can be picked up.
    env["AWS_CONFIG_FILE"] = os.path.join(work, ".no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.path.join(work, ".no-aws-credentials")
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_SESSION_TOKEN", None)
    env.update({
        "BENCH_INPUT": input_file,
        "BENCH_STREAM": STREAM,
        "BENCH_WORKDIR": work,
        "KINESIS_ENDPOINT": sink.endpoint,
        "SINK_HOST": "127.0.0.1",
        "SINK_PORT": str(sink.port),
    })
    if sink.tls:
        env.update({"SINK_TLS_PORT": str(sink.tls_port), "SINK_CERT": sink.cert, "AWS_CA_BUNDLE": sink.cert})
    return env


def expand(cmd, env):
    return [re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), m.group(0)), a) for a in shlex.split(cmd)]


def new_rundir(kind, label):
    d = os.path.join(workdir(), "runs", f"{kind}-{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}-{time.strftime('%Y%m%d-%H%M%S')}")
    n, base = 1, d
    while os.path.exists(d):
        n += 1
        d = f"{base}.{n}"
    os.makedirs(d)
    return d


def one_run(a, input_file, lines, input_bytes, index):
    rundir = new_rundir("run", a.label)
    dump = os.path.join(rundir, "dump") if a.check else None
    sink = Sink(rundir, dump=dump, fail_rate=a.fail_rate, threads=a.sink_threads, tls=a.tls)
    env = command_env(sink, rundir, input_file)
    argv = expand(a.cmd, env)
    probe = probe_ms()
    log = open(os.path.join(rundir, "command.log"), "wb")
    sink_cpu0, busy0, own0 = sink.cpu_s(), machine_busy(), time.process_time()
    t0 = time.time()
    cmd = Tree(argv, env, log, rundir)
    status, st = "timeout", {}
    while time.time() - t0 < a.timeout:
        cmd.sample()
        exited = cmd.poll()
        st = sink.stats() or st
        if st.get("records", 0) >= lines:
            status = "ok"
            break
        if exited:
            status = f"exited with {cmd.returncode()} before the sink had every line"
            break
        time.sleep(0.05)
    cmd.sample()
    cpu_done, hwm_done = cmd.cpu_s(), cmd.peak_rss_kib()
    t_done, busy1, own1 = time.time(), machine_busy(), time.process_time()
    sink_cpu = sink.cpu_s() - sink_cpu0
    if a.check and status == "ok":
        # Late duplicates (a retried request the sink had already taken) still count.
        end = time.time() + a.settle
        while time.time() < end and not cmd.poll():
            cmd.sample()
            time.sleep(0.1)
    cmd.stop(grace=2.0)
    log.close()
    # (A sample can only be below the exact figure at exit.)
    cpu_done = min(cpu_done, cmd.cpu_s())
    last = sink.stop() or st
    wall = (last["last_record_epoch_ms"] / 1000 - t0) if status == "ok" else t_done - t0
    background = (busy1 - busy0) - cpu_done - sink_cpu - (own1 - own0)
    batches = last.get("put_records_requests", 0) + last.get("put_record_batch_requests", 0)
    r = {
        "label": a.label,
        "session": a.session,
        "mode": "run",
        "run": index,
        "status": status,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "lines": lines,
        "input_bytes": input_bytes,
        "fail_rate": a.fail_rate,
        "check": bool(a.check),
        "tls": bool(a.tls),
        "wall_s": round(wall, 3),
        "first_record_s": round(last["first_record_epoch_ms"] / 1000 - t0, 3) if last.get("first_record_epoch_ms") else None,
        "lines_per_s": round(lines / wall) if wall > 0 and status == "ok" else None,
        "mb_per_s": round(input_bytes / 1e6 / wall, 1) if wall > 0 and status == "ok" else None,
        # At the moment the sink had every line (exact if the command had exited by then).
        "cpu_s": round(cpu_done, 3),
        "cpu_us_per_line": round(cpu_done * 1e6 / lines, 3),
        # Everything, up to the command's exit (wait4, by bench-measure).
        "cpu_s_to_exit": round(cmd.cpu_s(), 3),
        "peak_rss_mb": round(max(hwm_done, cmd.peak_rss_kib()) / 1024, 1),
        "exit_code": cmd.returncode(),
        "requests": last.get("requests", 0),
        "record_requests": batches + last.get("single_record_requests", 0),
        "records_per_request": last.get("records_per_request"),
        "records_accepted": last.get("records", 0),
        "records_failed_on_purpose": last.get("records_failed", 0),
        "error_responses": last.get("error_responses", 0),
        "max_in_flight_requests": last.get("max_in_flight_requests"),
        "max_connections": last.get("max_connections"),
        "sink_cpu_s": round(sink_cpu, 3),
        "background_cores": round(background / max(t_done - t0, 1e-3), 2),
        "probe_sha256_64mib_ms": probe,
        "rundir": os.path.relpath(rundir, workdir()),
    }
    if dump:
        r["exactly_once"] = check(input_file, dump, a.decode)
        if not a.keep_dump:
            os.unlink(dump)
    return r


def describe(r):
    if r["mode"] == "idle":
        return (f"{r['label']} idle {r['secs']:.0f} s: {r['status']}; RSS {r['rss_mb_end']} MiB at the end, "
                f"CPU {r['cpu_pct']:.3f} % ({r['cpu_pct_second_half']:.3f} % over the second half), "
                f"{r['sink_requests']} request(s) to the sink")
    name = f"{r['label']}{' (https)' if r.get('tls') else ''} #{r['run']}"
    if r["status"] == "ok":
        s = (f"{name}: ok; {r['lines']:,} lines in {r['wall_s']:.2f} s = {r['lines_per_s']:,} lines/s, "
             f"{r['mb_per_s']} MB/s; CPU {r['cpu_s']:.2f} s = {r['cpu_us_per_line']:.3f} us/line; ")
    else:
        s = (f"{name}: {r['status']}; {r['records_accepted']:,} of {r['lines']:,} lines accepted in "
             f"{r['wall_s']:.2f} s; CPU {r['cpu_s']:.2f} s; ")
    s += (f"peak RSS {r['peak_rss_mb']:.0f} MiB; {r['record_requests']} requests, "
          f"{r['records_per_request']} records/request")
    if r["fail_rate"]:
        s += f"; {r['records_failed_on_purpose']:,} records failed on purpose"
    if "exactly_once" in r:
        e = r["exactly_once"]
        s += ("; every line exactly once" if e["exactly_once"] else
              f"; NOT exactly once: {e['missing']:,} missing, {e['duplicates']:,} duplicates, "
              f"{e['unexpected']:,} unexpected")
    if r.get("background_cores", 0) >= 0.3:
        s += f" (other work used {r['background_cores']} cores meanwhile)"
    return s


def record(r):
    print(describe(r), flush=True)
    print(json.dumps(r), flush=True)
    with open(os.path.join(workdir(), "results.jsonl"), "a") as f:
        f.write(json.dumps(r) + "\n")


def cmd_run(a):
    tool_bin("bench-sink"), tool_bin("bench-measure")  # built now if missing, not while timed
    input_file = os.path.abspath(a.input) if a.input else gen(a.lines)
    with open(input_file, "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    input_bytes = os.path.getsize(input_file)
    say(f"input {input_file}: {lines:,} lines, {input_bytes:,} bytes")
    failed = 0
    for i in range(a.runs):
        r = one_run(a, input_file, lines, input_bytes, i + 1)
        record(r)
        failed += r["status"] != "ok" or not r.get("exactly_once", {"exactly_once": True})["exactly_once"]
    return 1 if failed else 0


def cmd_idle(a):
    tool_bin("bench-sink"), tool_bin("bench-measure")
    rundir = new_rundir("idle", a.label)
    sink = Sink(rundir, tls=a.tls)
    empty = os.path.join(rundir, "empty.log")
    open(empty, "w").close()
    env = command_env(sink, rundir, empty)
    log = open(os.path.join(rundir, "command.log"), "wb")
    t0 = time.time()
    cmd = Tree(expand(a.cmd, env), env, log, rundir)
    half = None
    while time.time() - t0 < a.secs and not cmd.poll():
        cmd.sample()
        if half is None and time.time() - t0 >= a.secs / 2:
            half = cmd.cpu_s()
        time.sleep(0.25)
    cmd.sample()
    alive = not cmd.poll()
    cpu, rss = cmd.cpu_s(), cmd.rss_kib()
    cmd.stop()
    log.close()
    last = sink.stop() or {}
    r = {
        "label": a.label,
        "session": a.session,
        "mode": "idle",
        "status": "ok" if alive else f"exited with {cmd.returncode()}",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "secs": a.secs,
        "rss_mb_end": round(rss / 1024, 1),
        "peak_rss_mb": round(cmd.peak_rss_kib() / 1024, 1),
        "cpu_s": round(cpu, 3),
        "cpu_pct": round(100 * cpu / a.secs, 3),
        "cpu_pct_second_half": round(100 * (cpu - (half or 0)) / (a.secs / 2), 3),
        "sink_requests": last.get("requests", 0),
        "rundir": os.path.relpath(rundir, workdir()),
    }
    record(r)
    return 0 if alive else 1


# --------------------------------------------------------------------------------- summarize


def cmd_summarize(a):
    path = os.path.join(workdir(), "results.jsonl")
    rows = [json.loads(x) for x in open(path)] if os.path.exists(path) else []
    rows = [r for r in rows if "label" in r and "mode" in r]  # not another harness's
    if not a.all:
        session = a.session_filter or (rows[-1].get("session") if rows else None)
        rows = [r for r in rows if r.get("session") == session]
        if os.environ.get("BENCH_SESSION") is None and not a.session_filter:
            say("no BENCH_SESSION: the session of the latest result")
    runs = [r for r in rows if r.get("mode") == "run"]
    groups = {}
    for r in runs:
        groups.setdefault((r["label"], r["fail_rate"], r["check"], r.get("tls", False)), []).append(r)
    if groups:
        print("| label | runs ok | wall s min / med | lines/s med | MB/s med | CPU s med | CPU us/line min / med | "
              "peak RSS MiB med (range) | requests med | records/request | exactly once |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (label, fail_rate, checked, tls), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        name = label + (" (https)" if tls else "") + (f" (fail {fail_rate})" if fail_rate else "")
        eo = [r["exactly_once"] for r in rs if "exactly_once" in r]
        eo_s = "-" if not eo else "yes" if all(e["exactly_once"] for e in eo) else "; ".join(
            f"NO: {e['missing']} missing, {e['duplicates']} dup" for e in eo if not e["exactly_once"])
        if not ok:
            print(f"| {name} | 0/{len(rs)} ({rs[0]['status']}) | | | | | | | | | {eo_s} |")
            continue

        def med(k):
            return statistics.median(r[k] for r in ok)

        rss = [r["peak_rss_mb"] for r in ok]
        print(f"| {name} | {len(ok)}/{len(rs)} | {min(r['wall_s'] for r in ok):.2f} / {med('wall_s'):.2f} | "
              f"{med('lines_per_s'):,.0f} | {med('mb_per_s'):.1f} | {med('cpu_s'):.2f} | "
              f"{min(r['cpu_us_per_line'] for r in ok):.3f} / {med('cpu_us_per_line'):.3f} | "
              f"{med('peak_rss_mb'):.0f} ({min(rss):.0f}-{max(rss):.0f}) | {med('record_requests'):.0f} | "
              f"{med('records_per_request')} | {eo_s} |")
    idle = [r for r in rows if r.get("mode") == "idle"]
    if idle:
        print()
        print("| label | idle s | RSS MiB at the end | CPU % | CPU % second half | requests to the sink |")
        print("|---|---|---|---|---|---|")
        for r in idle:
            print(f"| {r['label']} | {r['secs']:.0f} | {r['rss_mb_end']} | {r['cpu_pct']} | "
                  f"{r['cpu_pct_second_half']} | {r['sink_requests']} |")
    clean = [r for r in runs if r["status"] == "ok" and not r["fail_rate"] and not r["check"]]
    if clean:
        by_label = {}
        for r in clean:
            by_label.setdefault(r["label"], []).append(r)
        print()
        print("Against the anchors (bench/ANCHORS.md; their figures were taken on another day and machine: "
              "ratios from one interleaved session are sounder):")
        for label, rs in by_label.items():
            cpu = statistics.median(r["cpu_us_per_line"] for r in rs)
            rss = statistics.median(r["peak_rss_mb"] for r in rs)
            parts = [f"{name}: CPU/line x{cpu / f['cpu_us_per_line']:.2f}, peak RSS x{rss / f['peak_rss_mb']:.2f}"
                     for name, f in ANCHORS.items()]
            print(f"  {label} ({cpu:.3f} us/line, {rss:.0f} MiB): " + "; ".join(parts))
    if not rows:
        print("no results")
    return 0


# -------------------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("gen", help="make the input (cached by its number of lines); prints its path")
    p.add_argument("--lines", type=int, default=2_000_000)
    for name in ("run", "idle"):
        p = sub.add_parser(name)
        p.add_argument("--cmd", required=True, help="the command (shell-split; ${VAR} replaced)")
        p.add_argument("--label", default="command")
        p.add_argument("--sink-threads", type=int, default=1, help="bench-sink worker threads (default 1)")
        p.add_argument("--tls", action="store_true", help="send to the sink's HTTPS port")
        if name == "run":
            p.add_argument("--runs", type=int, default=3)
            p.add_argument("--lines", type=int, default=2_000_000)
            p.add_argument("--input", help="an input file of your own instead of the generated one")
            p.add_argument("--check", action="store_true", help="check that every line arrived exactly once")
            p.add_argument("--fail-rate", type=float, default=0.0,
                           help="fraction of records the sink answers ProvisionedThroughputExceeded")
            p.add_argument("--settle", type=float, default=3.0,
                           help="with --check: seconds to wait for late duplicates (default 3)")
            p.add_argument("--timeout", type=float, default=600.0)
            p.add_argument("--keep-dump", action="store_true")
            p.add_argument("--decode", choices=("raw", "json-string"), default="raw",
                           help="how a record maps back to its line for --check (default raw)")
        else:
            p.add_argument("--secs", type=float, default=60.0)
    p = sub.add_parser("summarize")
    p.add_argument("--all", action="store_true", help="every result in results.jsonl, not one session's")
    p.add_argument("--session", dest="session_filter", default=os.environ.get("BENCH_SESSION"))
    p = sub.add_parser("check", help="exactly-once check of a dump against an input")
    p.add_argument("--input", required=True)
    p.add_argument("--dump", required=True)
    p.add_argument("--decode", choices=("raw", "json-string"), default="raw")
    a = ap.parse_args()
    a.session = os.environ.get("BENCH_SESSION") or time.strftime("%Y%m%d-%H%M%S")
    if a.what == "gen":
        print(gen(a.lines))
        return 0
    if a.what == "check":
        r = check(a.input, a.dump, a.decode)
        print(json.dumps(r))
        return 0 if r["exactly_once"] else 1
    if a.what == "summarize":
        return cmd_summarize(a)
    if a.what == "run":
        return cmd_run(a)
    return cmd_idle(a)


if __name__ == "__main__":
    sys.exit(main())
