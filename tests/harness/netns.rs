//! A small network of Linux network namespaces for partition tests: every node runs in a namespace of its
//! own (`ip netns exec`), each namespace is joined by a veth pair to one bridge in the test's own namespace,
//! and the bridge holds the subnet's first address, so the test (its CLI calls, its writers) reaches every node
//! however the nodes are cut from each other.
//!
//! ```text
//!   test process (root namespace)  10.199.K.1 on bridge tnpbrK
//!        ├── tnpKa ── eth0 10.199.K.2   namespace tandem-pK-a
//!        ├── tnpKb ── eth0 10.199.K.3   namespace tandem-pK-b
//!        └── tnpKw ── eth0 10.199.K.4   namespace tandem-pK-w
//! ```
//!
//! **How a link is cut.** The kernel here has neither `netem` nor a `tc` drop action (and the machine has no
//! nftables or iptables tool; delay and loss are emulated by `harness/wire.rs`), so a cut is made with the
//! neighbour table: [`Lab::cut`] pins, in the sender's namespace, the receiver's IP address to a MAC
//! address nobody has. The sender's frames still leave, the bridge (unknown-unicast flooding switched off on
//! every port) drops them, and nothing tells the sender: a silent, one-way drop, like a dead switch port or a
//! firewall that drops instead of rejecting. TCP needs both directions, so a one-way cut ends every TCP
//! exchange between the two hosts, but the receiving side still sees the sender's packets (SYNs, requests)
//! arrive — the asymmetric case. [`Lab::heal`] pins the true MAC address again.
//!
//! Traffic stays inside namespaces the test made (the bridge is not routed anywhere; forwarding in the root
//! namespace is not touched). Everything is removed when the [`Lab`] is dropped, and a lab left over by a
//! killed earlier run under the same names is removed before a new one is made.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::harness::Node;

/// The CA of every lab's nodes (made once, kept under cargo's temporary directory for tests): `ca.pem` there
/// is what clients of the lab's nodes trust (`curl --cacert`).
pub fn ca_dir() -> &'static Path {
    static CA: OnceLock<PathBuf> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("partition-tls-ca");
        if !dir.join("ca-key.pem").exists() {
            let made = Command::new(crate::harness::tandem_bin())
                .args(["cert", "init", "--dir"])
                .arg(&dir)
                .output()
                .expect("run tandem cert init");
            assert!(made.status.success(), "tandem cert init: {}", String::from_utf8_lossy(&made.stderr));
        }
        dir
    })
}

/// A node (not started) living in `host`'s namespace, on that host's address with fixed ports, with TLS: the
/// address is not loopback, where `tandem serve` speaks nothing but TLS. Its certificate (for its IP address)
/// is made in `root` and signed by the CA of [`ca_dir`].
pub fn tls_node(root: &Path, host: &Host, role: &str) -> Node {
    let ca = ca_dir();
    let out = root.join("tls");
    let name = &host.name;
    let made = Command::new(crate::harness::tandem_bin())
        .args(["cert", "node", name, "--ip", &host.ip, "--ca-dir"])
        .arg(ca)
        .arg("--out-dir")
        .arg(&out)
        .output()
        .expect("run tandem cert node");
    assert!(made.status.success(), "tandem cert node {name}: {}", String::from_utf8_lossy(&made.stderr));
    let (cert, key) = (out.join(format!("{name}.pem")), out.join(format!("{name}-key.pem")));
    Node::new(root, name, role).in_netns(&host.netns, &host.ip).with_tls(&ca.join("ca.pem"), &cert, &key)
}

/// A MAC address no host has: frames sent to it are dropped by the bridge.
const NOWHERE: &str = "02:00:5e:00:00:01";

/// One host of a lab: its namespace, its address and its interface's MAC address (empty in a
/// [`crate::wire::WireLab`], whose TUN devices have none).
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub netns: String,
    pub ip: String,
    pub mac: String,
}

/// The namespaces, veth pairs and bridge of one test; removed on drop.
#[derive(Debug)]
pub struct Lab {
    bridge: String,
    hosts: Vec<Host>,
}

/// Runs `ip ARGS`; an error names the command and what `ip` said.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip").args(args).output().map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

