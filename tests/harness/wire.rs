//! An emulated network with delay and loss: `tc netem` in user space, for kernels without `sch_netem` (this
//! machine's has none; see `tests/partition.rs`).
//!
//! Every host of the lab lives in a network namespace of its own with one TUN device as its only interface.
//! The test process holds the other end of every TUN device and forwards each IPv4 packet to the TUN device
//! of its destination — after a delay drawn uniformly from `[delay − jitter, delay + jitter]`, unless the
//! packet is dropped (loss, independent per packet): what `tc qdisc add … netem delay D J loss P%` does on a
//! link. Packets reorder when their delays cross, as with netem's jitter. The namespaces' kernels run real
//! TCP over it: their round-trip estimates, retransmission timers and congestion windows see the delay and the
//! loss, and so does everything the nodes send (TLS handshakes, Raft heartbeats, forwarded writes).
//!
//! The test process is a host too (10.198.K.1, a TUN device in the root namespace) and reaches every node
//! without delay or loss: only packets between two lab hosts are impaired, so the test observes the nodes
//! without being part of the links it impairs.
//!
//! ```text
//!   root namespace:  tnwK0 10.198.K.1 ─┐
//!                                      │  the forwarder (a thread of the test process): routes by
//!   tandem-wK-a:     tnwKa 10.198.K.2 ─┤  destination address; between two lab hosts, delay D ± J and
//!   tandem-wK-b:     tnwKb 10.198.K.3 ─┤  loss P
//!   tandem-wK-w:     tnwKw 10.198.K.4 ─┘
//! ```
//!
//! The forwarder adds its own scheduling latency (a few tens of microseconds on an idle machine) to every
//! packet; [`Impairment::NONE`] is therefore "as good as the forwarder", not a bare veth pair.
//! Everything is removed when the [`WireLab`] is dropped (the TUN devices disappear with their file
//! descriptors), and a lab left over by a killed earlier run under the same names is removed first.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::Node;
use crate::netns::{Host, ip, tls_node};

/// What happens to a packet between two lab hosts, in each direction (like netem on every link).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    pub delay: Duration,
    pub jitter: Duration,
    /// Packets dropped, per 10,000.
    pub loss_per_10k: u32,
}

impl Impairment {
    pub const NONE: Impairment =
        Impairment { delay: Duration::ZERO, jitter: Duration::ZERO, loss_per_10k: 0 };

    /// `netem delay DELAY_MS JITTER_MS loss LOSS_PERCENT%`.
    pub fn netem(delay_ms: u64, jitter_ms: u64, loss_percent: f64) -> Impairment {
        assert!(jitter_ms <= delay_ms && (0.0..=100.0).contains(&loss_percent));
        Impairment {
            delay: Duration::from_millis(delay_ms),
            jitter: Duration::from_millis(jitter_ms),
            loss_per_10k: (loss_percent * 100.0).round() as u32,
        }
    }
}

/// Packets the forwarder has seen between lab hosts (not those to or from the test process).
#[derive(Debug, Default)]
pub struct Counters {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
}

/// The namespaces, TUN devices and forwarder of one test; removed on drop.
#[derive(Debug)]
pub struct WireLab {
    hosts: Vec<Host>,
    root_tun: String,
    impairment: Arc<Mutex<Impairment>>,
    pub counters: Arc<Counters>,
    /// Owns the forwarder's tasks and, through them, every TUN device.
    runtime: Option<tokio::runtime::Runtime>,
}

/// Cheap randomness for tests (xorshift): the forwarder's per-packet dice, the flapping link's choices.
pub struct Dice(pub u64);

