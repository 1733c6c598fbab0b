//! The `network` section: bridge mode (static IPv4 on a TAP of the bridge) or
//! user mode (QEMU user networking with port forwards). Interface names reach
//! QEMU's `-netdev` option string and rtnetlink, so they are held to a strict
//! pattern rather than to whatever the kernel would accept.

use std::net::Ipv4Addr;
use std::path::Path;

use super::{
    invalid, BridgeNet, Config, ConfigError, NetMode, Protocol, ResolvedNet, ResolvedPort,
};
use crate::derive;

/// TAP names: `^[a-z0-9][a-z0-9-]{0,14}$` (no `,` `=` or anything else that
/// QEMU's option parser or a shell would read).
pub fn check_tap_name(name: &str) -> Result<(), &'static str> {
    let first = name.bytes().next();
    if name.len() > 15 || !first.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        return Err("must match ^[a-z0-9][a-z0-9-]{0,14}$ (1 to 15 characters)");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("must match ^[a-z0-9][a-z0-9-]{0,14}$ (1 to 15 characters)");
    }
    Ok(())
}

/// Bridge names: `^[A-Za-z0-9][A-Za-z0-9_-]{0,14}$` (the NixOS module asserts
/// the same pattern).
pub fn check_bridge_name(name: &str) -> Result<(), &'static str> {
    const WHY: &str = "must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,14}$ (1 to 15 characters)";
    let first = name.bytes().next();
    if name.len() > 15 || !first.is_some_and(|b| b.is_ascii_alphanumeric()) {
        return Err(WHY);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(WHY);
    }
    Ok(())
}

fn parse_ip(path: &Path, field: &str, value: &str) -> Result<Ipv4Addr, ConfigError> {
    value
        .parse::<Ipv4Addr>()
        .map_err(|_| invalid(path, field, value, "not an IPv4 address"))
}

pub(super) fn validate_network(p: &Path, config: &Config) -> Result<ResolvedNet, ConfigError> {
    match config.network.mode {
        NetMode::User => user_mode(p, config),
        NetMode::Bridge => bridge_mode(p, config),
    }
}

fn user_mode(p: &Path, config: &Config) -> Result<ResolvedNet, ConfigError> {
    let n = &config.network;
    // restrict=on: the guest reaches nothing, so it gets no resolver or time source.
    for (field, list) in [
        ("network.nameservers", &n.nameservers),
        ("network.ntp_servers", &n.ntp_servers),
    ] {
        if let Some(s) = list.first() {
            return Err(invalid(
                p,
                &format!("{field}[0]"),
                s,
                "a network.mode = \"user\" guest (restrict=on) reaches no server; leave it empty",
            ));
        }
    }
    if let Some(ip) = &n.ip {
        return Err(invalid(
            p,
            "network.ip",
            ip,
            "only allowed with network.mode = \"bridge\"",
        ));
    }
    for (field, v) in [("network.tap", &n.tap), ("network.mac", &n.mac)] {
        if let Some(v) = v {
            return Err(invalid(
                p,
                field,
                v,
                "only allowed with network.mode = \"bridge\"",
            ));
        }
    }
    let mut ports = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, f) in n.ports.iter().enumerate() {
        let addr = parse_ip(
            p,
            &format!("network.ports[{i}].host_address"),
            &f.host_address,
        )?;
        if f.host == 0 || f.guest == 0 {
            return Err(invalid(
                p,
                &format!("network.ports[{i}]"),
                &format!("{}:{}", f.host, f.guest),
                "ports must be between 1 and 65535",
            ));
        }
        let proto = match f.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        if !seen.insert((proto, f.host)) {
            return Err(invalid(
                p,
                &format!("network.ports[{i}].host"),
                &f.host.to_string(),
                &format!("host {proto} port forwarded twice"),
            ));
        }
        ports.push(ResolvedPort {
            protocol: proto.into(),
            host_address: addr,
            host: f.host,
            guest: f.guest,
        });
    }
    Ok(ResolvedNet::User { ports })
}

