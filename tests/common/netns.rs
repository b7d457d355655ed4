//! Partitions: one cluster node in a network namespace of its own
//! ([`NetLab`]; needs root and `ip netns`), reached through two veth pairs,
//! a *cluster link* (its `cluster.listen`, and the other nodes' listeners on
//! the host end of that link) and a *service link* (its HTTP listener, and
//! the stores: tansu listens on the host end, Postgres and Redis through TCP
//! forwarders in the test process, [`NetLab::forward`]). [`NetLab::cut`]
//! takes the cluster link down, [`NetLab::heal`] brings it back; the service
//! link stays up, so the cut-off node keeps its stores and its clients. The
//! namespace and the links are deleted on drop, even after a panic. A
//! command that fails fails the test, loudly (never a skip).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};

use tokio::net::{TcpListener as TokioListener, TcpStream};
use tokio::task::JoinHandle;

use super::procs::run;

/// `host:port` of a `scheme://[user@]host[:port][/...]` URL, and the URL with
/// that part replaced by `{}`.
pub fn url_endpoint(url: &str, default_port: u16) -> (SocketAddr, String) {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("{url}: not a scheme://host URL"));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let at = authority.rfind('@').map_or(0, |i| i + 1);
    let hostport = &authority[at..];
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or_else(|_| panic!("{url}: bad port"))),
        None => (hostport, default_port),
    };
    let ip: IpAddr = match host {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h
            .parse()
            .unwrap_or_else(|_| panic!("{url}: the partition tests need an IP address host")),
    };
    let template = format!("{scheme}://{}{{}}{}", &authority[..at], &rest[end..]);
    (SocketAddr::new(ip, port), template)
}

/// Runs `ip ARGS`; panics loudly (never skips) when it fails.
fn ip_cmd(args: &[&str]) {
    run(
        &format!(
            "`ip {}` (the partition tests need root and iproute2 with `ip netns`)",
            args.join(" ")
        ),
        Command::new("ip").args(args),
    );
}

/// `ip ARGS`, ignoring failure (clean-up).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A network namespace for one node, with a cluster link and a service link
/// (veth pairs) to the host, and TCP forwarders from the host end of the
/// service link to the stores on host loopback. Everything is deleted on drop.
pub struct NetLab {
    pub ns: String,
    /// Host end and namespace end of the cluster link.
    pub cluster_host_if: String,
    pub cluster_ns_if: String,
    pub service_host_if: String,
    pub service_ns_if: String,
    pub cluster_host: Ipv4Addr,
    pub cluster_ns: Ipv4Addr,
    pub service_host: Ipv4Addr,
    pub service_ns: Ipv4Addr,
    forwarders: Vec<JoinHandle<()>>,
}

impl NetLab {
    /// Namespace `tp<pid>`; subnets 10.A.B.0/24 (cluster) and 10.A.B+1.0/24
    /// (service), derived from the pid.
    pub fn create() -> NetLab {
        let pid = std::process::id();
        let k = pid % 4096;
        let (a, b) = (100 + (k >> 7) as u8, 2 * (k & 127) as u8);
        let lab = NetLab {
            ns: format!("tp{pid}"),
            cluster_host_if: format!("tpc{pid}h"),
            cluster_ns_if: format!("tpc{pid}n"),
            service_host_if: format!("tps{pid}h"),
            service_ns_if: format!("tps{pid}n"),
            cluster_host: Ipv4Addr::new(10, a, b, 1),
            cluster_ns: Ipv4Addr::new(10, a, b, 2),
            service_host: Ipv4Addr::new(10, a, b + 1, 1),
            service_ns: Ipv4Addr::new(10, a, b + 1, 2),
            forwarders: Vec::new(),
        };
        // Left over by a run of the same pid that was killed: start clean.
        lab.delete();
        let ns = lab.ns.as_str();
        ip_cmd(&["netns", "add", ns]);
        ip_cmd(&["-n", ns, "link", "set", "lo", "up"]);
        for (host_if, ns_if, host_ip, ns_ip) in [
            (
                &lab.cluster_host_if,
                &lab.cluster_ns_if,
                lab.cluster_host,
                lab.cluster_ns,
            ),
            (
                &lab.service_host_if,
                &lab.service_ns_if,
                lab.service_host,
                lab.service_ns,
            ),
        ] {
            ip_cmd(&[
                "link", "add", host_if, "type", "veth", "peer", "name", ns_if,
            ]);
            ip_cmd(&["link", "set", ns_if, "netns", ns]);
            ip_cmd(&["addr", "add", &format!("{host_ip}/24"), "dev", host_if]);
            ip_cmd(&["link", "set", host_if, "up"]);
            ip_cmd(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ns_ip}/24"),
                "dev",
                ns_if,
            ]);
            ip_cmd(&["-n", ns, "link", "set", ns_if, "up"]);
        }
        lab
    }

    fn delete(&self) {
        // Deleting one end of a veth pair deletes both.
        ip_quiet(&["link", "del", &self.cluster_host_if]);
        ip_quiet(&["link", "del", &self.service_host_if]);
        ip_quiet(&["netns", "del", &self.ns]);
    }

    /// Cuts the cluster link: packets between the namespace and the host
    /// end are dropped from now on (established TCP connections hang, no
    /// RST). The namespace end goes down, not the host end: with the host end
    /// down, the host's route to the link's subnet goes away and connections
    /// to the cut-off node leave through the default route, whose gateway (in
    /// this sandbox) accepts any TCP connection. This way the host keeps its
    /// own address on the link (the other nodes listen there) and reaches
    /// the namespace end no more (new connections: "no route to host").
    pub fn cut(&self) {
        ip_cmd(&["-n", &self.ns, "link", "set", &self.cluster_ns_if, "down"]);
    }

    pub fn heal(&self) {
        ip_cmd(&["-n", &self.ns, "link", "set", &self.cluster_ns_if, "up"]);
    }

    /// A TCP forwarder from the host end of the service link to `target`;
    /// the address it listens on.
    pub async fn forward(&mut self, target: SocketAddr) -> SocketAddr {
        let listener = TokioListener::bind((self.service_host, 0))
            .await
            .unwrap_or_else(|e| panic!("a forwarder on {}: {e}", self.service_host));
        let addr = listener.local_addr().expect("a local address");
        self.forwarders.push(tokio::spawn(async move {
            // Dropped (and its connections with it) when the forwarder is aborted.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                conns.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        }));
        addr
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for f in &self.forwarders {
            f.abort();
        }
        self.delete();
    }
}
