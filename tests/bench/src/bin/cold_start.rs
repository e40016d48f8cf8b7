//! `cold-start`: starts a function's release binary under a Lambda Runtime API on loopback
//! (`e2e::RuntimeApiEmulator`, whose receiver delays its acknowledgements as a default Linux stack
//! does) the way Lambda starts it, and measures the path users get: init time (its exec to
//! its first `next` request), first response, warm p50/p99 of answer completion (event handed
//! over to the answer's last byte received), and for a streamed answer the time to its prelude,
//! to its first delta after the prelude and the gaps between deltas; CPU per invocation and peak
//! RSS.
//!
//! ```text
//! cold-start BOOTSTRAP EVENT_FILE [INVOCATIONS [COLD_STARTS]]
//! ```
//! `ACKS=at-once` makes the receiver acknowledge every segment at once instead; `LABEL` names the
//! line (the binary's folder by default); `CPU_LIMIT=QUOTA/PERIOD` (microseconds, e.g. `7143/100000`:
//! the 1/14 of a vCPU that Lambda allots at 128 MB) starts every function in a cgroup with that CPU
//! bandwidth, from its first instruction (root only), or with `CPU_INIT=full` from the end of its
//! init (on-demand Lambda runs init on a full vCPU; provisioned concurrency at the limit); `CHECK_FIRST_DELTA_MS=N` fails the run when a streamed
//! answer's median time from prelude to first delta, or between deltas, exceeds N ms (the smoke
//! run of `make test`). The function's configuration (TABLE_NAME, ...) comes from the environment;
//! `make bench-cold` runs it for every function against the local stack.

