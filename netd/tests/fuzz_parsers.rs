//! Property tests of the parsers that take user input: `-p`/`--expose` specs, CIDRs, address
//! pools, names, and the API's HTTP/JSON decoding. Arbitrary input never panics; generated valid
//! input parses to exactly what was generated; invalid input is refused.
use std::net::Ipv4Addr;

use netd::{
    api,
    ipam::{self, Ipv4Net},
    names, ports,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(s in "\\PC{0,40}") {
        let _ = ports::parse_port_spec(&s);
        let _ = ports::parse_port_range(&s);
        let _ = ports::parse_expose(&s);
        let _ = ports::PortKey::parse(&s);
        let _ = ipam::parse_bip(&s);
        let _ = ipam::parse_address_pool(&s);
        let _ = s.parse::<Ipv4Net>();
        let _ = names::validate_name(&s);
        let _ = serde_json::from_str::<api::CreateRequest>(&s);
        let _ = serde_json::from_str::<api::NetworkCreateRequest>(&s);
    }

    #[test]
    fn spec_shaped_garbage_never_panics(
        parts in proptest::collection::vec(prop_oneof!["[0-9]{0,6}", "[0-9]{1,5}-[0-9]{1,5}", "[a-z]{0,4}", "\\[?[0-9a-f:.]{0,12}\\]?"], 1..5),
        proto in prop_oneof![Just(""), Just("/tcp"), Just("/udp"), Just("/sctp"), Just("/x"), Just("/")],
    ) {
        let s = parts.join(":") + proto;
        let _ = ports::parse_port_spec(&s);
        let _ = ports::parse_expose(&s);
    }

    #[test]
    fn valid_host_container_specs_round_trip(
        ip in proptest::option::of(any::<[u8; 4]>()),
        host in 1u16..=65535,
        cont in 1u16..=65535,
        udp in any::<bool>(),
    ) {
        let mut s = String::new();
        if let Some(ip) = ip {
            s += &format!("{}:", Ipv4Addr::from(ip));
        }
        s += &format!("{host}:{cont}{}", if udp { "/udp" } else { "" });
        let b = ports::parse_port_spec(&s).map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
        prop_assert_eq!(b.len(), 1);
        prop_assert_eq!((b[0].host_port_start, b[0].host_port_end, b[0].container_port), (host, host, cont));
        prop_assert_eq!(b[0].host_ip, ip.map(|a| std::net::IpAddr::from(Ipv4Addr::from(a))));
        prop_assert_eq!(format!("{:?}", b[0].proto).to_lowercase(), if udp { "udp" } else { "tcp" });
    }

    #[test]
    fn equal_length_ranges_map_one_to_one(h in 1u16..60000, c in 1u16..60000, len in 0u16..500) {
        let s = format!("{h}-{}:{c}-{}", h + len, c + len);
        let b = ports::parse_port_spec(&s).map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
        prop_assert_eq!(b.len(), usize::from(len) + 1);
        for (i, x) in b.iter().enumerate() {
            let i = i as u16;
            prop_assert_eq!((x.host_port_start, x.host_port_end, x.container_port), (h + i, h + i, c + i));
        }
    }

    #[test]
    fn out_of_range_and_reversed_ports_are_refused(p in 65536u32..10_000_000, a in 2u16..65535, c in 1u16..65535) {
        let host_too_big = ports::parse_port_spec(&format!("{p}:{c}")).is_err();
        let cont_too_big = ports::parse_port_spec(&format!("{c}:{p}")).is_err();
        let reversed = ports::parse_port_spec(&format!("{a}-{}:{c}", a - 1)).is_err();
        let reversed_expose = ports::parse_expose(&format!("{a}-{}", a - 1)).is_err();
        let range_too_big = ports::parse_port_range(&p.to_string()).is_err();
        prop_assert!(host_too_big && cont_too_big && reversed && reversed_expose && range_too_big);
    }

    #[test]
    fn cidrs_round_trip_and_bad_prefixes_are_refused(a in any::<[u8; 4]>(), len in 0u8..=32, bad in 33u8..=255) {
        let ip = Ipv4Addr::from(a);
        let n: Ipv4Net = format!("{ip}/{len}").parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!((n.addr(), n.prefix_len()), (ip, len));
        prop_assert!(n.contains(ip));
        prop_assert!(n.trunc().contains(ip));
        let bad_prefix = format!("{ip}/{bad}").parse::<Ipv4Net>().is_err();
        prop_assert!(bad_prefix);
        // --bip: the address is the gateway, the subnet its network.
        // --bip: a host address of its subnet is the gateway; the network or broadcast address
        // is refused.
        if len <= 30 {
            let t = n.trunc();
            match ipam::parse_bip(&format!("{ip}/{len}")) {
                Ok((net, gw)) => {
                    prop_assert_eq!(gw, ip);
                    prop_assert!(net.contains(ip));
                    prop_assert!(ip != t.network() && ip != t.broadcast());
                }
                Err(_) => prop_assert!(ip == t.network() || ip == t.broadcast(), "{}/{} refused", ip, len),
            }
        }
    }

    #[test]
    fn docker_names_are_exactly_the_documented_pattern(s in "[a-zA-Z0-9_.\\- /]{0,12}") {
        let b = s.strip_prefix('/').unwrap_or(&s).as_bytes();
        let want = b.len() >= 2
            && b[0].is_ascii_alphanumeric()
            && b[1..].iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
        prop_assert_eq!(names::validate_name(&s).is_ok(), want, "{:?}", s);
    }

    #[test]
    fn api_decoding_never_panics_and_bounds_bodies(bytes in proptest::collection::vec(any::<u8>(), 0..600), declared in 0usize..3_000_000) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // Raw bytes, then a well-formed head with an arbitrary Content-Length and body.
        for input in [bytes.clone(), {
            let mut v = format!("POST /containers/create HTTP/1.1\r\nContent-Length: {declared}\r\n\r\n").into_bytes();
            v.extend_from_slice(&bytes);
            v
        }] {
            let r = rt.block_on(async {
                let (mut a, mut b) = tokio::net::UnixStream::pair().unwrap();
                let writer = tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let _ = b.write_all(&input).await;
                    let _ = b.shutdown().await;
                });
                let r = tokio::time::timeout(std::time::Duration::from_secs(5), api::read_request(&mut a)).await;
                let _ = writer.await;
                r
            });
            let r = r.map_err(|_| TestCaseError::fail("read_request hung on a closed stream"))?;
            if let Ok(req) = r {
                prop_assert!(req.body.len() <= api::MAX_BODY);
                let _ = serde_json::from_slice::<api::CreateRequest>(&req.body);
            }
        }
        if declared > api::MAX_BODY {
            let head = format!("POST / HTTP/1.1\r\nContent-Length: {declared}\r\n\r\n");
            let r = rt.block_on(async {
                let (mut a, mut b) = tokio::net::UnixStream::pair().unwrap();
                use tokio::io::AsyncWriteExt;
                b.write_all(head.as_bytes()).await.unwrap();
                drop(b);
                api::read_request(&mut a).await
            });
            prop_assert!(matches!(r, Err(api::HttpError::TooLarge)), "an oversized body is refused up front");
        }
    }
}
