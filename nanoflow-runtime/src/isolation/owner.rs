//! Which runner owns a container, and whether that runner is still alive.
//!
//! Every container carries its runner's instance id and what a liveness check needs (host
//! name, pid, and the process's start time, so a reused pid is not mistaken for the owner).
//! At start a runner removes only the containers whose owner is gone: two services on one
//! host, or two copies of one service, never remove each other's live containers (issue 18).

use std::collections::HashMap;
use std::sync::OnceLock;

/// Label: the owning runner's instance id (unique per runner process).
pub(crate) const RUNNER: &str = "nanoflow.runner";
/// Label: the host name of the owning runner.
const HOST: &str = "nanoflow.host";
/// Label: the pid of the owning runner.
const PID: &str = "nanoflow.pid";
/// Label: the start time of the owning runner's process (`/proc/<pid>/stat` field 22).
const PID_START: &str = "nanoflow.pid_start";

/// The runner process that owns containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    /// Unique per runner process.
    pub(crate) instance: String,
    host: String,
    pid: u32,
    started: Option<u64>,
}

/// What is known about a container's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// This very runner.
    Mine,
    /// Another runner on this host, still running.
    Alive,
    /// The owner's process is gone (or its pid now belongs to another process).
    Gone,
    /// The owner cannot be checked (another host, or a container without owner labels).
    Unknown,
}

impl Owner {
    /// This process.
    pub(crate) fn this() -> &'static Owner {
        static THIS: OnceLock<Owner> = OnceLock::new();
        THIS.get_or_init(|| {
            let pid = std::process::id();
            Owner {
                instance: format!("{:032x}", crate::run::RunId::new().as_u128()),
                host: host_name(),
                pid,
                started: process_start(pid),
            }
        })
    }

    /// The labels that name this owner on a container.
    pub(crate) fn labels(&self) -> Vec<(String, String)> {
        let mut labels = vec![
            (RUNNER.to_owned(), self.instance.clone()),
            (HOST.to_owned(), self.host.clone()),
            (PID.to_owned(), self.pid.to_string()),
        ];
        if let Some(started) = self.started {
            labels.push((PID_START.to_owned(), started.to_string()));
        }
        labels
    }

    /// Whether the owner named by a container's `labels` is alive, seen from this runner.
    pub(crate) fn check(&self, labels: &HashMap<String, String>) -> Liveness {
        let (Some(instance), Some(host), Some(pid)) = (
            labels.get(RUNNER),
            labels.get(HOST),
            labels.get(PID).and_then(|p| p.parse::<u32>().ok()),
        ) else {
            return Liveness::Unknown;
        };
        if *instance == self.instance {
            return Liveness::Mine;
        }
        if *host != self.host {
            return Liveness::Unknown;
        }
        let recorded = labels.get(PID_START).and_then(|s| s.parse::<u64>().ok());
        match process_start(pid) {
            // No such process: the owner exited or crashed.
            None => Liveness::Gone,
            // The pid was reused by a process started at another time.
            Some(now) if recorded.is_some_and(|r| r != now) => Liveness::Gone,
            Some(_) => Liveness::Alive,
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The start time of process `pid` in clock ticks since boot, `None` when it does not exist.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    start_time_of(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line (proc(5)); the command name (field 2) may hold spaces
/// and parentheses, so fields are counted from its closing parenthesis.
fn start_time_of(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // `after` begins with field 3 (state), so field 22 is its 20th word.
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let stat =
            "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_time_of(stat), Some(987654));
        assert_eq!(start_time_of("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_dead_pid_is_gone() {
        let me = Owner::this();
        assert!(me.started.is_some(), "this process has a start time");
        let mut labels: HashMap<String, String> = me.labels().into_iter().collect();
        assert_eq!(me.check(&labels), Liveness::Mine);
        labels.insert(RUNNER.into(), "another".into());
        assert_eq!(me.check(&labels), Liveness::Alive);
        labels.insert(PID_START.into(), "1".into());
        assert_eq!(me.check(&labels), Liveness::Gone, "a reused pid");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        labels.insert(PID.into(), dead.to_string());
        labels.remove(PID_START);
        assert_eq!(me.check(&labels), Liveness::Gone, "an exited process");
        labels.insert(HOST.into(), "elsewhere".into());
        assert_eq!(me.check(&labels), Liveness::Unknown);
        assert_eq!(me.check(&HashMap::new()), Liveness::Unknown);
    }
}
