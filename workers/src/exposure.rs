//! Whether a worker's port is open beyond this host. A worker is told to serve on
//! 127.0.0.1:`PORT`, but many servers bind every address when given a bare port (Node's
//! `server.listen(PORT)`, Express, Next.js's standalone server): the app is then reachable
//! from the network straight on that port, past the gateway's token check and rate limit.
//! Read from the kernel's socket tables, once per worker start.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The addresses other than loopback on which something listens on TCP `port`, as the
/// kernel lists them (`0.0.0.0`, `::`, or one interface's address).
pub fn open_listeners(port: u16) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = listening_on(port)
        .into_iter()
        .filter(|ip| !ip.is_loopback() && !mapped_loopback(ip))
        .collect();
    out.dedup();
    out
}

/// Whether TCP `port` is listened on at `::1` and nowhere IPv4 reaches: a server told
/// 127.0.0.1 that bound `localhost` instead, which is `::1` first in containers and pods.
pub fn ipv6_loopback_only(port: u16) -> bool {
    let on = listening_on(port);
    !on.is_empty() && on.iter().all(|ip| *ip == IpAddr::V6(Ipv6Addr::LOCALHOST))
}

/// Every address something listens on TCP `port` at, from both of the kernel's tables.
fn listening_on(port: u16) -> Vec<IpAddr> {
    let v4 = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    listeners(&v4)
        .chain(listeners(&v6))
        .filter(|(_, p)| *p == port)
        .map(|(ip, _)| ip)
        .collect()
}

/// `::ffff:127.0.0.1` is loopback too, though `Ipv6Addr::is_loopback` says otherwise.
fn mapped_loopback(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
}

/// The listening sockets of one table: `(address, port)`.
fn listeners(table: &str) -> impl Iterator<Item = (IpAddr, u16)> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1)?;
        // `st` 0A is TCP_LISTEN.
        (fields.nth(1)? == "0A").then_some(())?;
        let (addr, port) = local.split_once(':')?;
        Some((parse_addr(addr)?, u16::from_str_radix(port, 16).ok()?))
    })
}

/// An address as the tables write it: each 32-bit word in hex, in the host's byte order.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn addresses_read_as_the_kernel_writes_them() {
        // Little-endian words, as on x86 and arm64 Linux.
        let table = "  sl  local_address rem_address   st\n\
             0: 0100007F:1F90 00000000:0000 0A 0\n\
             1: 00000000:1F91 00000000:0000 0A 0\n\
             2: 0100007F:1F92 0100007F:D431 01 0\n";
        let found: Vec<(IpAddr, u16)> = listeners(table).collect();
        assert_eq!(
            found,
            [
                (IpAddr::from([127, 0, 0, 1]), 8080),
                (IpAddr::from([0, 0, 0, 0]), 8081),
            ]
        );
        let v6 = "  sl  local_address\n\
             0: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000000000000:0000 0A 0\n\
             1: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 0\n";
        let found: Vec<(IpAddr, u16)> = listeners(v6).collect();
        assert_eq!(
            found,
            [
                (IpAddr::from(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), 8080),
                (IpAddr::from(Ipv6Addr::LOCALHOST), 8081),
            ]
        );
    }

    #[test]
    fn a_port_bound_on_every_address_is_open_and_loopback_is_not() {
        let open = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = open.local_addr().unwrap().port();
        assert_eq!(open_listeners(port), [IpAddr::from([0, 0, 0, 0])]);
        let local = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(open_listeners(local.local_addr().unwrap().port()).is_empty());
    }
}
