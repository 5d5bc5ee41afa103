//! A real Ray cluster for the tests: a head and a second node started with `ray start`,
//! each on a loopback address of its own ([`HEAD_IP`], [`WORKER_IP`]), and stopped by
//! their process groups (with every process they spawned) when the cluster is dropped.
//!
//! The `ray` command comes from `scripts/ray.sh`, which installs the tested version into a
//! cache outside the checkout once. Ray 2.60 would put the host's own address in place of
//! 127.0.0.1; these addresses keep every byte of the tests on loopback.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The head node's address (the dashboard and the GCS listen here).
pub const HEAD_IP: &str = "127.0.0.2";
/// The second node's address.
pub const WORKER_IP: &str = "127.0.0.3";

/// A running two-node cluster.
pub struct RayCluster {
    ray: PathBuf,
    temp: tempfile::TempDir,
    gcs_port: u16,
    dashboard_port: u16,
    /// (address, process group of its `ray start`).
    nodes: Vec<(&'static str, u32)>,
}

impl RayCluster {
    /// The `ray` command of the tested version, installed by `scripts/ray.sh` if needed.
    pub fn ray_command() -> PathBuf {
        let lines = crate::setup_script("ray.sh").expect("scripts/ray.sh failed");
        PathBuf::from(lines.last().expect("scripts/ray.sh printed no path"))
    }

    /// Starts the head, then the second node, and waits until Ray lists both alive.
    pub fn start() -> RayCluster {
        let ray = Self::ray_command();
        let temp = tempfile::Builder::new()
            .prefix("ray-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let mut cluster = RayCluster {
            ray,
            temp,
            gcs_port: crate::free_port(),
            dashboard_port: crate::free_port(),
            nodes: Vec::new(),
        };
        cluster.start_node(HEAD_IP);
        cluster.start_node(WORKER_IP);
        cluster.wait_alive(&[HEAD_IP, WORKER_IP], Duration::from_secs(90));
        cluster
    }

    /// The dashboard's URL: the address of the Jobs API.
    pub fn dashboard(&self) -> String {
        format!("http://{HEAD_IP}:{}", self.dashboard_port)
    }

    /// Starts the node at `ip` (the head when it is [`HEAD_IP`]) and waits for `ray start`.
    pub fn start_node(&mut self, ip: &'static str) {
        let mut cmd = Command::new(&self.ray);
        cmd.arg("start").args(["--node-ip-address", ip]);
        if ip == HEAD_IP {
            cmd.arg("--head")
                .args(["--port", &self.gcs_port.to_string()])
                .args(["--dashboard-host", HEAD_IP])
                .args(["--dashboard-port", &self.dashboard_port.to_string()])
                .args(["--ray-client-server-port", &crate::free_port().to_string()]);
        } else {
            // A resource only this node offers, for jobs that must land on it.
            cmd.args(["--address", &format!("{HEAD_IP}:{}", self.gcs_port)])
                .args(["--resources", r#"{"worker": 1}"#]);
        }
        // Two nodes on one host: each dashboard agent needs a port of its own, or the
        // second reports none and the job logs of its node cannot be read.
        cmd.args([
            "--dashboard-agent-listen-port",
            &crate::free_port().to_string(),
        ])
        .args(["--num-cpus", "4", "--num-gpus", "0"])
        .arg("--temp-dir")
        .arg(self.temp.path())
        .arg("--disable-usage-stats")
        .env("RAY_USAGE_STATS_ENABLED", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
        let child = cmd.spawn().expect("spawn ray start");
        let pgid = child.id();
        let out = child.wait_with_output().expect("ray start");
        self.nodes.push((ip, pgid));
        assert!(
            out.status.success(),
            "ray start ({ip}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kills the node at `ip` at once (SIGKILL to every process it started), as a host
    /// that loses power would vanish.
    pub fn kill_node(&mut self, ip: &str) {
        let groups: Vec<u32> = self
            .nodes
            .iter()
            .filter(|(node, _)| *node == ip)
            .map(|(_, g)| *g)
            .collect();
        self.nodes.retain(|(node, _)| *node != ip);
        let pids = tree_of(&groups);
        signal_all(&pids, libc::SIGKILL);
        wait_gone(&pids, Duration::from_secs(10));
    }

    /// Waits until Ray lists every node of `ips` alive.
    pub fn wait_alive(&self, ips: &[&str], timeout: Duration) {
        let t = Instant::now();
        loop {
            let alive = self.alive_nodes();
            if ips.iter().all(|ip| alive.iter().any(|a| a == ip)) {
                return;
            }
            assert!(
                t.elapsed() < timeout,
                "Ray lists {alive:?} alive after {timeout:?}, not all of {ips:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The addresses of the nodes Ray lists alive now.
    pub fn alive_nodes(&self) -> Vec<String> {
        let ip: [u8; 4] = [127, 0, 0, 2];
        let Some((200, body)) = http_get_at(ip, self.dashboard_port, "/api/v0/nodes?limit=100")
        else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v.pointer("/data/result/result")
            .and_then(|r| r.as_array())
            .map(|nodes| {
                nodes
                    .iter()
                    .filter(|n| n["state"] == "ALIVE")
                    .filter_map(|n| n["node_ip"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for RayCluster {
    fn drop(&mut self) {
        let groups: Vec<u32> = self.nodes.iter().map(|(_, g)| *g).collect();
        let pids = tree_of(&groups);
        signal_all(&pids, libc::SIGTERM);
        if !wait_gone(&pids, Duration::from_secs(10)) {
            signal_all(&tree_of(&groups), libc::SIGKILL);
            signal_all(&pids, libc::SIGKILL);
            wait_gone(&pids, Duration::from_secs(5));
        }
    }
}

/// Every process in the groups `groups`, and every descendant of one (Ray's workers and
/// the jobs' commands run in groups and sessions of their own).
fn tree_of(groups: &[u32]) -> Vec<u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut found: HashSet<u32> = HashSet::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command's closing parenthesis: state, ppid, pgrp.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let (Some(ppid), Some(pgrp)) = (
            fields.get(1).and_then(|f| f.parse().ok()),
            fields.get(2).and_then(|f| f.parse::<u32>().ok()),
        ) else {
            continue;
        };
        parent.insert(pid, ppid);
        if groups.contains(&pgrp) {
            found.insert(pid);
        }
    }
    loop {
        let more: Vec<u32> = parent
            .iter()
            .filter(|(pid, ppid)| found.contains(ppid) && !found.contains(pid))
            .map(|(pid, _)| *pid)
            .collect();
        if more.is_empty() {
            break;
        }
        found.extend(more);
    }
    found.into_iter().collect()
}

fn signal_all(pids: &[u32], sig: i32) {
    for pid in pids {
        // SAFETY: kill(2) on a pid found in /proc just now; no memory is touched.
        unsafe {
            libc::kill(*pid as i32, sig);
        }
    }
}

/// Waits until none of `pids` runs (zombies count as gone); whether they all went.
fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let t = Instant::now();
    while pids.iter().any(|p| crate::process_alive(*p)) {
        if t.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// A plain HTTP/1.1 GET on a loopback address: (status, body).
pub fn http_get_at(ip: [u8; 4], port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_millis(500))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let host = std::net::Ipv4Addr::from(ip);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}
