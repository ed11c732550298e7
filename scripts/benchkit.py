"""What the benchmarks on the in-repository bench sink (scripts/bench-outage, scripts/bench-fleet)
share: building the release agent and the sink, starting the sink, its counters, a process's
peak RSS and CPU."""
import json
import os
import socket
import subprocess
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build():
    """Builds both in release; returns (agent, sink) binaries (AGENT_BIN, SINK_BIN override)."""
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                    os.path.join(REPO, "bench", "sink", "Cargo.toml"), "--target-dir",
                    os.path.join(REPO, "target", "bench-sink")], check=True)
    sink = os.environ.get("SINK_BIN", os.path.join(REPO, "target", "bench-sink", "release", "bench-sink"))
    return os.environ.get("AGENT_BIN", os.path.join(REPO, "target", "release", "kinesis-agent")), sink


def start_sink(sink, port, *options):
    """Starts the sink on `port` (quiet, 2 threads, then `options`) and waits until it answers."""
    p = subprocess.Popen([sink, "--port", str(port), "--threads", "2", "--quiet", *options])
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return p
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit("the sink did not start")


def stats(port, timeout=5):
    """The sink's /stats (raises OSError when it does not answer)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=timeout) as r:
        return json.loads(r.read())


def proc_stat(pid):
    """(peak RSS in MiB, user + system CPU seconds) of a process."""
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return hwm / 1024, (int(fields[11]) + int(fields[12])) / tick
