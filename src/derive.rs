//! Values derived from a VM's name: TAP name, MAC address, netmask.
//! `nixos/lib/derive.nix` computes the same values; tests check both agree.

use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

fn sha256_hex(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `mcp-<name>` when it fits in 15 characters, else
/// `mcp-<first 6 chars>-<first 4 hex of sha256(name)>`.
pub fn tap_name(name: &str) -> String {
    if name.len() <= 11 {
        format!("mcp-{name}")
    } else {
        let short: String = name.chars().take(6).collect();
        format!("mcp-{short}-{}", &sha256_hex(name)[..4])
    }
}

/// `02:` + the first five bytes of sha256("mcp-unikernel:" + name): unicast,
/// locally administered.
pub fn mac(name: &str) -> String {
    let hex = sha256_hex(&format!("mcp-unikernel:{name}"));
    let mut out = String::from("02");
    for i in 0..5 {
        out.push(':');
        out.push_str(&hex[2 * i..2 * i + 2]);
    }
    out
}

pub fn netmask(prefix_length: u8) -> Ipv4Addr {
    let bits = if prefix_length == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_length.min(32)))
    };
    Ipv4Addr::from(bits)
}

/// A MAC given in the config must be six lower- or upper-case hex pairs,
/// unicast and locally administered.
pub fn check_mac(mac: &str) -> Result<(), &'static str> {
    let parts: Vec<&str> = mac.split(':').collect();
    if parts.len() != 6
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err("must be six colon-separated hex pairs");
    }
    let first = u8::from_str_radix(parts[0], 16).map_err(|_| "bad first octet")?;
    if first & 1 != 0 {
        return Err("must be a unicast address (first octet even)");
    }
    if first & 2 == 0 {
        return Err("must be locally administered (first octet has bit 0x02 set)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_in_ifnamsiz() {
        assert_eq!(tap_name("mcat"), "mcp-mcat");
        assert_eq!(tap_name("elevenchars"), "mcp-elevenchars");
        let long = tap_name("a-very-long-unikernel-name");
        assert_eq!(long.len(), 15);
        assert!(long.starts_with("mcp-a-very-"));
        assert_ne!(tap_name("a-very-long-one"), tap_name("a-very-long-two"));
    }

    #[test]
    fn mac_is_stable_unicast_local() {
        let m = mac("mcat");
        assert_eq!(m, mac("mcat"));
        assert_ne!(m, mac("mcat2"));
        check_mac(&m).unwrap();
        assert_eq!(m.len(), 17);
    }

    #[test]
    fn known_vectors() {
        // Shared with tests/nix (derive.nix must produce the same strings).
        assert_eq!(sha256_hex("abc")[..8], *"ba7816bf");
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(30), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(netmask(1), Ipv4Addr::new(128, 0, 0, 0));
    }

    #[test]
    fn bad_macs() {
        assert!(check_mac("01:00:00:00:00:01").is_err()); // multicast
        assert!(check_mac("00:11:22:33:44:55").is_err()); // universal
        assert!(check_mac("02:11:22:33:44").is_err());
        assert!(check_mac("02:11:22:33:44:zz").is_err());
        assert!(check_mac("02:11:22:33:44:55").is_ok());
    }
}