impl Dice {
    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

impl WireLab {
    /// A lab with one host per name, each in a namespace of its own, and `impairment` on every link between
    /// two of them. Needs root and iproute2, like [`crate::netns::Lab`] (its `unavailable` says why not).
    pub fn new(names: &[&str], impairment: Impairment) -> Result<WireLab, String> {
        static NEXT: AtomicU8 = AtomicU8::new(1);
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(k < 250 && names.len() < 200, "too many labs or hosts");
        let hosts: Vec<Host> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Host {
                name: name.to_string(),
                netns: format!("tandem-w{k}-{name}"),
                ip: format!("10.198.{k}.{}", i + 2),
                mac: String::new(),
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wire-forwarder")
            .enable_all()
            .build()
            .map_err(|e| format!("forwarder runtime: {e}"))?;
        let mut lab = WireLab {
            hosts,
            root_tun: format!("tnw{k}0"),
            impairment: Arc::new(Mutex::new(impairment)),
            counters: Arc::default(),
            runtime: Some(runtime),
        };
        lab.remove_namespaces();
        lab.build(k).inspect_err(|_| lab.remove_namespaces())?;
        Ok(lab)
    }

    fn build(&mut self, k: u8) -> Result<(), String> {
        let runtime = self.runtime.as_ref().expect("the runtime lives until drop");
        let _entered = runtime.enter();
        // Device 0 is the test's own (root namespace), device i + 1 is host i's.
        let mut devices = Vec::new();
        let names: Vec<String> = std::iter::once(self.root_tun.clone())
            .chain(self.hosts.iter().map(|h| format!("tnw{k}{}", h.name)))
            .collect();
        for name in &names {
            let mut config = tun::Configuration::default();
            config.tun_name(name).layer(tun::Layer::L3);
            let device = tun::create_as_async(&config).map_err(|e| format!("TUN device {name}: {e}"))?;
            devices.push(Arc::new(device));
        }
        ip(&["addr", "add", &format!("10.198.{k}.1/24"), "dev", &self.root_tun])?;
        ip(&["link", "set", &self.root_tun, "up"])?;
        for (host, device) in self.hosts.iter().zip(&names[1..]) {
            ip(&["netns", "add", &host.netns])?;
            ip(&["link", "set", device, "netns", &host.netns])?;
            ip(&["-n", &host.netns, "addr", "add", &format!("{}/24", host.ip), "dev", device])?;
            ip(&["-n", &host.netns, "link", "set", device, "up"])?;
            ip(&["-n", &host.netns, "link", "set", "lo", "up"])?;
        }
        for from in 0..devices.len() {
            let (devices, impairment, counters) =
                (devices.clone(), self.impairment.clone(), self.counters.clone());
            runtime.spawn(forward_from(from, k, devices, impairment, counters));
        }
        Ok(())
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    /// A node of this lab (not started), in its namespace on its address, with TLS (see
    /// [`crate::netns::tls_node`]).
    pub fn node(&self, root: &Path, name: &str, role: &str) -> Node {
        tls_node(root, self.host(name), role)
    }

    /// From now on, every link between two lab hosts has `impairment`.
    pub fn set_impairment(&self, impairment: Impairment) {
        *self.impairment.lock().unwrap() = impairment;
    }

    fn remove_namespaces(&self) {
        for host in &self.hosts {
            let _ = ip(&["netns", "del", &host.netns]);
        }
        let _ = ip(&["link", "del", &self.root_tun]);
    }
}

impl Drop for WireLab {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
        self.remove_namespaces();
    }
}

/// Reads every packet device `from` emits and hands it to its destination's device: at once when the test
/// process is one end, after the impairment's delay (or never) between two lab hosts.
async fn forward_from(
    from: usize,
    k: u8,
    devices: Vec<Arc<tun::AsyncDevice>>,
    impairment: Arc<Mutex<Impairment>>,
    counters: Arc<Counters>,
) {
    let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ (from as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut buffer = vec![0u8; 65_536];
    // A failed read is reported and retried: returning would cut the host off for the rest of the test.
    let mut failed_in_a_row = 0u32;
    loop {
        let length = match devices[from].recv(&mut buffer).await {
            Ok(length) => {
                failed_in_a_row = 0;
                length
            }
            Err(error) => {
                failed_in_a_row += 1;
                eprintln!("wire: reading device {from} failed ({failed_in_a_row} in a row): {error}");
                if failed_in_a_row >= 1_000 {
                    eprintln!("wire: giving up on device {from}");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let packet = &buffer[..length];
        // IPv4 only (the nodes use nothing else here); the destination's last byte picks the device.
        if packet.len() < 20 || packet[0] >> 4 != 4 {
            continue;
        }
        let destination = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        let [a, b, c, d] = destination.octets();
        if (a, b, c) != (10, 198, k) || d == 0 || usize::from(d) > devices.len() {
            continue;
        }
        let to = usize::from(d) - 1;
        if to == from {
            continue;
        }
        let packet = packet.to_vec();
        let device = devices[to].clone();
        let between_hosts = from != 0 && to != 0;
        if !between_hosts {
            send(&device, &packet, to).await;
            continue;
        }
        let now = *impairment.lock().unwrap();
        if dice.below(10_000) < u64::from(now.loss_per_10k) {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        counters.forwarded.fetch_add(1, Ordering::Relaxed);
        let spread = now.jitter.as_micros() as u64;
        let delay = now.delay.saturating_sub(now.jitter)
            + Duration::from_micros(if spread == 0 { 0 } else { dice.below(2 * spread + 1) });
        if delay.is_zero() {
            send(&device, &packet, to).await;
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                send(&device, &packet, to).await;
            });
        }
    }
}

/// Hands one packet to device `to`; a failure loses the packet (as a full queue would) and is reported.
async fn send(device: &tun::AsyncDevice, packet: &[u8], to: usize) {
    if let Err(error) = device.send(packet).await {
        eprintln!("wire: writing a packet of {} bytes to device {to} failed: {error}", packet.len());
    }
}