impl Lab {
    /// Why partition tests cannot run here, if they cannot: they need root (namespaces, veth, bridges) and
    /// the `ip` command from iproute2.
    pub fn unavailable() -> Option<String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        match uid {
            Ok(uid) if uid == "0" => {}
            Ok(uid) => return Some(format!("network namespaces need root (uid {uid})")),
            Err(e) => return Some(format!("cannot tell the uid: {e}")),
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Some("the `ip` command (iproute2) is missing".into());
        }
        None
    }

    /// A lab with one host per name, each in a namespace of its own. The `index` of the lab (its subnet
    /// 10.199.K.0/24 and the K in every name) is unique within this test process.
    pub fn new(names: &[&str]) -> Result<Lab, String> {
        static NEXT: AtomicU8 = AtomicU8::new(1);
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(k < 250 && names.len() < 200, "too many labs or hosts");
        let bridge = format!("tnpbr{k}");
        let hosts: Vec<Host> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Host {
                name: name.to_string(),
                netns: format!("tandem-p{k}-{name}"),
                ip: format!("10.199.{k}.{}", i + 2),
                mac: format!("02:54:4e:{k:02x}:00:{:02x}", i + 2),
            })
            .collect();
        let lab = Lab { bridge, hosts };
        lab.remove();
        lab.build().inspect_err(|_| lab.remove())?;
        Ok(lab)
    }

    fn build(&self) -> Result<(), String> {
        let k_subnet = self.hosts[0].ip.rsplit_once('.').map(|(net, _)| net.to_string()).unwrap_or_default();
        ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{k_subnet}.1/24"), "dev", &self.bridge])?;
        ip(&["link", "set", &self.bridge, "up"])?;
        for host in &self.hosts {
            let port = self.port(host);
            ip(&["netns", "add", &host.netns])?;
            ip(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host.netns])?;
            ip(&["-n", &host.netns, "link", "set", "eth0", "address", &host.mac])?;
            ip(&["link", "set", &port, "master", &self.bridge])?;
            ip(&["link", "set", &port, "up"])?;
            let flood = Command::new("bridge").args(["link", "set", "dev", &port, "flood", "off"]).output();
            match flood {
                Ok(output) if output.status.success() => {}
                Ok(output) => {
                    return Err(format!(
                        "bridge link set flood off: {}",
                        String::from_utf8_lossy(&output.stderr)
                    ));
                }
                Err(e) => return Err(format!("bridge (iproute2): {e}")),
            }
            ip(&["-n", &host.netns, "addr", "add", &format!("{}/24", host.ip), "dev", "eth0"])?;
            ip(&["-n", &host.netns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &host.netns, "link", "set", "lo", "up"])?;
        }
        // Every host knows every other's true MAC address from the start (no ARP), so a heal is exact.
        for from in &self.hosts {
            for to in &self.hosts {
                if from.name != to.name {
                    self.pin(from, to, &to.mac)?;
                }
            }
        }
        Ok(())
    }

    /// The root-namespace end of a host's veth pair.
    fn port(&self, host: &Host) -> String {
        format!("tnp{}{}", self.bridge.trim_start_matches("tnpbr"), host.name)
    }

    fn remove(&self) {
        for host in &self.hosts {
            let _ = ip(&["netns", "del", &host.netns]);
            let _ = ip(&["link", "del", &self.port(host)]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    /// A node of this lab (not started), in its namespace on its address, with TLS (see [`tls_node`]).
    pub fn node(&self, root: &Path, name: &str, role: &str) -> Node {
        tls_node(root, self.host(name), role)
    }

    fn pin(&self, from: &Host, to: &Host, mac: &str) -> Result<(), String> {
        ip(&["-n", &from.netns, "neigh", "replace", &to.ip, "lladdr", mac, "dev", "eth0", "nud", "permanent"])
    }

    /// From now on, packets from `from` to `to` are silently dropped (one direction only).
    pub fn cut(&self, from: &str, to: &str) {
        let (f, t) = (self.host(from), self.host(to));
        self.pin(f, t, NOWHERE).unwrap_or_else(|e| panic!("cut {from}->{to}: {e}"));
    }

    /// Packets from `from` to `to` flow again.
    pub fn heal(&self, from: &str, to: &str) {
        let (f, t) = (self.host(from), self.host(to));
        self.pin(f, t, &t.mac).unwrap_or_else(|e| panic!("heal {from}->{to}: {e}"));
    }

    /// Cuts both directions between `name` and every other host.
    pub fn isolate(&self, name: &str) {
        for other in self.others(name) {
            self.cut(name, &other);
            self.cut(&other, name);
        }
    }

    /// Heals every link.
    pub fn heal_all(&self) {
        for from in &self.hosts {
            for to in &self.hosts {
                if from.name != to.name {
                    self.heal(&from.name, &to.name);
                }
            }
        }
    }

    fn others(&self, name: &str) -> Vec<String> {
        self.hosts.iter().filter(|h| h.name != name).map(|h| h.name.clone()).collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.remove();
    }
}