/// Resolvers and NTP servers of a bridged guest: it can reach only the
/// gateway (docs/firewall.md), so any other address would be a server it can
/// never reach.
fn gateway_servers(
    p: &Path,
    what: &str,
    list: &[String],
    gateway: Ipv4Addr,
) -> Result<Vec<Ipv4Addr>, ConfigError> {
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let field = format!("network.{what}[{i}]");
        let ip = parse_ip(p, &field, s)?;
        if ip != gateway {
            return Err(invalid(
                p,
                &field,
                s,
                &format!("a guest on the isolated bridge reaches only the gateway {gateway}"),
            ));
        }
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

fn bridge_mode(p: &Path, config: &Config) -> Result<ResolvedNet, ConfigError> {
    let n = &config.network;
    if !n.ports.is_empty() {
        return Err(invalid(
            p,
            "network.ports",
            &format!("{} forward(s)", n.ports.len()),
            "port forwards need network.mode = \"user\"; in bridge mode the VM is reached at its IP",
        ));
    }
    check_bridge_name(&n.bridge).map_err(|r| invalid(p, "network.bridge", &n.bridge, r))?;
    if !(1..=30).contains(&n.prefix_length) {
        return Err(invalid(
            p,
            "network.prefix_length",
            &n.prefix_length.to_string(),
            "must be between 1 and 30",
        ));
    }
    let gateway = parse_ip(p, "network.gateway", &n.gateway)?;
    let ip_str = n.ip.as_deref().ok_or_else(|| {
        invalid(
            p,
            "network.ip",
            "null",
            "required with network.mode = \"bridge\"",
        )
    })?;
    let ip = parse_ip(p, "network.ip", ip_str)?;
    let mask = derive::netmask(n.prefix_length);
    let net_of = |a: Ipv4Addr| u32::from(a) & u32::from(mask);
    if net_of(gateway) != net_of(ip) {
        return Err(invalid(
            p,
            "network.ip",
            ip_str,
            &format!(
                "outside the bridge subnet {}/{}",
                Ipv4Addr::from(net_of(gateway)),
                n.prefix_length
            ),
        ));
    }
    let host_bits = u32::from(ip) & !u32::from(mask);
    if host_bits == 0 {
        return Err(invalid(p, "network.ip", ip_str, "is the network address"));
    }
    if host_bits == !u32::from(mask) {
        return Err(invalid(p, "network.ip", ip_str, "is the broadcast address"));
    }
    if ip == gateway {
        return Err(invalid(
            p,
            "network.ip",
            ip_str,
            "equals the gateway (the host's bridge address)",
        ));
    }
    let gw_bits = u32::from(gateway) & !u32::from(mask);
    if gw_bits == 0 || gw_bits == !u32::from(mask) {
        return Err(invalid(
            p,
            "network.gateway",
            &n.gateway,
            "is the network or broadcast address",
        ));
    }
    let nameservers = gateway_servers(p, "nameservers", &n.nameservers, gateway)?;
    let ntp_servers = gateway_servers(p, "ntp_servers", &n.ntp_servers, gateway)?;
    let tap = match &n.tap {
        Some(t) => {
            check_tap_name(t).map_err(|r| invalid(p, "network.tap", t, r))?;
            t.clone()
        }
        None => derive::tap_name(&config.name),
    };
    if tap == n.bridge {
        return Err(invalid(p, "network.tap", &tap, "equals the bridge name"));
    }
    let mac = match &n.mac {
        Some(m) => {
            derive::check_mac(m).map_err(|r| invalid(p, "network.mac", m, r))?;
            m.to_ascii_lowercase()
        }
        None => derive::mac(&config.name),
    };
    Ok(ResolvedNet::Bridge(BridgeNet {
        bridge: n.bridge.clone(),
        ip,
        prefix_length: n.prefix_length,
        netmask: mask,
        gateway,
        nameservers,
        ntp_servers,
        tap,
        mac,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{base, parse};
    use super::*;

    #[test]
    fn user_mode_rejects_bridge_only_settings() {
        let mut j = base();
        j["network"]["mode"] = "user".into();
        let e = parse(&j.to_string()).unwrap_err().to_string();
        assert!(e.contains("network.ip") && e.contains("10.99.0.2"), "{e}");
    }

    #[test]
    fn user_mode_with_ports() {
        let mut j = base();
        j["network"] = serde_json::json!({"mode": "user", "ports": [{"host": 8080, "guest": 80}]});
        let v = parse(&j.to_string()).unwrap();
        assert_eq!(
            v.net,
            ResolvedNet::User {
                ports: vec![ResolvedPort {
                    protocol: "tcp".into(),
                    host_address: Ipv4Addr::LOCALHOST,
                    host: 8080,
                    guest: 80
                }]
            }
        );
    }

    #[test]
    fn small_subnet_edges() {
        let mut j = base();
        j["network"] = serde_json::json!({"ip": "10.99.0.255", "prefix_length": 24});
        assert!(parse(&j.to_string())
            .unwrap_err()
            .to_string()
            .contains("broadcast"));
        j["network"] = serde_json::json!({"ip": "10.99.0.0"});
        assert!(parse(&j.to_string())
            .unwrap_err()
            .to_string()
            .contains("network address"));
        j["network"] = serde_json::json!({"ip": "10.98.0.5"});
        assert!(parse(&j.to_string())
            .unwrap_err()
            .to_string()
            .contains("outside"));
    }

    #[test]
    fn interface_names_that_would_reach_qemu_options_are_refused() {
        for tap in [
            "a,vhost=on",
            "Web",
            "-web",
            "tap web",
            "tap=x",
            "t\u{e9}p",
            "",
        ] {
            assert!(check_tap_name(tap).is_err(), "{tap:?} accepted");
        }
        for ok in ["mcp-web", "tap0", "a"] {
            check_tap_name(ok).unwrap();
        }
        for br in [
            "br@mcp",
            "br+mcp",
            "br,x",
            "br.0",
            "_br",
            "a-very-long-bridge",
        ] {
            assert!(check_bridge_name(br).is_err(), "{br:?} accepted");
        }
        for ok in ["mcp-br0", "Br_0", "virbr1"] {
            check_bridge_name(ok).unwrap();
        }
        let mut j = base();
        j["network"]["tap"] = "a,vhost=on".into();
        let e = parse(&j.to_string()).unwrap_err().to_string();
        assert!(e.contains("network.tap") && e.contains("a,vhost=on"), "{e}");
    }
}