use std::{
    io::Write,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use bench::{cpu_seconds, ms, percentile};
use e2e::{Acks, Report, ReportKind, RuntimeApiEmulator};
use tokio::io::AsyncWriteExt;

/// How long one answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
const DELTA: &[u8] = b"event: delta\n";

/// Peak resident set size of a process, in kB (VmHWM).
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What one warm invocation showed.
#[derive(Default)]
struct Timing {
    completion: Duration,
    /// A streamed answer's: handed over → end of prelude.
    prelude: Option<Duration>,
    /// End of prelude → first delta.
    first_delta: Option<Duration>,
    /// Between consecutive deltas.
    gaps: Vec<Duration>,
}

impl Timing {
    fn of(handed: Instant, report: &Report) -> Self {
        let completion = report.ended_at().unwrap_or(handed) - handed;
        let Some(prelude_at) = report.prelude_at().filter(|_| report.is_streamed()) else {
            return Self {
                completion,
                ..Self::default()
            };
        };
        let deltas = report.arrivals(DELTA);
        Self {
            completion,
            prelude: Some(prelude_at - handed),
            first_delta: deltas.first().map(|first| *first - prelude_at),
            gaps: deltas.windows(2).map(|pair| pair[1] - pair[0]).collect(),
        }
    }
}

/// One execution environment's life: its cold start, then `invocations` warm invocations.
struct Run {
    init: Duration,
    first_response: Duration,
    /// The first invocation's own timing: from the end of init (its first `next`) to its answer.
    first: Timing,
    timings: Vec<Timing>,
    rss_kb: u64,
    /// CPU seconds the function spent on its warm invocations.
    warm_cpu: f64,
    errors: usize,
    /// Connections the function opened to the Runtime API.
    connections: usize,
}

async fn run(
    bootstrap: &str,
    name: &str,
    event: &str,
    invocations: usize,
    acks: Acks,
    cpu: Option<&CpuLimit>,
) -> Result<Run, Box<dyn std::error::Error>> {
    let mut emulator = RuntimeApiEmulator::start(acks).await?;
    // Under a CPU limit, a launcher joins the cgroup first (a move into a cgroup can take
    // milliseconds) and waits on its stdin; it execs the function (same process, already in the
    // cgroup) when told, and init counts from then.
    let mut command = match cpu {
        Some(cpu) => {
            let mut launcher = tokio::process::Command::new("sh");
            launcher
                .args(["-c", "read -r _ && exec \"$0\"", bootstrap])
                .stdin(Stdio::piped());
            cpu.apply(&mut launcher)?;
            launcher
        }
        None => tokio::process::Command::new(bootstrap),
    };
    command
        .env("AWS_LAMBDA_RUNTIME_API", emulator.address())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut spawned = Instant::now();
    let mut child = command.spawn()?;
    if let Some(mut go) = child.stdin.take() {
        // Two CPU periods for the launcher to reach its `read` with its quota spent and refilled.
        tokio::time::sleep(Duration::from_millis(250)).await;
        spawned = Instant::now();
        go.write_all(b"go\n").await?;
    }
    let pid = child.id().ok_or("the function exited at once")?;

    if let Some(cpu) = cpu.filter(|cpu| cpu.init_full) {
        // The first event is handed over once the limit is on: it waits as Lambda holds it
        // while the environment's init ends.
        let asked = Instant::now();
        while emulator.first_next().await.is_none() {
            if asked.elapsed() > ANSWER_TIMEOUT {
                return Err(format!("{name}: no next request within {ANSWER_TIMEOUT:?}").into());
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        cpu.set(true)?;
    }
    let mut timings = Vec::with_capacity(invocations);
    let mut first_response = None;
    let mut first = None;
    let mut errors = 0;
    let mut cpu_before_warm = 0.0;
    for n in 0..=invocations {
        if n == 1 {
            cpu_before_warm = cpu_seconds(pid).unwrap_or(0.0);
        }
        let id = format!("bench-{n}");
        let (handed, report) = emulator.invoke(&id, event, ANSWER_TIMEOUT).await?;
        match report.kind {
            ReportKind::InitError => {
                let body = String::from_utf8_lossy(&report.body()).into_owned();
                return Err(format!("{name}: init error: {body}").into());
            }
            ReportKind::Error => {
                errors += 1;
                if errors == 1 {
                    let body = String::from_utf8_lossy(&report.body()).into_owned();
                    eprintln!("{name}: invocation error: {body}");
                }
            }
            ReportKind::Response => {
                let status = match report.prelude() {
                    Some(prelude) => prelude["statusCode"].as_u64(),
                    None => serde_json::from_slice::<serde_json::Value>(&report.body())
                        .ok()
                        .and_then(|answer| answer["statusCode"].as_u64()),
                };
                if status.is_none_or(|status| status >= 500) {
                    errors += 1;
                }
                if n == 0 && status.is_none() {
                    let body = String::from_utf8_lossy(&report.body()).into_owned();
                    eprintln!("{name}: unexpected first response: {body}");
                }
            }
        }
        if report.id.as_deref() != Some(id.as_str()) {
            return Err(format!("{name}: a report for {:?}, not {id}", report.id).into());
        }
        if n == 0 {
            first_response = Some(report.ended_at().unwrap_or(handed) - spawned);
            first = Some((handed, report));
        } else {
            timings.push(Timing::of(handed, &report));
        }
    }
    let init_end = emulator.first_next().await.ok_or("no next request")?;
    let init = init_end - spawned;
    // The first event waited in the emulator during init: its own time starts at the first `next`.
    let first = first
        .map(|(handed, report)| Timing::of(handed.max(init_end), &report))
        .ok_or("no first response")?;
    let rss = peak_rss_kb(pid);
    let warm_cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu_before_warm;
    child.kill().await?;
    Ok(Run {
        init,
        first_response: first_response.ok_or("no first response")?,
        first,
        timings,
        rss_kb: rss.unwrap_or(0),
        warm_cpu,
        errors,
        connections: emulator.connections(),
    })
}

/// A CPU bandwidth limit: a cgroup of its own (v2 `cpu.max`, or v1 `cpu.cfs_*`) that every
/// function this run starts joins before it runs its first instruction. With `init_full`
/// (`CPU_INIT=full`) the limit applies once init is done, as on-demand Lambda runs init on a
/// full vCPU; otherwise from the start, as provisioned concurrency does.
struct CpuLimit {
    procs: PathBuf,
    dir: PathBuf,
    unified: bool,
    quota: u64,
    period: u64,
    init_full: bool,
    described: String,
}

impl CpuLimit {
    fn new(spec: &str, init_full: bool) -> Result<Self, Box<dyn std::error::Error>> {
        let (quota, period) = spec
            .split_once('/')
            .and_then(|(quota, period)| {
                Some((quota.parse::<u64>().ok()?, period.parse::<u64>().ok()?))
            })
            .filter(|(quota, period)| *quota > 0 && *period > 0)
            .ok_or_else(|| {
                format!("CPU_LIMIT is QUOTA/PERIOD in microseconds (7143/100000), not {spec:?}")
            })?;
        let name = format!("cold-start-{}", std::process::id());
        let root = PathBuf::from("/sys/fs/cgroup");
        let unified = root.join("cgroup.controllers").exists();
        let dir = if unified {
            root.join(&name)
        } else {
            root.join("cpu").join(&name)
        };
        std::fs::create_dir_all(&dir).map_err(|err| {
            format!(
                "CPU_LIMIT needs a cgroup of its own ({}): {err}",
                dir.display()
            )
        })?;
        let share = format!(
            "CPU {:.1} % of a core",
            quota as f64 * 100.0 / period as f64
        );
        let limit = Self {
            procs: dir.join("cgroup.procs"),
            dir,
            unified,
            quota,
            period,
            init_full,
            described: if init_full {
                format!("init at full CPU, then {share}")
            } else {
                share
            },
        };
        limit.set(true)?;
        Ok(limit)
    }

    /// Applies the limit, or lifts it.
    fn set(&self, limited: bool) -> std::io::Result<()> {
        let (quota, period) = (self.quota, self.period);
        if self.unified {
            let max = if limited {
                quota.to_string()
            } else {
                "max".to_owned()
            };
            std::fs::write(self.dir.join("cpu.max"), format!("{max} {period}"))
        } else {
            std::fs::write(self.dir.join("cpu.cfs_period_us"), period.to_string())?;
            let quota = if limited {
                quota.to_string()
            } else {
                "-1".to_owned()
            };
            std::fs::write(self.dir.join("cpu.cfs_quota_us"), quota)
        }
    }

    /// Puts the command's process in the cgroup, limited unless its init runs at full CPU. The
    /// child writes "0" (itself) into the cgroup between fork and exec, through a file opened
    /// here: no allocation after the fork.
    fn apply(&self, command: &mut tokio::process::Command) -> std::io::Result<()> {
        self.set(!self.init_full)?;
        let procs = std::fs::OpenOptions::new().write(true).open(&self.procs)?;
        // SAFETY: the closure only writes to an open file descriptor (one syscall), which is
        // async-signal-safe.
        unsafe {
            command.pre_exec(move || (&procs).write_all(b"0"));
        }
        Ok(())
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        // Empty by now: every function it held has been killed and reaped.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// "p50 a ms, p99 b ms" of some samples.
fn spread(mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&samples, 50)),
        ms(percentile(&samples, 99))
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: cold-start BOOTSTRAP EVENT_FILE [INVOCATIONS [COLD_STARTS]]".into());
    }
    let (bootstrap, event_file) = (&args[1], &args[2]);
    let invocations: usize = args.get(3).map(|n| n.parse()).transpose()?.unwrap_or(1_000);
    let cold_starts: usize = args
        .get(4)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(5)
        .max(1);
    let acks = match std::env::var("ACKS").as_deref() {
        Ok("at-once") => Acks::AtOnce,
        Ok("delayed") | Err(_) => Acks::Delayed,
        Ok(other) => return Err(format!("ACKS is delayed or at-once, not {other:?}").into()),
    };
    let check: Option<f64> = std::env::var("CHECK_FIRST_DELTA_MS")
        .ok()
        .map(|ms| ms.parse())
        .transpose()?;
    let init_full = match std::env::var("CPU_INIT").as_deref() {
        Ok("full") => true,
        Ok("limited") | Err(_) => false,
        Ok(other) => return Err(format!("CPU_INIT is full or limited, not {other:?}").into()),
    };
    let cpu = std::env::var("CPU_LIMIT")
        .ok()
        .map(|spec| CpuLimit::new(&spec, init_full))
        .transpose()?;
    let event = std::fs::read_to_string(event_file)?;
    let name = std::path::Path::new(bootstrap)
        .parent()
        .and_then(|dir| dir.file_name())
        .and_then(|name| name.to_str())
        .unwrap_or("function")
        .to_owned();
    let label = std::env::var("LABEL").unwrap_or_else(|_| name.clone());

    // The first environment also serves the warm invocations; the others only start.
    let mut runs = Vec::with_capacity(cold_starts);
    for index in 0..cold_starts {
        let warm = if index == 0 { invocations } else { 0 };
        runs.push(run(bootstrap, &name, &event, warm, acks, cpu.as_ref()).await?);
    }
    let mut inits: Vec<Duration> = runs.iter().map(|run| run.init).collect();
    let mut firsts: Vec<Duration> = runs.iter().map(|run| run.first_response).collect();
    inits.sort();
    firsts.sort();
    let median = |values: &[Duration]| values[values.len() / 2];
    let timings = &runs[0].timings;
    let errors: usize = runs.iter().map(|run| run.errors).sum();
    let rss_kb = runs.iter().map(|run| run.rss_kb).max().unwrap_or(0);
    let mut acks_named = match acks {
        Acks::Delayed => "delayed ACKs",
        Acks::AtOnce => "ACKs at once",
    }
    .to_owned();
    if let Some(cpu) = &cpu {
        acks_named = format!("{acks_named}, {}", cpu.described);
    }
    println!(
        "{label} | init median {:.1} ms, max {:.1} ms | first response median {:.1} ms | warm completion {} over {} | CPU {:.3} ms/invocation | peak RSS {:.1} MB | errors {errors} | {} Runtime API connections | {cold_starts} cold starts, {acks_named}",
        ms(median(&inits)),
        ms(inits[inits.len() - 1]),
        ms(median(&firsts)),
        spread(timings.iter().map(|t| t.completion).collect()),
        timings.len(),
        runs[0].warm_cpu * 1_000.0 / timings.len().max(1) as f64,
        rss_kb as f64 / 1024.0,
        runs[0].connections,
    );
    // Every environment's first invocation: what the first caller after a cold start waits
    // for once init is done (its first connections and handshakes included).
    let mut cold: Vec<Duration> = runs.iter().map(|run| run.first.completion).collect();
    cold.sort();
    let mut cold_deltas: Vec<Duration> = runs
        .iter()
        .filter_map(|run| Some(run.first.prelude? + run.first.first_delta?))
        .collect();
    cold_deltas.sort();
    let to_first_delta = if cold_deltas.is_empty() {
        String::new()
    } else {
        format!(
            " | to its first delta median {:.1} ms, max {:.1} ms",
            ms(median(&cold_deltas)),
            ms(cold_deltas[cold_deltas.len() - 1])
        )
    };
    println!(
        "{label} | cold first invocation (init done → answer) median {:.1} ms, max {:.1} ms{to_first_delta}",
        ms(median(&cold)),
        ms(cold[cold.len() - 1]),
    );
    let preludes: Vec<Duration> = timings.iter().filter_map(|t| t.prelude).collect();
    let first_deltas: Vec<Duration> = timings.iter().filter_map(|t| t.first_delta).collect();
    let gaps: Vec<Duration> = timings.iter().flat_map(|t| t.gaps.clone()).collect();
    if !preludes.is_empty() {
        let deltas = if first_deltas.is_empty() {
            "no deltas".to_owned()
        } else {
            format!(
                "prelude to first delta {} | between deltas {} ({} gaps)",
                spread(first_deltas.clone()),
                spread(gaps.clone()),
                gaps.len()
            )
        };
        println!(
            "{label} | streamed format: to the prelude {} | {deltas}",
            spread(preludes)
        );
    }
    if let Some(limit) = check {
        if first_deltas.is_empty() {
            return Err(format!("{label}: no streamed answer had a delta to check").into());
        }
        let median_ms = |mut samples: Vec<Duration>| {
            samples.sort();
            ms(percentile(&samples, 50))
        };
        let (first, between) = (median_ms(first_deltas), median_ms(gaps));
        if first > limit || between > limit {
            return Err(format!(
                "{label}: median prelude to first delta {first:.2} ms, between deltas {between:.2} ms: over {limit} ms"
            )
            .into());
        }
    }
    Ok(())
}
