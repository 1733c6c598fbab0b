//! Fuzzing the config parser with proptest: arbitrary text, arbitrary JSON,
//! and structurally valid configs with hostile field values. Properties: no
//! panic; every error names a field; every accepted config satisfies the
//! invariants the rest of the helper relies on. `scripts/fuzz-config.sh
//! [SECONDS]` runs it for a fixed time (default 600 s); `cargo test` runs a
//! quick pass.

use std::net::Ipv4Addr;
use std::path::Path;

use mcp_unikernel::config::{parse_and_validate, ResolvedNet};
use proptest::prelude::*;
use serde_json::{json, Value};

fn cases() -> u32 {
    std::env::var("MCP_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

fn check(text: &str) {
    match parse_and_validate(Path::new("fuzz.json"), text) {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("field `"), "error names no field: {msg}");
            assert!(!msg.contains('\n'), "multi-line error: {msg}");
        }
        Ok(v) => {
            assert!(v.config.name.len() <= 64);
            for vol in &v.config.volumes {
                assert!(vol.target.is_absolute());
                assert!(!vol
                    .target
                    .components()
                    .any(|c| c == std::path::Component::ParentDir));
            }
            if let ResolvedNet::Bridge(b) = &v.net {
                let mask = u32::from(b.netmask);
                let net = |a: Ipv4Addr| u32::from(a) & mask;
                assert_eq!(net(b.ip), net(b.gateway));
                assert_ne!(b.ip, b.gateway);
                let host = u32::from(b.ip) & !mask;
                assert!(host != 0 && host != !mask);
                assert!(!b.tap.is_empty() && b.tap.len() <= 15);
                let first = u8::from_str_radix(&b.mac[..2], 16).unwrap();
                assert_eq!(first & 3, 2, "MAC {} not unicast+local", b.mac);
            }
        }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_string()),
                    Just("network".to_string()),
                    Just("ip".to_string()),
                    Just("volumes".to_string()),
                    Just("program".to_string()),
                    ".{0,10}".prop_map(String::from)
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[a-z0-9-]{0,80}",
        "(/[a-z.]{0,6}){0,5}",
        "[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}",
        "[0-9a-fA-F:]{0,20}",
        Just("\u{0}".to_string()),
        Just("/srv/../etc".to_string()),
    ]
}

fn structured() -> impl Strategy<Value = String> {
    (
        hostile_string(),
        hostile_string(),
        any::<u8>(),
        hostile_string(),
        prop::collection::vec((hostile_string(), hostile_string()), 0..3),
        any::<u32>(),
        any::<u32>(),
        prop::option::of(hostile_string()),
        prop::option::of(hostile_string()),
        any::<bool>(),
    )
        .prop_map(|(name, ip, prefix, gw, vols, mem, vcpus, tap, mac, user)| {
            let vols: Vec<Value> = vols
                .into_iter()
                .map(|(s, t)| json!({"source": if s.len() % 2 == 0 { "/tmp".into() } else { s }, "target": t}))
                .collect();
            let mut c = json!({
                "schema_version": 1, "name": name, "program": "/bin/true",
                "memory_mib": mem % 4096, "vcpus": vcpus % 80,
                "network": {"ip": ip, "prefix_length": prefix, "gateway": gw, "tap": tap, "mac": mac},
                "volumes": vols
            });
            if user {
                c["network"]["mode"] = "user".into();
            }
            c.to_string()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in ".{0,200}") {
        check(&s);
    }

    #[test]
    fn arbitrary_json_never_panics(v in json_value()) {
        check(&v.to_string());
    }

    #[test]
    fn structured_configs_hold_invariants(text in structured()) {
        check(&text);
    }

    #[test]
    fn near_valid_bridge_configs(a in 0u8..=255, b in 0u8..=255, prefix in 0u8..=32, gw_last in 0u8..=255) {
        let text = json!({
            "schema_version": 1, "name": "web", "program": "/bin/true",
            "network": {"ip": format!("10.99.{a}.{b}"), "prefix_length": prefix, "gateway": format!("10.99.0.{gw_last}")}
        }).to_string();
        check(&text);
    }
}
